"""Link ports against hostile peers: fake receivers, floods of unauthenticated connections."""

import asyncio
import os
import socket
import struct
import subprocess
import sys
import time

import structlog

from protocol.framing import FrameDecoder, encode_frame
from protocol.link import LinkSettings
from protocol.receiver import Receiver
from protocol.sender import Sender
from protocol.session import PendingLimit
from tests.helpers import ListSource, MemoryStore, make_events, wait_until

SECRET = b"hostile-peers-test-secret"


# --- a fake receiver learns nothing ----------------------------------------------------------------


class FakeReceiver:
    """Does not know the secret: answers hello with a made-up proof, then welcomes whatever comes."""

    def __init__(self) -> None:
        self.received: list[dict] = []

    async def serve(self, reader, writer) -> None:
        decoder = FrameDecoder()
        try:
            frames = decoder.feed(await reader.read(4096))
            self.received += frames
            writer.write(encode_frame({"type": "challenge", "nonce": b"\x01" * 32, "proof": b"\x02" * 32}))
            writer.write(encode_frame({"type": "welcome", "position": 0, "node": "fake"}))
            while data := await reader.read(65536):
                self.received += decoder.feed(data)
        except Exception:
            pass
        finally:
            writer.close()


async def test_a_receiver_without_the_secret_gets_no_events_and_the_sender_logs_an_error():
    fake = FakeReceiver()
    server = await asyncio.start_server(fake.serve, "127.0.0.1", 0)
    source = ListSource(make_events(5))
    sender = Sender("127.0.0.1", server.sockets[0].getsockname()[1], "payments", source.read,
                    LinkSettings(secret=SECRET, node="billing"), head=source.head)
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(sender.run())
        await wait_until(lambda: sender.last_error == "AUTH_FAILED", 5, "the sender refusing the fake receiver")
        await wait_until(lambda: any(f["type"] == "error" for f in fake.received), 5, "the refusal reaching it")
    kinds = [f["type"] for f in fake.received]
    assert "event" not in kinds and "auth" not in kinds, kinds
    assert kinds == ["hello", "error"] and fake.received[-1]["code"] == "AUTH_FAILED"
    assert sender.connects == 0
    line = next(e for e in logs if e.get("code") == "AUTH_FAILED")
    assert line["log_level"] == "error" and line["stream"] == "payments"
    await sender.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    server.close()


# --- unauthenticated connections are capped --------------------------------------------------------


def test_pending_limit_counts_in_all_and_per_address():
    limit = PendingLimit(total=3, per_address=2)
    assert limit.admit("a") and limit.admit("a")
    assert not limit.admit("a")  # per address
    assert limit.admit("b")
    assert not limit.admit("c")  # in all
    limit.release("a")
    assert limit.admit("c")
    assert limit.refused == 2 and limit.count == 3


async def open_idle(port: int, source: str = "127.0.0.1"):
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes | None:
    """What the receiver sent before closing, or None if it is still open after ``seconds``."""
    try:
        return await asyncio.wait_for(reader.read(), seconds)
    except asyncio.TimeoutError:
        return None
    except ConnectionResetError:
        return b""


async def test_connections_beyond_the_caps_are_closed_at_once_and_the_deadline_closes_the_rest():
    receiver = Receiver({"s": MemoryStore()}, LinkSettings(
        secret=SECRET, node="r", max_pending=3, max_pending_per_address=2, handshake_timeout=1.0))
    await receiver.start()
    a1, a2, a3 = [await open_idle(receiver.port, "127.0.0.1") for _ in range(3)]
    assert await closed_within(a3[0], 0.5) == b"", "a third idle connection from one address must be closed at once"
    b1 = await open_idle(receiver.port, "127.0.0.2")
    b2 = await open_idle(receiver.port, "127.0.0.2")
    assert await closed_within(b2[0], 0.5) == b"", "a fourth pending connection in all must be closed at once"
    started = time.monotonic()
    for reader, _ in (a1, a2, b1):
        last = FrameDecoder().feed(await closed_within(reader, 3.0) or b"")
        assert last and last[-1]["code"] == "HEARTBEAT_TIMEOUT"  # the handshake deadline
    assert time.monotonic() - started < 2.0
    # Once the flood is gone, an honest sender gets in.
    source = ListSource(make_events(3))
    sender = Sender("127.0.0.1", receiver.port, "s", source.read, LinkSettings(secret=SECRET, node="s"))
    task = asyncio.create_task(sender.run())
    await wait_until(lambda: sender.acked == 3, 5, "the honest sender's events")
    assert receiver.pending.count == 0
    for _, writer in (a1, a2, a3, b1, b2):
        writer.close()
    await sender.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await receiver.stop()


async def test_an_authenticated_connection_no_longer_counts_as_pending():
    receiver = Receiver({"s": MemoryStore()}, LinkSettings(secret=SECRET, node="r", max_pending=1,
                                                           max_pending_per_address=1))
    await receiver.start()
    source = ListSource(make_events(2))
    sender = Sender("127.0.0.1", receiver.port, "s", source.read, LinkSettings(secret=SECRET, node="s"))
    task = asyncio.create_task(sender.run())
    await wait_until(lambda: sender.acked == 2, 5, "the sender streaming")
    reader, writer = await open_idle(receiver.port)  # the one pending slot is free again
    assert await closed_within(reader, 0.3) is None
    writer.close()
    await sender.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await receiver.stop()


def read_port(stdout) -> str:
    while not (line := stdout.readline().strip()).isdigit():
        if not line:
            raise AssertionError("the receiver process exited before printing its port")
    return line


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def flood(port: int, connections: int, sources: int, body: int, seconds: float) -> int:
    """Open ``connections`` idle peers from ``sources`` loopback addresses, each announcing a maximal frame
    and pushing ``body`` bytes of it; return how many the receiver closed."""
    socks = []
    for i in range(connections):
        s = socket.socket()
        s.bind((f"127.0.0.{1 + i % sources}", 0))
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        socks.append(s)
    payload = struct.pack(">I", (1 << 20) - 1) + b"\0" * body
    sent = [0] * connections
    closed = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(closed) + sum(n == len(payload) for n in sent) < connections:
        for i, s in enumerate(socks):
            if i in closed or sent[i] == len(payload):
                continue
            try:
                sent[i] += s.send(payload[sent[i]:sent[i] + 65536])
            except BlockingIOError:
                pass
            except OSError:
                closed.add(i)
    # Then wait (with a deadline) for the receiver to close each one; an error frame may come first.
    while time.monotonic() < deadline and len(closed) < connections:
        for i, s in enumerate(socks):
            if i in closed:
                continue
            try:
                while s.recv(65536):  # read past an error frame until the close
                    pass
                closed.add(i)
            except BlockingIOError:
                pass
            except OSError:
                closed.add(i)
        time.sleep(0.01)  # a poll interval, not a synchronisation: the loop ends on its condition
    for s in socks:
        s.close()
    return len(closed)


async def test_300_stalled_unauthenticated_peers_leave_the_receiver_small(tmp_path):
    # Before: every peer could make the receiver buffer a whole 1 MiB frame (300 peers took ~330 MB).
    env = {**os.environ, "TICKETFLOW_LINK_SECRET": SECRET.decode(), "TICKETFLOW_LINK_HANDSHAKE_TIMEOUT_SECONDS": "30"}
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.link_receiver"], env=env,
                            stdout=subprocess.PIPE, stderr=open(tmp_path / "receiver.log", "wb"))
    try:
        port = int(await asyncio.wait_for(asyncio.to_thread(read_port, proc.stdout), 20))
        before = rss_kib(proc.pid)
        closed = await asyncio.to_thread(flood, port, 300, 40, (1 << 20) - 64, 20.0)
        grown_mib = (rss_kib(proc.pid) - before) / 1024
        print(f"receiver RSS grew by {grown_mib:.1f} MiB for 300 stalled peers; {closed} closed")
        assert grown_mib < 40, f"the receiver grew by {grown_mib:.0f} MiB"
        assert closed == 300, "every flooding peer is closed: over the cap at once, the rest at their first big frame"
    finally:
        proc.kill()
        proc.wait()
