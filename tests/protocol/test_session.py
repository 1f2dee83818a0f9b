"""The sans-IO session state machines, driven byte by byte with no network."""

import pytest

from protocol.errors import BehindRetention, ErrorCode, ProtocolError
from protocol.framing import FrameDecoder, encode_frame
from protocol.messages import Event
from protocol.session import (HANDSHAKE_MAX_FRAME_SIZE, Acked, Authenticated, EventsReceived, Failed, PeerError,
                              ReceiverSession, SenderSession, State, Welcomed, receiver_proof, sender_proof)

SECRET = b"k" * 32
T0 = 100.0  # the fake clock: sessions are given time, they never read it


def Sender(*args, **kwargs) -> SenderSession:
    return SenderSession(*args, now=T0, **kwargs)


def Receiver(*args, **kwargs) -> ReceiverSession:
    return ReceiverSession(*args, now=T0, **kwargs)


def feed(session, data: bytes) -> list:
    return session.receive_data(data, T0)


def failure(events: list) -> ErrorCode:
    """The code of the terminal Failed event that must end ``events``."""
    assert events and isinstance(events[-1], Failed), events
    return events[-1].code


def ev(seq: int) -> Event:
    return Event(seq, f"id-{seq}", "test.event", "tests", "2026-11-24T00:00:00Z", {"n": seq})


def frames(data: bytes) -> list[dict]:
    return FrameDecoder().feed(data)


def handshake(position: int = 0, window: int = 4):
    sender = Sender("orders", "s1", SECRET, window=window)
    receiver = Receiver(["orders"], SECRET, "r1", nonce_source=lambda n: b"\x07" * n)
    assert feed(receiver, sender.data_to_send()) == []  # hello → challenge queued
    assert feed(sender, receiver.data_to_send()) == []  # challenge → auth queued
    assert feed(receiver, sender.data_to_send()) == [Authenticated("orders", "s1")]
    receiver.welcome(position)
    assert feed(sender, receiver.data_to_send()) == [Welcomed(position, "r1")]
    return sender, receiver


def test_handshake_puts_both_sides_in_streaming_at_the_receivers_position():
    sender, receiver = handshake(position=41)
    assert sender.state is receiver.state is State.STREAMING
    assert sender.last_sent == sender.acked == 41


def test_the_secret_never_crosses_the_wire():
    sender = Sender("orders", "s1", SECRET)
    receiver = Receiver(["orders"], SECRET, "r1")
    wire = sender.data_to_send()
    feed(receiver, wire)
    challenge = receiver.data_to_send()
    feed(sender, challenge)
    wire += challenge + sender.data_to_send()
    assert SECRET not in wire


def refusal(sender: SenderSession, receiver: ReceiverSession) -> ErrorCode:
    """Run the handshake until one side refuses; return its code once the other side got it."""
    data = sender.data_to_send()
    for me, peer in [(receiver, sender), (sender, receiver), (receiver, sender)]:
        events = feed(me, data)
        if events:
            code = failure(events)
            assert me.state is State.CLOSED
            # The session queued the error frame the peer gets before the close, as its last frame.
            last = frames(me.data_to_send())[-1]
            assert last["type"] == "error" and last["code"] == code.value
            assert feed(peer, encode_frame(last)) == [PeerError(code.value, last["message"])]
            assert peer.state is State.CLOSED
            return code
        data = me.data_to_send()
    raise AssertionError("neither side refused the handshake")


def test_wrong_secret_is_auth_failed():
    assert refusal(Sender("orders", "s1", b"x" * 32), Receiver(["orders"], SECRET, "r")) is ErrorCode.AUTH_FAILED


def test_wrong_version_is_unsupported_version():
    sender = Sender("orders", "s1", SECRET, version=99)
    assert refusal(sender, Receiver(["orders"], SECRET, "r")) is ErrorCode.UNSUPPORTED_VERSION


def test_unknown_stream_is_unknown_stream():
    sender = Sender("payments", "s1", SECRET)
    assert refusal(sender, Receiver(["orders"], SECRET, "r")) is ErrorCode.UNKNOWN_STREAM


def test_a_proof_for_one_stream_does_not_open_another():
    receiver = Receiver(["a", "b"], SECRET, "r", nonce_source=lambda n: b"\x01" * n)
    sender_a = Sender("a", "s", SECRET)
    feed(receiver, sender_a.data_to_send())
    feed(sender_a, receiver.data_to_send())
    proof_for_a = sender_a.data_to_send()
    other = Receiver(["a", "b"], SECRET, "r", nonce_source=lambda n: b"\x01" * n)
    feed(other, encode_frame({"type": "hello", "version": 2, "stream": "b", "node": "s",
                                     "nonce": sender_a._nonce}))
    other.data_to_send()
    assert failure(feed(other, proof_for_a)) is ErrorCode.AUTH_FAILED


def test_a_frame_before_the_handshake_is_unexpected():
    receiver = Receiver(["orders"], SECRET, "r")
    events = feed(receiver, encode_frame({"type": "event", "seq": 1, "event": ev(1).envelope()}))
    assert failure(events) is ErrorCode.UNEXPECTED_FRAME


def test_an_unknown_message_type_is_unexpected():
    _, receiver = handshake()
    assert failure(feed(receiver, encode_frame({"type": "teleport"}))) is ErrorCode.UNEXPECTED_FRAME


def test_events_flow_and_cumulative_acks_reach_the_sender():
    sender, receiver = handshake(window=3)
    for seq in (1, 2, 3):
        sender.send_event(ev(seq))
    assert feed(receiver, sender.data_to_send()) == [EventsReceived((ev(1), ev(2), ev(3)))]
    assert receiver.next_batch(100) == (ev(1), ev(2), ev(3))
    receiver.batch_applied()
    assert feed(sender, receiver.data_to_send()) == [Acked(3)]
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
    events = feed(receiver, encode_frame({"type": "event", "seq": 12, "event": ev(12).envelope()}))
    assert failure(events) is ErrorCode.SEQUENCE_GAP


def test_a_replayed_sequence_number_is_sequence_gap():
    _, receiver = handshake(position=10)
    events = feed(receiver, encode_frame({"type": "event", "seq": 10, "event": ev(10).envelope()}))
    assert failure(events) is ErrorCode.SEQUENCE_GAP


def test_an_ack_beyond_what_was_sent_is_refused():
    sender, _ = handshake()
    sender.send_event(ev(1))
    assert failure(feed(sender, encode_frame({"type": "ack", "seq": 5}))) is ErrorCode.UNEXPECTED_FRAME


def test_resume_starts_after_the_welcome_position():
    sender, _ = handshake(position=500)
    with pytest.raises(ValueError):
        sender.send_event(ev(1))
    sender.send_event(ev(501))


def test_pings_are_answered_in_any_streaming_state():
    sender, receiver = handshake()
    assert feed(receiver, encode_frame({"type": "ping", "nonce": 9})) == []
    assert frames(receiver.data_to_send()) == [{"type": "pong", "nonce": 9}]
    assert feed(sender, encode_frame({"type": "ping", "nonce": 2**64 - 1})) == []  # the receiver may ping too
    assert frames(sender.data_to_send()) == [{"type": "pong", "nonce": 2**64 - 1}]


def test_an_event_field_of_the_wrong_type_is_malformed():
    _, receiver = handshake()
    events = feed(receiver, encode_frame({"type": "event", "seq": True, "event": ev(1).envelope()}))
    assert failure(events) is ErrorCode.MALFORMED_FRAME


# --- version 2: the receiver proves the secret too -----------------------------------------------


def test_version_2_hello_carries_a_nonce_and_the_challenge_a_receiver_proof():
    sender = Sender("orders", "s1", SECRET, nonce_source=lambda n: b"\x02" * n)
    receiver = Receiver(["orders"], SECRET, "r1", nonce_source=lambda n: b"\x07" * n)
    hello = sender.data_to_send()
    assert frames(hello)[0]["version"] == 2 and frames(hello)[0]["nonce"] == b"\x02" * 32
    feed(receiver, hello)
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
    sender = Sender("orders", "s1", SECRET)
    hello = frames(sender.data_to_send())[0]
    if proof == "wrong-secret":
        proof = receiver_proof(b"not-the-secret-at-all", hello["nonce"], b"\x09" * 32, "orders")
    assert failure(feed(sender, fake_receiver_challenge(proof))) is ErrorCode.AUTH_FAILED
    # Only the error frame: not the sender's own proof.
    assert [f["type"] for f in frames(sender.data_to_send())] == ["error"]
    assert sender.window_open == 0
    with pytest.raises(ProtocolError):
        sender.send_event(ev(1))


def test_a_receiver_proof_reflected_as_a_sender_proof_is_refused():
    # A fake sender replays the receiver's own proof back at it: the labels differ, so it fails.
    receiver = Receiver(["orders"], SECRET, "r1")
    feed(receiver, encode_frame({"type": "hello", "version": 2, "stream": "orders", "node": "x",
                                        "nonce": b"\x05" * 32}))
    challenge = frames(receiver.data_to_send())[0]
    assert failure(feed(receiver, encode_frame({"type": "auth", "proof": challenge["proof"]}))) is ErrorCode.AUTH_FAILED


def test_a_version_2_hello_without_a_nonce_is_malformed():
    receiver = Receiver(["orders"], SECRET, "r1")
    events = feed(receiver, encode_frame({"type": "hello", "version": 2, "stream": "orders", "node": "x"}))
    assert failure(events) is ErrorCode.MALFORMED_FRAME


def test_a_version_1_sender_is_still_accepted_by_a_receiver():
    sender = Sender("orders", "old", SECRET, version=1)
    receiver = Receiver(["orders"], SECRET, "r1")
    hello = sender.data_to_send()
    assert "nonce" not in frames(hello)[0]
    feed(receiver, hello)
    assert "proof" not in frames(challenge := receiver.data_to_send())[0]
    feed(sender, challenge)
    assert feed(receiver, sender.data_to_send()) == [Authenticated("orders", "old")]


def test_frames_are_small_until_the_peer_has_proven_the_secret():
    receiver = Receiver(["orders"], SECRET, "r1")
    big = encode_frame({"type": "hello", "version": 2, "stream": "orders", "node": "x" * HANDSHAKE_MAX_FRAME_SIZE,
                        "nonce": b"\x05" * 32})
    assert failure(feed(receiver, big[:8])) is ErrorCode.FRAME_TOO_LARGE  # the length prefix alone is enough
    sender, receiver = handshake()
    sender.send_event(Event(1, "id-1", "test.event", "tests", "2026-11-24T00:00:00Z", "x" * 100_000))
    (arrived,) = feed(receiver, sender.data_to_send())
    assert [e.seq for e in arrived.events] == [1]


# --- resuming within what the sender retains ---------------------------------------------------


def test_a_receiver_within_retention_resumes():
    sender, _ = handshake(position=500)
    assert sender.check_resume(head=900, first_retained=501) == []
    assert sender.check_resume(head=500, first_retained=None) == []  # nothing new: nothing missing


def resume_failure(sender: SenderSession, head: int, first_retained: int | None) -> ProtocolError:
    (failed,) = sender.check_resume(head=head, first_retained=first_retained)
    assert isinstance(failed, Failed) and sender.state is State.CLOSED
    assert frames(sender.data_to_send())[-1]["code"] == failed.code.value  # the receiver is told why
    return failed.error


def test_a_receiver_behind_retention_is_refused_with_the_gap():
    sender, _ = handshake(position=12)
    error = resume_failure(sender, head=900, first_retained=501)
    assert isinstance(error, BehindRetention) and error.code is ErrorCode.POSITION_BEHIND_RETENTION
    assert (error.position, error.oldest_retained, error.missing) == (12, 501, 488)


def test_a_receiver_behind_with_everything_pruned_must_move_to_the_head():
    sender, _ = handshake(position=0)
    error = resume_failure(sender, head=40, first_retained=None)
    assert isinstance(error, BehindRetention) and error.oldest_retained == 41 and error.missing == 40


def test_a_receiver_ahead_of_the_sender_is_position_ahead():
    sender, _ = handshake(position=50)
    assert resume_failure(sender, head=40, first_retained=None).code is ErrorCode.POSITION_AHEAD


def test_a_source_that_skips_pruned_events_is_refused_not_followed():
    sender, _ = handshake(position=10)
    (failed,) = sender.send_events([ev(15), ev(16)])
    assert isinstance(failed.error, BehindRetention) and (failed.error.position, failed.error.oldest_retained) == (10, 15)
    assert [f["type"] for f in frames(sender.data_to_send())] == ["error"]  # no event went out
