"""One test per rule PROTOCOL.md spells out for an independent implementer (its "Changes" section).

Heartbeats, handshake deadlines and the frames allowed before the welcome are in test_timers.py.
"""

import asyncio
import random
import re
from pathlib import Path

import msgpack
import pytest

import protocol
from protocol.backoff import Backoff
from protocol.errors import PERMANENT
from protocol.framing import FrameDecoder, encode_frame
from protocol.link import LinkSettings
from protocol.messages import Event
from protocol.receiver import Receiver
from protocol.sender import Sender
from protocol.session import (Acked, EventsReceived, Failed, ReceiverSession, SenderSession, State, check_secret,
                              receiver_proof)
from tests.helpers import ListSource, MemoryStore, wait_until

SECRET = b"spec-rules-test-secret"
SPEC = (Path(protocol.__file__).parent / "PROTOCOL.md").read_text()


def frames(data: bytes) -> list[dict]:
    return FrameDecoder(max_frame_size=1 << 21).feed(data)


def connected(window: int = 8, position: int = 0, max_frame_size: int = 1 << 20):
    s = SenderSession("s", "snd", SECRET, window=window, max_frame_size=max_frame_size, now=0.0)
    r = ReceiverSession(["s"], SECRET, "rcv", now=0.0)
    r.receive_data(s.data_to_send(), 0.0)
    s.receive_data(r.data_to_send(), 0.0)
    r.receive_data(s.data_to_send(), 0.0)
    r.welcome(position)
    s.receive_data(r.data_to_send(), 0.0)
    return s, r


def event_frame(seq: int = 1, **envelope) -> bytes:
    body = {"id": "e-1", "type": "t", "source": "src", "time": "2026-01-01T00:00:00Z", "data": None}
    body.update(envelope)
    return msgpack.packb({"type": "event", "seq": seq, "event": {k: v for k, v in body.items() if v is not ...}},
                         use_bin_type=True, strict_types=False)


def framed(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def refused_with(session, data: bytes) -> str:
    events = session.receive_data(data, 0.0)
    assert events and isinstance(events[-1], Failed), events
    return events[-1].code.value


# --- the secret is bytes ---------------------------------------------------------------------------


def test_the_secret_is_bytes_never_text():
    with pytest.raises(TypeError):
        SenderSession("s", "n", SECRET.decode(), now=0.0)
    with pytest.raises(ValueError):
        check_secret(b"fifteen-bytes!!")
    assert check_secret(b"sixteen-bytes!!!") == b"sixteen-bytes!!!"


def test_configured_text_is_used_as_its_utf8_bytes():
    from deploy.runtime.config import secret

    text = "clé-partagée-très-secrète"
    assert secret(text) == text.encode("utf-8")
    hello = frames(SenderSession("s", "n", text.encode(), now=0.0).data_to_send())[0]
    receiver = ReceiverSession(["s"], text.encode(), "r", nonce_source=lambda n: b"\x01" * n, now=0.0)
    receiver.receive_data(encode_frame(hello), 0.0)
    challenge = frames(receiver.data_to_send())[0]
    assert challenge["proof"] == receiver_proof(text.encode("utf-8"), hello["nonce"], b"\x01" * 32, "s")


# --- the envelope -----------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [None, 1, -2**63, 2**64 - 1, 1.5, "x", b"\x00\xff", [1, [2]], {"a": {"b": [b"c"]}}])
def test_event_data_may_be_any_plain_msgpack_value_with_string_keys(data):
    _, r = connected()
    (arrived,) = r.receive_data(framed(event_frame(data=data)), 0.0)
    assert isinstance(arrived, EventsReceived) and arrived.events[0].data == data


@pytest.mark.parametrize("data", [{1: "x"}, {"a": [{b"k": 1}]}, {(1, 2): 3}, msgpack.ExtType(5, b"x"),
                                  {"when": msgpack.Timestamp(1, 0)}],
                         ids=["int key", "nested bin key", "array key", "extension type", "timestamp extension"])
def test_event_data_with_non_string_keys_or_extension_types_is_malformed(data):
    _, r = connected()
    assert refused_with(r, framed(event_frame(data=data))) == "MALFORMED_FRAME"


def test_a_bin_key_anywhere_in_a_frame_is_malformed():
    _, r = connected()
    body = msgpack.packb({"type": "ping", "nonce": 1, b"extra": 1}, use_bin_type=True)
    assert refused_with(r, framed(body)) == "MALFORMED_FRAME"


@pytest.mark.parametrize("field, value", [("id", ...), ("type", ...), ("source", ...), ("time", ...),
                                          ("id", ""), ("id", 7), ("type", b"t"), ("time", 1700000000)])
def test_envelope_fields_are_required_non_empty_where_stated_and_typed(field, value):
    _, r = connected()
    assert refused_with(r, framed(event_frame(**{field: value}))) == "MALFORMED_FRAME"


def test_data_may_be_absent_and_unknown_envelope_keys_are_ignored():
    _, r = connected()
    (arrived,) = r.receive_data(framed(event_frame(data=..., subject="extra")), 0.0)
    assert arrived.events[0].data is None


# --- acks -------------------------------------------------------------------------------------------


def ev(seq: int) -> Event:
    return Event(seq, f"e-{seq}", "t", "src", "2026-01-01T00:00:00Z")


def test_an_ack_beyond_what_was_sent_is_unexpected_frame():
    s, _ = connected()
    s.send_events([ev(1), ev(2)])
    assert refused_with(s, encode_frame({"type": "ack", "seq": 3})) == "UNEXPECTED_FRAME"


def test_an_ack_going_backwards_is_unexpected_frame_and_a_repeated_one_is_ignored():
    s, _ = connected()
    s.send_events([ev(1), ev(2)])
    assert s.receive_data(encode_frame({"type": "ack", "seq": 2}), 0.0) == [Acked(2)]
    assert s.receive_data(encode_frame({"type": "ack", "seq": 2}), 0.0) == []
    assert refused_with(s, encode_frame({"type": "ack", "seq": 1})) == "UNEXPECTED_FRAME"


def test_a_receiver_acks_each_batch_at_once_without_waiting_to_fill_it():
    # A receiver that waited for max_batch events would wait forever on a sender whose window is full.
    s, r = connected(window=3)
    s.send_events([ev(1), ev(2), ev(3)])
    assert s.window_open == 0
    r.receive_data(s.data_to_send(), 0.0)
    assert r.next_batch(1000) == (ev(1), ev(2), ev(3))  # what has arrived, not 1000
    with pytest.raises(RuntimeError):
        r.next_batch(1000)  # one batch at a time: its ack comes first
    r.batch_applied()
    assert s.receive_data(r.data_to_send(), 0.0) == [Acked(3)]
    assert s.window_open == 3


# --- errors and retries -----------------------------------------------------------------------------


def test_the_permanent_errors_of_the_spec_are_the_codes_permanent():
    paragraph = SPEC[SPEC.index("are **permanent**") - 300:SPEC.index("are **permanent**")]
    listed = set(re.findall(r"`([A-Z_]+)`", paragraph.split("\n\n")[-1]))
    assert listed == set(PERMANENT) and "FRAME_TOO_LARGE" in listed


def test_backoff_is_full_jitter_exponential_and_starts_over_on_reset():
    backoff = Backoff(base=0.05, cap=5.0, rng=random.Random(1))
    for attempt in range(12):
        ceiling = min(5.0, 0.05 * 2**attempt)
        assert 0 <= backoff.next_delay() <= ceiling
    draws = [Backoff(base=1, cap=1000, rng=random.Random(seed)).next_delay() for seed in range(200)]
    assert max(draws) > 0.9 and min(draws) < 0.1, "jitter spans the whole interval"
    backoff.reset()
    assert backoff.attempt == 0 and backoff.next_delay() <= 0.05


# --- an event too large for a frame -----------------------------------------------------------------


def test_an_event_too_large_for_a_frame_is_neither_sent_nor_skipped():
    s, _ = connected(max_frame_size=2000)
    big = Event(1, "e-1", "t", "src", "2026-01-01T00:00:00Z", "x" * 5000)
    (failed,) = s.send_events([big, ev(2)])
    assert failed.code.value == "FRAME_TOO_LARGE" and "event 1" in failed.error.message
    assert [f["type"] for f in frames(s.data_to_send())] == ["error"]
    assert s.last_sent == 0 and s.state is State.CLOSED


async def test_a_sender_stuck_on_a_too_large_event_retries_at_its_cap():
    store = MemoryStore()
    receiver = Receiver({"s": store}, LinkSettings(secret=SECRET, node="r"))
    await receiver.start()
    source = ListSource([Event(1, "e-1", "t", "src", "2026-01-01T00:00:00Z", "x" * 5000), ev(2)])
    backoff = Backoff(base=0.01, cap=30.0)
    sender = Sender("127.0.0.1", receiver.port, "s", source.read,
                    LinkSettings(secret=SECRET, node="s", max_frame_size=2000), head=source.head, backoff=backoff)
    task = asyncio.create_task(sender.run())
    await wait_until(lambda: sender.last_delay > 0, 5, "the sender giving up on the too-large event")
    assert sender.last_error == "FRAME_TOO_LARGE" and sender.last_delay == 30.0
    assert store.applied == [], "nothing after it may be delivered either: the stream is gap-free"
    await sender.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await receiver.stop()


# --- ping nonces ------------------------------------------------------------------------------------


@pytest.mark.parametrize("nonce", [-1, 1.0, "1"])
def test_a_ping_nonce_is_an_unsigned_64_bit_integer(nonce):
    s, r = connected()
    assert refused_with(r, encode_frame({"type": "ping", "nonce": nonce})) == "MALFORMED_FRAME"
    assert s.receive_data(encode_frame({"type": "ping", "nonce": 0}), 0.0) == []
