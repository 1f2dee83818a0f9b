"""The sans-IO session state machines, driven byte by byte with no network."""

import pytest

from protocol.errors import ErrorCode, ProtocolError, RemoteError
from protocol.framing import FrameDecoder, encode_frame
from protocol.messages import Event
from protocol.session import Acked, Authenticated, ReceiverSession, SenderSession, State, Welcomed

SECRET = b"k" * 32


def ev(seq: int) -> Event:
    return Event(seq, f"id-{seq}", "test.event", "tests", "2026-11-24T00:00:00Z", {"n": seq})


def frames(data: bytes) -> list[dict]:
    return FrameDecoder().feed(data)


def handshake(position: int = 0, window: int = 4):
    sender = SenderSession("orders", "s1", SECRET, window=window)
    receiver = ReceiverSession(["orders"], SECRET, "r1", nonce_source=lambda n: b"\x07" * n)
    assert receiver.receive_data(sender.data_to_send()) == []  # hello → challenge queued
    assert sender.receive_data(receiver.data_to_send()) == []  # challenge → auth queued
    assert receiver.receive_data(sender.data_to_send()) == [Authenticated("orders", "s1")]
    receiver.welcome(position)
    assert sender.receive_data(receiver.data_to_send()) == [Welcomed(position, "r1")]
    return sender, receiver


def test_handshake_puts_both_sides_in_streaming_at_the_receivers_position():
    sender, receiver = handshake(position=41)
    assert sender.state is receiver.state is State.STREAMING
    assert sender.last_sent == sender.acked == 41


def test_the_secret_never_crosses_the_wire():
    sender = SenderSession("orders", "s1", SECRET)
    receiver = ReceiverSession(["orders"], SECRET, "r1")
    wire = sender.data_to_send()
    receiver.receive_data(wire)
    challenge = receiver.data_to_send()
    sender.receive_data(challenge)
    wire += challenge + sender.data_to_send()
    assert SECRET not in wire


def refusal(sender: SenderSession, receiver: ReceiverSession) -> ErrorCode:
    with pytest.raises(ProtocolError) as err:
        receiver.receive_data(sender.data_to_send())
        sender.receive_data(receiver.data_to_send())
        receiver.receive_data(sender.data_to_send())
    receiver.fail(err.value.code, err.value.message)
    # The error frame is what the peer gets before the close.
    last = frames(receiver.data_to_send())[-1]
    assert last["type"] == "error" and last["code"] == err.value.code.value
    with pytest.raises(RemoteError):
        sender.receive_data(encode_frame(last))
    return err.value.code


def test_wrong_secret_is_auth_failed():
    assert refusal(SenderSession("orders", "s1", b"x" * 32), ReceiverSession(["orders"], SECRET, "r")) is ErrorCode.AUTH_FAILED


def test_wrong_version_is_unsupported_version():
    sender = SenderSession("orders", "s1", SECRET, version=2)
    assert refusal(sender, ReceiverSession(["orders"], SECRET, "r")) is ErrorCode.UNSUPPORTED_VERSION


def test_unknown_stream_is_unknown_stream():
    sender = SenderSession("payments", "s1", SECRET)
    assert refusal(sender, ReceiverSession(["orders"], SECRET, "r")) is ErrorCode.UNKNOWN_STREAM


def test_a_proof_for_one_stream_does_not_open_another():
    receiver = ReceiverSession(["a", "b"], SECRET, "r", nonce_source=lambda n: b"\x01" * n)
    sender_a = SenderSession("a", "s", SECRET)
    receiver.receive_data(sender_a.data_to_send())
    sender_a.receive_data(receiver.data_to_send())
    proof_for_a = sender_a.data_to_send()
    other = ReceiverSession(["a", "b"], SECRET, "r", nonce_source=lambda n: b"\x01" * n)
    other.receive_data(encode_frame({"type": "hello", "version": 1, "stream": "b", "node": "s"}))
    other.data_to_send()
    with pytest.raises(ProtocolError) as err:
        other.receive_data(proof_for_a)
    assert err.value.code is ErrorCode.AUTH_FAILED


def test_a_frame_before_the_handshake_is_unexpected():
    receiver = ReceiverSession(["orders"], SECRET, "r")
    with pytest.raises(ProtocolError) as err:
        receiver.receive_data(encode_frame({"type": "event", "seq": 1, "event": ev(1).envelope()}))
    assert err.value.code is ErrorCode.UNEXPECTED_FRAME


def test_an_unknown_message_type_is_unexpected():
    _, receiver = handshake()
    with pytest.raises(ProtocolError) as err:
        receiver.receive_data(encode_frame({"type": "teleport"}))
    assert err.value.code is ErrorCode.UNEXPECTED_FRAME


def test_events_flow_and_cumulative_acks_reach_the_sender():
    sender, receiver = handshake(window=3)
    for seq in (1, 2, 3):
        sender.send_event(ev(seq))
    assert receiver.receive_data(sender.data_to_send()) == [ev(1), ev(2), ev(3)]
    receiver.ack(3)
    assert sender.receive_data(receiver.data_to_send()) == [Acked(3)]
    assert sender.in_flight == 0


def test_the_window_bounds_unacknowledged_events():
    sender, _ = handshake(window=2)
    sender.send_event(ev(1))
    sender.send_event(ev(2))
    assert sender.window_open == 0
    with pytest.raises(ValueError):
        sender.send_event(ev(3))


def test_a_wrong_sequence_number_is_sequence_gap():
    _, receiver = handshake(position=10)
    with pytest.raises(ProtocolError) as err:
        receiver.receive_data(encode_frame({"type": "event", "seq": 12, "event": ev(12).envelope()}))
    assert err.value.code is ErrorCode.SEQUENCE_GAP


def test_a_replayed_sequence_number_is_sequence_gap():
    _, receiver = handshake(position=10)
    with pytest.raises(ProtocolError) as err:
        receiver.receive_data(encode_frame({"type": "event", "seq": 10, "event": ev(10).envelope()}))
    assert err.value.code is ErrorCode.SEQUENCE_GAP


def test_an_ack_beyond_what_was_sent_is_refused():
    sender, _ = handshake()
    sender.send_event(ev(1))
    with pytest.raises(ProtocolError) as err:
        sender.receive_data(encode_frame({"type": "ack", "seq": 5}))
    assert err.value.code is ErrorCode.UNEXPECTED_FRAME


def test_resume_starts_after_the_welcome_position():
    sender, _ = handshake(position=500)
    with pytest.raises(ValueError):
        sender.send_event(ev(1))
    sender.send_event(ev(501))


def test_pings_are_answered_in_any_streaming_state():
    sender, receiver = handshake()
    sender.ping(9)
    assert receiver.receive_data(sender.data_to_send()) == []
    assert frames(receiver.data_to_send()) == [{"type": "pong", "nonce": 9}]


def test_an_event_field_of_the_wrong_type_is_malformed():
    _, receiver = handshake()
    with pytest.raises(ProtocolError) as err:
        receiver.receive_data(encode_frame({"type": "event", "seq": True, "event": ev(1).envelope()}))
    assert err.value.code is ErrorCode.MALFORMED_FRAME
