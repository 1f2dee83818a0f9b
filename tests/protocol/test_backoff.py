"""Reconnection pacing: only real progress resets the backoff; permanent refusals wait the cap.

Clocks and backoffs are injected: no test here waits for a real backoff delay.
"""

import asyncio
import random
import time

import structlog

from deploy.runtime.backoff import Backoff
from deploy.runtime.relay import OutboxRelay
from protocol.link import LinkSettings
from protocol.receiver import Receiver
from protocol.sender import Sender
from protocol.session import ReceiverSession, State
from tests.helpers import ListSource, MemoryStore, make_events, wait_until

SECRET = b"backoff-test-secret-0123"


class FakeClock:
    """Time stands still, or (with ``step``) moves ``step`` seconds on each reading."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.step = 0.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def tiny_backoff(cap: float = 0.02) -> Backoff:
    return Backoff(base=0.0005, cap=cap, rng=random.Random(7))


class FailAfterWelcome:
    """A receiver that completes every handshake and then drops the connection, as a broken one would."""

    def __init__(self, position: int = 0, ack_first: bool = False) -> None:
        self.connections = 0
        self.position = position
        self.ack_first = ack_first
        self.on_connect = lambda: None

    async def serve(self, reader, writer) -> None:
        self.connections += 1
        self.on_connect()
        session = ReceiverSession(["s"], SECRET, "flaky", now=time.monotonic())
        while session.state is not State.AUTHENTICATED:
            data = await reader.read(4096)
            if not data or session.closed:  # the sender gave up on this connection: so does this fake
                writer.transport.abort()
                return
            session.receive_data(data, time.monotonic())
            writer.write(session.data_to_send())
        session.welcome(self.position)
        writer.write(session.data_to_send())
        if self.ack_first:
            while session.last_received == self.position:
                data = await reader.read(4096)
                session.receive_data(data, time.monotonic())
                if not data or session.closed:  # the sender stopped
                    writer.transport.abort()
                    return
            self.position = session.last_received
            session.ack(self.position)
            writer.write(session.data_to_send())
            await writer.drain()
        writer.transport.abort()


async def run_sender(receiver: FailAfterWelcome, source: ListSource, **kwargs):
    server = await asyncio.start_server(receiver.serve, "127.0.0.1", 0)
    sender = Sender("127.0.0.1", server.sockets[0].getsockname()[1], "s", source.read,
                    LinkSettings(secret=SECRET, node="sender"), head=source.head, **kwargs)
    return server, sender, asyncio.create_task(sender.run())


async def stop(server, sender, task) -> None:
    await sender.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    server.close()


async def test_handshakes_that_fail_right_after_welcome_keep_growing_the_backoff():
    flaky = FailAfterWelcome()
    backoff = tiny_backoff(cap=10.0)
    server, sender, task = await run_sender(flaky, ListSource([]), backoff=backoff, clock=FakeClock())
    await wait_until(lambda: flaky.connections >= 8, 10, "eight reconnections")
    # Every handshake succeeded, none made progress: the backoff never started over.
    assert backoff.attempt >= 7, f"backoff reset across welcomes (attempt {backoff.attempt})"
    await stop(server, sender, task)


async def test_a_connection_that_stayed_up_resets_the_backoff():
    clock = FakeClock()
    flaky = FailAfterWelcome()
    backoff = tiny_backoff()
    server, sender, task = await run_sender(flaky, ListSource([]), backoff=backoff, clock=clock, stable_after=10)
    await wait_until(lambda: flaky.connections >= 5, 10, "five short connections")
    assert backoff.attempt >= 4
    # From now on, each connection "stays up" 11 s on the injected clock before it breaks.
    clock.step = 11
    seen = flaky.connections
    await wait_until(lambda: flaky.connections >= seen + 3, 10, "three long connections")
    assert backoff.attempt <= 1, f"a connection up for 11 s did not reset the backoff (attempt {backoff.attempt})"
    await stop(server, sender, task)


async def test_an_ack_of_new_events_resets_the_backoff():
    flaky = FailAfterWelcome(ack_first=True)
    backoff = tiny_backoff()
    backoff.attempt = 20
    server, sender, task = await run_sender(flaky, ListSource(make_events(50)), backoff=backoff, clock=FakeClock())
    await wait_until(lambda: sender.acked >= 1, 10, "one ack")
    await wait_until(lambda: flaky.connections >= 2, 10, "the reconnection after the ack")
    assert backoff.attempt <= 2
    await stop(server, sender, task)


async def test_a_permanent_refusal_backs_off_to_the_cap_and_logs_an_error():
    receiver = Receiver({"s": MemoryStore()}, LinkSettings(secret=SECRET, node="r"))
    await receiver.start()
    backoff = Backoff(base=0.05, cap=30.0)
    sender = Sender("127.0.0.1", receiver.port, "s", ListSource(make_events(1)).read,
                    LinkSettings(secret=b"a-different-secret-0123", node="s"), backoff=backoff)
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(sender.run())
        await wait_until(lambda: sender.last_delay > 0, 5, "the first retry being scheduled")
    assert sender.last_error == "AUTH_FAILED"
    assert sender.last_delay == 30.0, "a permanent refusal must wait the cap, not retry at once"
    refusals = [entry for entry in logs if entry.get("code") == "AUTH_FAILED"]
    assert refusals and refusals[0]["log_level"] == "error", refusals
    await sender.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await receiver.stop()


async def test_a_transient_failure_keeps_the_jittered_exponential_backoff():
    flaky = FailAfterWelcome()
    backoff = tiny_backoff(cap=10.0)
    server, sender, task = await run_sender(flaky, ListSource([]), backoff=backoff, clock=FakeClock())
    await wait_until(lambda: flaky.connections >= 3, 10, "three reconnections")
    assert 0 <= sender.last_delay < 10.0
    await stop(server, sender, task)


class CrashingSender:
    """Stands for a sender whose run() ends right after each handshake."""

    def __init__(self, log: list) -> None:
        self.log = log
        self.problem = None

    async def run(self) -> None:
        self.log.append("lead")
        raise RuntimeError("failed right after welcome")

    async def stop(self) -> None:
        pass

    def notify(self) -> None:
        pass


class FreeLock:
    async def acquire(self, wake) -> bool:
        return True

    async def check(self) -> None:
        await asyncio.sleep(0)

    async def release(self) -> None:
        pass


async def test_a_relay_does_not_reset_its_backoff_each_time_it_takes_the_lock():
    leads: list = []
    backoff = Backoff(base=0.0005, cap=10.0, rng=random.Random(3))
    relay = OutboxRelay("s", FreeLock, lambda: CrashingSender(leads), check_interval=0.001, backoff=backoff,
                        clock=FakeClock())
    task = asyncio.create_task(relay.run())
    await wait_until(lambda: len(leads) >= 8, 10, "eight leads")
    assert backoff.attempt >= 7, f"the relay restarted its backoff on every lock (attempt {backoff.attempt})"
    await relay.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
