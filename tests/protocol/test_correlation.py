"""event.correlationid (PROTOCOL.md section 5): optional, carried as is, never a reason to refuse a frame."""

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.framing import encode_frame
from protocol.messages import Event, from_wire, to_wire
from protocol.session import EventsReceived
from tests.protocol.test_session import feed, handshake

OLD_STYLE = {"id": "id-1", "type": "test.event", "source": "old-peer", "time": "2026-11-24T00:00:00Z", "data": {"n": 1}}


def raw_event(seq: int, envelope: dict) -> bytes:
    """An event frame as a peer writes it by hand: exactly the envelope given, nothing added."""
    return encode_frame({"type": "event", "seq": seq, "event": envelope})


def test_an_old_style_sender_without_the_field_still_streams_to_a_new_receiver():
    _, receiver = handshake()
    arrived = feed(receiver, raw_event(1, OLD_STYLE))
    assert arrived == [EventsReceived((Event(1, "id-1", "test.event", "old-peer", "2026-11-24T00:00:00Z", {"n": 1}),))]
    assert arrived[0].events[0].correlation_id is None


def test_a_new_sender_carries_the_id_to_the_receiver_and_omits_the_field_when_it_has_none():
    sender, receiver = handshake()
    with_id = Event(1, "id-1", "test.event", "tests", "2026-11-24T00:00:00Z", {"n": 1}, "req-0190c3c4")
    without = Event(2, "id-2", "test.event", "tests", "2026-11-24T00:00:00Z", {"n": 2})
    sender.send_events([with_id, without])
    assert feed(receiver, sender.data_to_send()) == [EventsReceived((with_id, without))]
    assert "correlationid" in to_wire(with_id)["event"]
    assert "correlationid" not in to_wire(without)["event"]  # an old receiver sees exactly what it saw before


def test_what_an_old_receiver_reads_of_a_new_frame_is_the_old_envelope():
    """An old receiver ignores unknown envelope keys (section 2): the frame minus the new key is its event."""
    new = to_wire(Event(1, "id-1", "test.event", "old-peer", "2026-11-24T00:00:00Z", {"n": 1}, "req-1"))
    known = {k: v for k, v in new["event"].items() if k in ("id", "type", "source", "time", "data")}
    assert known == OLD_STYLE


@pytest.mark.parametrize("bad", [7, True, b"bin", "", "x" * 129, "has space", "ctl\x01", "-leading", ["a"], {"a": 1}])
def test_an_invalid_correlation_id_counts_as_absent_and_never_stops_the_stream(bad):
    _, receiver = handshake()
    arrived = feed(receiver, raw_event(1, {**OLD_STYLE, "correlationid": bad}))
    assert isinstance(arrived[0], EventsReceived) and arrived[0].events[0].correlation_id is None


@given(st.text(max_size=200))
def test_any_string_either_round_trips_or_is_dropped(value):
    body = msgpack.unpackb(msgpack.packb({"type": "event", "seq": 1, "event": {**OLD_STYLE, "correlationid": value}}))
    event = from_wire(body)
    assert event.correlation_id in (value, None)
    if event.correlation_id is not None:
        assert len(value) <= 128 and value.isascii() and value[0].isalnum()
