"""The stuck-message registry: one warning when a message becomes stuck, then one per interval, not per attempt."""

from structlog.testing import capture_logs

from portal_consumer.stuck import StuckMessages
from tests.support.clock import FakeClock


def test_a_stuck_message_is_logged_when_it_starts_then_periodically_then_when_it_goes_through():
    clock = FakeClock(1000.0)
    stuck = StuckMessages(log_every=60.0, clock=clock, wall=lambda: 1_800_000_000.0)
    with capture_logs() as logs:
        for _ in range(50):  # fifty attempts within the first minute
            stuck.failed("m-1", "order-1", "payment.succeeded", "reservation confirm answered 400")
            clock.advance(1.0)
        assert [e["event"] for e in logs] == ["message_stuck"]
        clock.advance(10.0)
        stuck.failed("m-1", "order-1", "payment.succeeded", "reservation confirm answered 429")
        assert [e["event"] for e in logs] == ["message_stuck", "message_still_stuck"]
        assert logs[-1]["attempts"] == 51 and logs[-1]["age_seconds"] == 60.0
        assert logs[-1]["last_answer"] == "reservation confirm answered 429" and logs[-1]["order_id"] == "order-1"
        assert stuck.summary() == {"count": 1, "oldest_seconds": 60.0}
        [listed] = stuck.listing()
        assert listed["message_id"] == "m-1" and listed["attempts"] == 51
        assert listed["stuck_since"] == "2027-01-15T07:59:00.000000Z"
        stuck.done("m-1", "processed")
        stuck.done("m-1", "processed")  # twice is harmless
    assert [e["event"] for e in logs] == ["message_stuck", "message_still_stuck", "message_unstuck"]
    assert stuck.summary() == {"count": 0, "oldest_seconds": 0.0} and stuck.listing() == []


def test_a_message_that_never_failed_leaves_no_trace():
    stuck = StuckMessages()
    with capture_logs() as logs:
        stuck.done("m-2", "processed")
    assert logs == [] and stuck.summary()["count"] == 0
