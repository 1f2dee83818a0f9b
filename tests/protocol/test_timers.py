"""Heartbeats, handshake deadlines and the frames allowed before the welcome, on a fake clock.

No sockets and no sleeps: the sessions are given the time (``now``) and asked
for their next deadline, as the adapters do (PROTOCOL.md sections 4 and 8).
"""

import pytest

from protocol.framing import FrameDecoder, encode_frame
from protocol.messages import Event
from protocol.session import (Authenticated, EventsReceived, Failed, HeartbeatTimeout, ReceiverSession, SenderSession,
                              State, Welcomed)

SECRET = b"timer-test-secret-0123"
T0 = 1000.0
INTERVAL, TIMEOUT, HANDSHAKE = 5.0, 15.0, 5.0


def sender(now: float = T0, **kwargs) -> SenderSession:
    return SenderSession("s", "snd", SECRET, now=now, heartbeat_interval=INTERVAL, heartbeat_timeout=TIMEOUT,
                         handshake_timeout=HANDSHAKE, **kwargs)


def receiver(now: float = T0) -> ReceiverSession:
    return ReceiverSession(["s"], SECRET, "rcv", now=now, heartbeat_timeout=TIMEOUT, handshake_timeout=HANDSHAKE)


def frames(data: bytes) -> list[dict]:
    return FrameDecoder(max_frame_size=1 << 20).feed(data)


def connected(now: float = T0) -> tuple[SenderSession, ReceiverSession]:
    s, r = sender(now), receiver(now)
    r.receive_data(s.data_to_send(), now)
    s.receive_data(r.data_to_send(), now)
    assert r.receive_data(s.data_to_send(), now) == [Authenticated("s", "snd")]
    r.welcome(0, now)
    assert s.receive_data(r.data_to_send(), now) == [Welcomed(0, "rcv")]
    return s, r


def exchange(a, b, now: float) -> None:
    """Deliver whatever each side queued to the other, at ``now``, until both are quiet."""
    while True:
        moved = False
        for src, dst in ((a, b), (b, a)):
            if data := src.data_to_send():
                assert not any(isinstance(e, (Failed, HeartbeatTimeout)) for e in dst.receive_data(data, now))
                moved = True
        if not moved:
            return


# --- heartbeats ------------------------------------------------------------------------------------


def test_an_idle_sender_pings_after_the_interval_and_not_before():
    s, _ = connected()
    assert s.next_deadline() == T0 + INTERVAL
    assert s.handle_timer(T0 + INTERVAL - 0.1) == [] and s.data_to_send() == b""
    assert s.handle_timer(T0 + INTERVAL) == []
    assert frames(s.data_to_send()) == [{"type": "ping", "nonce": 1}]
    assert s.next_deadline() == T0 + 2 * INTERVAL  # the ping counts as sending


def test_sending_events_postpones_the_ping():
    s, _ = connected()
    s.send_event(Event(1, "e1", "t", "src", "2026-01-01T00:00:00Z"), now=T0 + 4)
    s.data_to_send()
    assert s.handle_timer(T0 + INTERVAL) == [] and s.data_to_send() == b""
    assert s.next_deadline() == T0 + 4 + INTERVAL


def test_the_receiver_answers_pings_but_never_pings_itself():
    _, r = connected()
    for t in range(1, 15):
        assert r.handle_timer(T0 + t) == []
        assert r.data_to_send() == b""
    assert r.next_deadline() == T0 + TIMEOUT  # its only timer: the sender's silence


def test_an_idle_link_stays_up_on_heartbeats_for_an_hour():
    s, r = connected()
    now = T0
    while now < T0 + 3600:
        now = min(d for d in (s.next_deadline(), r.next_deadline()) if d is not None)
        assert s.handle_timer(now) == [] and r.handle_timer(now) == []
        exchange(s, r, now)
    assert s.state is r.state is State.STREAMING


def test_a_sender_whose_receiver_goes_silent_times_out_with_an_error_frame():
    s, _ = connected()
    now = T0
    sent = []
    while s.state is State.STREAMING:  # the receiver hears the pings but its pongs are lost
        now = s.next_deadline()
        events = s.handle_timer(now)
        sent += frames(s.data_to_send())
    assert events == [HeartbeatTimeout(TIMEOUT, handshake=False)]
    assert now == T0 + TIMEOUT
    assert [f["type"] for f in sent] == ["ping", "ping", "error"]
    assert sent[-1] == {"type": "error", "code": "HEARTBEAT_TIMEOUT", "message": "peer silent for 15.0s"}
    assert s.next_deadline() is None


def test_a_receiver_drops_a_silent_sender_at_the_timeout():
    _, r = connected()
    assert r.handle_timer(T0 + TIMEOUT - 0.01) == []
    (event,) = r.handle_timer(T0 + TIMEOUT)
    assert isinstance(event, HeartbeatTimeout) and not event.handshake
    assert frames(r.data_to_send())[-1]["code"] == "HEARTBEAT_TIMEOUT"
    assert r.state is State.CLOSED


def test_any_frame_from_the_peer_resets_its_silence():
    _, r = connected()
    r.receive_data(encode_frame({"type": "ping", "nonce": 7}), T0 + 10)
    assert r.next_deadline() == T0 + 10 + TIMEOUT
    assert r.handle_timer(T0 + TIMEOUT + 1) == []


def test_a_heartbeat_interval_not_shorter_than_the_timeout_is_refused():
    with pytest.raises(ValueError):
        SenderSession("s", "n", SECRET, now=T0, heartbeat_interval=15.0, heartbeat_timeout=15.0)


# --- the handshake deadline ------------------------------------------------------------------------


def test_a_receiver_closes_a_peer_that_never_says_hello_with_heartbeat_timeout():
    r = receiver()
    assert r.next_deadline() == T0 + HANDSHAKE
    assert r.handle_timer(T0 + HANDSHAKE - 0.01) == []
    assert r.handle_timer(T0 + HANDSHAKE) == [HeartbeatTimeout(HANDSHAKE, handshake=True)]
    assert frames(r.data_to_send()) == [{"type": "error", "code": "HEARTBEAT_TIMEOUT",
                                         "message": "handshake not completed for 5.0s"}]


def test_the_handshake_deadline_is_not_moved_by_a_chatty_peer():
    r = receiver()
    r.receive_data(sender().data_to_send(), T0 + 4)  # hello, late
    assert r.next_deadline() == T0 + HANDSHAKE  # still measured from the connection
    assert isinstance(r.handle_timer(T0 + HANDSHAKE)[0], HeartbeatTimeout)


def test_a_sender_without_a_welcome_times_out_and_says_so():
    s, r = sender(), receiver()
    r.receive_data(s.data_to_send(), T0)
    s.receive_data(r.data_to_send(), T0 + 1)  # challenge; the welcome never comes
    s.data_to_send()
    assert s.next_deadline() == T0 + HANDSHAKE
    assert s.handle_timer(T0 + HANDSHAKE) == [HeartbeatTimeout(HANDSHAKE, handshake=True)]
    assert frames(s.data_to_send())[-1]["code"] == "HEARTBEAT_TIMEOUT"  # before: closed silently


def test_after_the_handshake_only_heartbeats_time_the_link():
    s, r = connected(now=T0)
    assert s.handle_timer(T0 + HANDSHAKE + 1) == []
    assert r.handle_timer(T0 + HANDSHAKE + 1) == []


# --- what is allowed before the welcome ------------------------------------------------------------


@pytest.mark.parametrize("frame", [
    {"type": "ping", "nonce": 1},
    {"type": "pong", "nonce": 1},
    {"type": "ack", "seq": 0},
    {"type": "auth", "proof": b"\x00" * 32},
    {"type": "event", "seq": 1, "event": {"id": "e", "type": "t", "source": "s", "time": "x"}},
])
def test_a_receiver_accepts_only_hello_first(frame):
    r = receiver()
    (event,) = r.receive_data(encode_frame(frame), T0)
    assert isinstance(event, Failed) and event.code.value == "UNEXPECTED_FRAME"
    assert [f["type"] for f in frames(r.data_to_send())] == ["error"]  # a ping gets no pong


def test_events_sent_before_the_welcome_are_refused_even_after_a_valid_auth():
    s, r = sender(), receiver()
    r.receive_data(s.data_to_send(), T0)
    s.receive_data(r.data_to_send(), T0)
    early = encode_frame({"type": "event", "seq": 1, "event": {"id": "e", "type": "t", "source": "s", "time": "x"}})
    events = r.receive_data(s.data_to_send() + early, T0)
    assert events[0] == Authenticated("s", "snd")
    assert isinstance(events[1], Failed) and events[1].code.value == "UNEXPECTED_FRAME"
    assert not any(isinstance(e, EventsReceived) for e in events)


def test_a_sender_refuses_a_ping_before_the_welcome():
    s = sender()
    s.data_to_send()
    (event,) = s.receive_data(encode_frame({"type": "ping", "nonce": 1}), T0)
    assert isinstance(event, Failed) and event.code.value == "UNEXPECTED_FRAME"
    assert [f["type"] for f in frames(s.data_to_send())] == ["error"]
