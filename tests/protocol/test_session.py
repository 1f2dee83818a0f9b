"""The sans-IO session state machines, driven byte by byte with no network."""

import pytest

from protocol.errors import BehindRetention, ErrorCode, ProtocolError, RemoteError
from protocol.framing import FrameDecoder, encode_frame
from protocol.messages import Event
from protocol.session import (HANDSHAKE_MAX_FRAME_SIZE, Acked, Authenticated, ReceiverSession, SenderSession, State,
                              Welcomed, receiver_proof, sender_proof)

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
    sender = SenderSession("orders", "s1", SECRET, version=99)
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
    other.receive_data(encode_frame({"type": "hello", "version": 2, "stream": "b", "node": "s",
                                     "nonce": sender_a._nonce}))
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


# --- version 2: the receiver proves the secret too -----------------------------------------------


def test_version_2_hello_carries_a_nonce_and_the_challenge_a_receiver_proof():
    sender = SenderSession("orders", "s1", SECRET, nonce_source=lambda n: b"\x02" * n)
    receiver = ReceiverSession(["orders"], SECRET, "r1", nonce_source=lambda n: b"\x07" * n)
    hello = sender.data_to_send()
    assert frames(hello)[0]["version"] == 2 and frames(hello)[0]["nonce"] == b"\x02" * 32
    receiver.receive_data(hello)
    challenge = frames(receiver.data_to_send())[0]
    assert challenge["proof"] == receiver_proof(SECRET, b"\x02" * 32, b"\x07" * 32, "orders")
    assert challenge["proof"] != sender_proof(SECRET, b"\x02" * 32, b"\x07" * 32, "orders")


def fake_receiver_challenge(proof: bytes | None) -> bytes:
    challenge = {"type": "challenge", "nonce": b"\x09" * 32}
    if proof is not None:
        challenge["proof"] = proof
    return encode_frame(challenge)


@pytest.mark.parametrize("proof", [None, b"\x00" * 32, "wrong-secret"], ids=["no proof", "zeros", "wrong secret"])
def test_a_receiver_that_cannot_prove_the_secret_gets_no_auth_and_no_events(proof):
    sender = SenderSession("orders", "s1", SECRET)
    hello = frames(sender.data_to_send())[0]
    if proof == "wrong-secret":
        proof = receiver_proof(b"not-the-secret-at-all", hello["nonce"], b"\x09" * 32, "orders")
    with pytest.raises(ProtocolError) as err:
        sender.receive_data(fake_receiver_challenge(proof))
    assert err.value.code is ErrorCode.AUTH_FAILED
    assert sender.data_to_send() == b""  # not even the sender's own proof
    assert sender.window_open == 0
    with pytest.raises(ProtocolError):
        sender.send_event(ev(1))


def test_a_receiver_proof_reflected_as_a_sender_proof_is_refused():
    # A fake sender replays the receiver's own proof back at it: the labels differ, so it fails.
    receiver = ReceiverSession(["orders"], SECRET, "r1")
    receiver.receive_data(encode_frame({"type": "hello", "version": 2, "stream": "orders", "node": "x",
                                        "nonce": b"\x05" * 32}))
    challenge = frames(receiver.data_to_send())[0]
    with pytest.raises(ProtocolError) as err:
        receiver.receive_data(encode_frame({"type": "auth", "proof": challenge["proof"]}))
    assert err.value.code is ErrorCode.AUTH_FAILED


def test_a_version_2_hello_without_a_nonce_is_malformed():
    receiver = ReceiverSession(["orders"], SECRET, "r1")
    with pytest.raises(ProtocolError) as err:
        receiver.receive_data(encode_frame({"type": "hello", "version": 2, "stream": "orders", "node": "x"}))
    assert err.value.code is ErrorCode.MALFORMED_FRAME


def test_a_version_1_sender_is_still_accepted_by_a_receiver():
    sender = SenderSession("orders", "old", SECRET, version=1)
    receiver = ReceiverSession(["orders"], SECRET, "r1")
    hello = sender.data_to_send()
    assert "nonce" not in frames(hello)[0]
    receiver.receive_data(hello)
    assert "proof" not in frames(challenge := receiver.data_to_send())[0]
    sender.receive_data(challenge)
    assert receiver.receive_data(sender.data_to_send()) == [Authenticated("orders", "old")]


def test_frames_are_small_until_the_peer_has_proven_the_secret():
    receiver = ReceiverSession(["orders"], SECRET, "r1")
    big = encode_frame({"type": "hello", "version": 2, "stream": "orders", "node": "x" * HANDSHAKE_MAX_FRAME_SIZE,
                        "nonce": b"\x05" * 32})
    with pytest.raises(ProtocolError) as err:
        receiver.receive_data(big[:8])  # the length prefix alone is enough to refuse
    assert err.value.code is ErrorCode.FRAME_TOO_LARGE
    sender, receiver = handshake()
    sender.send_event(Event(1, "id-1", "test.event", "tests", "2026-11-24T00:00:00Z", "x" * 100_000))
    assert [e.seq for e in receiver.receive_data(sender.data_to_send())] == [1]


# --- resuming within what the sender retains ---------------------------------------------------


def test_a_receiver_within_retention_resumes():
    sender, _ = handshake(position=500)
    sender.check_resume(head=900, first_retained=501)
    sender.check_resume(head=500, first_retained=None)  # nothing new: nothing missing


def test_a_receiver_behind_retention_is_refused_with_the_gap():
    sender, _ = handshake(position=12)
    with pytest.raises(BehindRetention) as err:
        sender.check_resume(head=900, first_retained=501)
    assert err.value.code is ErrorCode.POSITION_BEHIND_RETENTION
    assert (err.value.position, err.value.oldest_retained, err.value.missing) == (12, 501, 488)


def test_a_receiver_behind_with_everything_pruned_must_move_to_the_head():
    sender, _ = handshake(position=0)
    with pytest.raises(BehindRetention) as err:
        sender.check_resume(head=40, first_retained=None)
    assert err.value.oldest_retained == 41 and err.value.missing == 40


def test_a_receiver_ahead_of_the_sender_is_position_ahead():
    sender, _ = handshake(position=50)
    with pytest.raises(ProtocolError) as err:
        sender.check_resume(head=40, first_retained=None)
    assert err.value.code is ErrorCode.POSITION_AHEAD
