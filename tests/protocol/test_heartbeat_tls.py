"""Heartbeats detect silent peers; the same link runs over TLS."""

import asyncio
import ssl
import time

import pytest

from protocol.framing import FrameDecoder
from protocol.link import LinkSettings
from protocol.receiver import Receiver
from protocol.sender import Sender
from protocol.session import ReceiverSession, SenderSession, State
from tests.support.tls import throwaway_cert as make_cert
from tests.helpers import ListSource, MemoryStore, make_events, wait_until

SECRET = b"heartbeat-test-secret-0123"
TIMEOUT = 0.6


async def test_a_receiver_drops_a_sender_that_goes_silent_within_the_timeout():
    receiver = Receiver({"s": MemoryStore()}, LinkSettings(secret=SECRET, node="r", heartbeat_timeout=TIMEOUT))
    await receiver.start()
    session = SenderSession("s", "silent", SECRET, now=time.monotonic())
    reader, writer = await asyncio.open_connection("127.0.0.1", receiver.port)
    writer.write(session.data_to_send())
    while session.state is not State.STREAMING:
        session.receive_data(await reader.read(4096), time.monotonic())
        writer.write(session.data_to_send())
    silent_since = time.monotonic()
    data = await asyncio.wait_for(reader.read(), TIMEOUT * 5)  # then say nothing at all
    detected_after = time.monotonic() - silent_since
    assert FrameDecoder().feed(data)[-1]["code"] == "HEARTBEAT_TIMEOUT"
    assert detected_after < TIMEOUT + 0.5, f"detected only after {detected_after:.2f}s"
    writer.close()
    await receiver.stop()


async def test_a_sender_drops_a_receiver_that_stops_answering_and_reconnects():
    connections = 0

    async def mute_receiver(reader, writer):
        # Completes the handshake, then never answers a ping.
        nonlocal connections
        connections += 1
        session = ReceiverSession(["s"], SECRET, "mute", now=time.monotonic())
        while session.state is not State.AUTHENTICATED:
            session.receive_data(await reader.read(4096), time.monotonic())
            writer.write(session.data_to_send())
        session.welcome(0)
        writer.write(session.data_to_send())
        try:
            while await reader.read(4096):
                pass
        finally:
            writer.close()

    server = await asyncio.start_server(mute_receiver, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sender = Sender(
        "127.0.0.1", port, "s", ListSource([]).read,
        LinkSettings(secret=SECRET, node="s", heartbeat_interval=0.1, heartbeat_timeout=TIMEOUT),
    )
    sender.backoff.base = 0.01
    task = asyncio.create_task(sender.run())
    started = time.monotonic()
    await wait_until(lambda: sender.last_error == "HEARTBEAT_TIMEOUT", TIMEOUT * 5, "sender detecting the mute peer")
    assert time.monotonic() - started < TIMEOUT + 0.5
    await wait_until(lambda: connections >= 2, 5, "sender reconnecting after the timeout")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    server.close()


async def test_an_idle_link_stays_up_on_heartbeats():
    store = MemoryStore()
    settings = LinkSettings(secret=SECRET, node="n", heartbeat_interval=0.05, heartbeat_timeout=0.3)
    receiver = Receiver({"s": store}, settings)
    await receiver.start()
    sender = Sender("127.0.0.1", receiver.port, "s", ListSource(make_events(1)).read, settings, poll_interval=5)
    task = asyncio.create_task(sender.run())
    await wait_until(lambda: sender.acked == 1, 5, "first event")
    await asyncio.sleep(1.0)  # deliberately idle for > 3 timeouts: the thing under test is idleness
    assert sender.connects == 1 and sender.last_error is None
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await receiver.stop()


@pytest.fixture(scope="module")
def throwaway_cert(tmp_path_factory):
    return make_cert(tmp_path_factory.mktemp("tls"))


async def test_a_link_over_tls_with_a_throwaway_certificate(throwaway_cert):
    cert, key = throwaway_cert
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))  # verifies the certificate and host
    store = MemoryStore()
    receiver = Receiver({"s": store}, LinkSettings(secret=SECRET, node="r", ssl=server_ctx))
    await receiver.start()
    sender = Sender("127.0.0.1", receiver.port, "s", ListSource(make_events(2000)).read,
                    LinkSettings(secret=SECRET, node="s", ssl=client_ctx))
    task = asyncio.create_task(sender.run())
    await wait_until(lambda: sender.acked == 2000, 10, "2000 events over TLS")
    assert store.applied == list(range(1, 2001))
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await receiver.stop()


async def test_a_tls_sender_refuses_an_untrusted_certificate(throwaway_cert, tmp_path):
    cert, key = throwaway_cert
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    receiver = Receiver({"s": MemoryStore()}, LinkSettings(secret=SECRET, node="r", ssl=server_ctx))
    await receiver.start()
    sender = Sender("127.0.0.1", receiver.port, "s", ListSource(make_events(1)).read,
                    LinkSettings(secret=SECRET, node="s", ssl=ssl.create_default_context()))
    task = asyncio.create_task(sender.run())
    await wait_until(lambda: sender.last_error is not None, 5, "the untrusted certificate being refused")
    assert sender.connects == 0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await receiver.stop()
