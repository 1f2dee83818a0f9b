"""The asyncio adapters over real sockets: handshake refusals, resume under chaos, bad input."""

import asyncio
import struct
import time

import msgpack
import pytest
import structlog

from protocol.framing import FrameDecoder, encode_frame
from protocol.link import LinkSettings
from protocol.receiver import Receiver
from protocol.sender import Sender
from tests.helpers import ChaosProxy, ListSource, MemoryStore, make_events, wait_until

SECRET = b"link-test-secret-0123456789"


def settings(**overrides) -> LinkSettings:
    base = dict(secret=SECRET, node="test", heartbeat_interval=0.2, heartbeat_timeout=2.0)
    base.update(overrides)
    return LinkSettings(**base)


async def start_receiver(stores: dict, **overrides) -> Receiver:
    receiver = Receiver(stores, settings(node="receiver", **overrides))
    await receiver.start()
    return receiver


def start_sender(port: int, stream: str, source: ListSource, **overrides) -> tuple[Sender, asyncio.Task]:
    sender = Sender("127.0.0.1", port, stream, source.read, settings(node="sender", **overrides), head=source.head)
    return sender, asyncio.create_task(sender.run())


async def stop_all(*things) -> None:
    for thing in things:
        if isinstance(thing, asyncio.Task):
            thing.cancel()
            await asyncio.gather(thing, return_exceptions=True)
        else:
            await thing.stop()


async def test_events_arrive_in_order_and_are_acknowledged():
    store = MemoryStore()
    receiver = await start_receiver({"orders": store})
    source = ListSource(make_events(1000))
    sender, task = start_sender(receiver.port, "orders", source, window=32)
    await wait_until(lambda: sender.acked == 1000, 10, "all 1000 events acknowledged")
    assert store.applied == list(range(1, 1001))
    await stop_all(sender, task, receiver)


async def test_new_events_after_idle_leave_on_notify():
    store = MemoryStore()
    receiver = await start_receiver({"orders": store})
    source = ListSource(make_events(3))
    sender, task = start_sender(receiver.port, "orders", source)
    sender.poll_interval = 30  # only notify can wake it in time
    await wait_until(lambda: sender.acked == 3, 5, "first 3 acknowledged")
    source.events += make_events(2, start=4)
    sender.notify()
    await wait_until(lambda: sender.acked == 5, 5, "events 4-5 acknowledged after notify")
    await stop_all(sender, task, receiver)


@pytest.mark.parametrize(
    "sender_kwargs, stream, code",
    [
        ({"secret": b"the-wrong-secret-entirely"}, "orders", "AUTH_FAILED"),
        ({}, "nonexistent", "UNKNOWN_STREAM"),
    ],
)
async def test_refused_handshakes_report_their_code(sender_kwargs, stream, code):
    receiver = await start_receiver({"orders": MemoryStore()})
    source = ListSource(make_events(1))
    sender, task = start_sender(receiver.port, stream, source, **sender_kwargs)
    await wait_until(lambda: sender.last_error == code, 5, f"sender seeing {code}")
    assert sender.connects == 0
    await stop_all(sender, task, receiver)


async def raw_exchange(port: int, payload: bytes, close_after: bool = False) -> list[dict]:
    """Send raw bytes to a receiver; return every frame it answers before closing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    if close_after:
        writer.close()
        return []
    data = await asyncio.wait_for(reader.read(), 5)  # until the receiver closes
    writer.close()
    return FrameDecoder().feed(data)


def hello(version=1, stream="orders") -> bytes:
    return encode_frame({"type": "hello", "version": version, "stream": stream, "node": "raw"})


async def test_wrong_version_is_refused_with_its_code():
    receiver = await start_receiver({"orders": MemoryStore()})
    frames = await raw_exchange(receiver.port, hello(version=99))
    assert frames == [{"type": "error", "code": "UNSUPPORTED_VERSION", "message": frames[0]["message"]}]
    await receiver.stop()


BAD_INPUTS = {
    "garbage bytes (read as a huge length)": (b"\x13\x37GARBAGE!" * 4, "FRAME_TOO_LARGE"),
    "garbage bytes after a plausible length": (b"\x00\x00\x00\x06" + b"\xc1GARB!", "MALFORMED_FRAME"),
    "length prefix 2^32-1": (b"\xff\xff\xff\xff", "FRAME_TOO_LARGE"),
    "msgpack that is not a map": (struct.pack(">I", 4) + msgpack.packb([1, 2, 3]), "MALFORMED_FRAME"),
    "a frame before the handshake": (
        encode_frame({"type": "event", "seq": 1, "event": {"id": "x", "type": "t", "source": "s", "time": "t"}}),
        "UNEXPECTED_FRAME",
    ),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
async def test_bad_input_gets_an_error_frame_is_logged_once_and_other_links_carry_on(name):
    payload, code = BAD_INPUTS[name]
    store = MemoryStore()
    receiver = await start_receiver({"orders": store})
    source = ListSource(make_events(100))
    sender, task = start_sender(receiver.port, "orders", source)
    await wait_until(lambda: sender.acked == 100, 5, "the good link delivering its first 100")
    with structlog.testing.capture_logs() as logs:
        frames = await raw_exchange(receiver.port, payload)
    assert [f["code"] for f in frames if f["type"] == "error"] == [code]
    rejected = [line for line in logs if line["event"] == "link_rejected"]
    assert len(rejected) == 1 and rejected[0]["code"] == code
    source.events += make_events(100, start=101)
    sender.notify()
    await wait_until(lambda: sender.acked == 200, 5, "the good link delivering after the bad input")
    assert sender.connects == 1, "the good link was not disturbed"
    await stop_all(sender, task, receiver)


async def test_a_truncated_frame_then_close_leaves_the_receiver_serving():
    store = MemoryStore()
    receiver = await start_receiver({"orders": store})
    await raw_exchange(receiver.port, hello()[:7], close_after=True)
    source = ListSource(make_events(10))
    sender, task = start_sender(receiver.port, "orders", source)
    await wait_until(lambda: sender.acked == 10, 5, "delivery after a truncated frame")
    await stop_all(sender, task, receiver)


async def test_a_wrong_sequence_number_is_refused_after_a_real_handshake():
    from protocol.session import SenderSession

    store = MemoryStore()
    receiver = await start_receiver({"orders": store})
    session = SenderSession("orders", "raw", SECRET, now=time.monotonic())
    reader, writer = await asyncio.open_connection("127.0.0.1", receiver.port)
    writer.write(session.data_to_send())
    while session.state.value != "streaming":
        session.receive_data(await reader.read(4096), time.monotonic())
        writer.write(session.data_to_send())
    writer.write(encode_frame({"type": "event", "seq": 5, "event": make_events(1, 5)[0].envelope()}))
    frames = FrameDecoder().feed(await asyncio.wait_for(reader.read(), 5))
    assert frames[-1]["code"] == "SEQUENCE_GAP"
    assert store.applied == []
    writer.close()
    await receiver.stop()


async def test_resume_after_connections_cut_mid_window_delivers_every_event_exactly_once():
    """10,000 events; the connection is cut at random byte offsets (mid-frame, mid-window,
    mid-handshake) and some commits fail; the applied log must be 1..10000 exactly once."""
    total = 10_000
    store = MemoryStore(fail_rate=0.02, seed=7)
    receiver = await start_receiver({"orders": store})
    proxy = ChaosProxy(receiver.port, max_bytes=60_000, seed=11)
    await proxy.start()
    source = ListSource(make_events(total))
    sender, task = start_sender(proxy.port, "orders", source, window=64)
    sender.backoff.base, sender.backoff.cap = 0.001, 0.02
    await wait_until(lambda: store.committed_position == total, 60, "all 10,000 events committed")
    assert proxy.cuts >= 10, f"only {proxy.cuts} cuts: the test did not exercise resume"
    assert store.failures >= 1
    assert store.applied == list(range(1, total + 1))
    assert store.duplicates == [], "resume re-sent an event at or below the durable position"
    await stop_all(sender, task, proxy, receiver)


async def test_a_receiver_restarted_on_the_same_port_resumes_from_its_store():
    store = MemoryStore()
    receiver = await start_receiver({"orders": store})
    port = receiver.port
    source = ListSource(make_events(5000))
    sender, task = start_sender(port, "orders", source, window=16)
    sender.backoff.base, sender.backoff.cap = 0.001, 0.05
    for _ in range(3):
        await wait_until(lambda: store.committed_position > 0, 5, "some progress")
        await receiver.stop()
        receiver = Receiver({"orders": store}, settings(node="receiver"), port=port)
        await receiver.start()
    await wait_until(lambda: store.committed_position == 5000, 30, "all 5000 committed across restarts")
    assert store.applied == list(range(1, 5001))
    await stop_all(sender, task, receiver)


async def test_a_receiver_ahead_of_the_sender_is_reported_not_followed():
    store = MemoryStore()
    store.committed_position = 50
    receiver = await start_receiver({"orders": store})
    sender, task = start_sender(receiver.port, "orders", ListSource(make_events(10)))
    await wait_until(lambda: sender.last_error == "POSITION_AHEAD", 5, "sender reporting POSITION_AHEAD")
    await stop_all(sender, task, receiver)


async def test_a_newer_connection_for_a_stream_replaces_the_older():
    store = MemoryStore()
    receiver = await start_receiver({"orders": store})
    source = ListSource(make_events(200))
    first, t1 = start_sender(receiver.port, "orders", source)
    await wait_until(lambda: first.acked == 200, 5, "first sender done")
    source.events += make_events(100, start=201)
    second, t2 = start_sender(receiver.port, "orders", source)
    await wait_until(lambda: store.committed_position == 300, 5, "the rest delivered")
    assert store.applied == list(range(1, 301))
    await stop_all(first, t1, second, t2, receiver)


async def test_a_sender_with_alternates_moves_to_a_live_replica_and_resumes_from_the_shared_store():
    # Two receiver replicas over one store, as two billing replicas share one database.
    store = MemoryStore()
    first, second = await start_receiver({"orders": store}), await start_receiver({"orders": store})
    source = ListSource(make_events(1000))
    dead_port = first.port
    sender = Sender("127.0.0.1", first.port, "orders", source.read, settings(node="sender", window=16),
                    head=source.head, alternates=[("127.0.0.1", second.port)])
    task = asyncio.create_task(sender.run())
    await wait_until(lambda: store.committed_position >= 200, 10, "the first replica applying some events")
    await first.stop()  # the replica the sender is connected to goes away (maybe mid-stream: it is fast)
    source.events += make_events(1000, start=1001)  # surely some left for the second replica
    sender.notify()
    await wait_until(lambda: sender.acked == 2000, 15, "the rest delivered through the second replica")
    assert store.applied == list(range(1, 2001)) and store.duplicates == []
    assert second.accepted >= 1 and sender.port == second.port != dead_port
    await stop_all(sender, task, second)


def test_link_targets_parse_a_host_list_with_default_ports():
    from deploy.runtime.config import host_list, link_targets

    assert link_targets("127.0.0.1", 7001) == [("127.0.0.1", 7001)]
    assert link_targets("a, b:7101", 7001) == [("a", 7001), ("b", 7101)]
    assert link_targets("[::1]:7102,[fe80::1]", 7001) == [("::1", 7102), ("fe80::1", 7001)]
    for bad in ("a,,b", "a:0", "a:http", "", "[::1", "[::1]7001", "[]:7001"):
        with pytest.raises(ValueError):
            host_list(bad)
