"""A relay's sender reconnects quickly once its receiver is back (issue 13): transient failures are
capped at 1 s, not the library's 5 s; the formula, the growth from base and permanent refusals'
pace (the cap, 5 s) are PROTOCOL.md section 8's. No real delay is waited for."""

import random

from deploy.runtime.relay import RelayBackoff, outbox_relay
from protocol.backoff import Backoff
from protocol.link import LinkSettings


def test_transient_delays_stay_below_one_second_after_a_long_outage():
    backoff = RelayBackoff(rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(200)]
    assert max(delays) <= 1.0
    assert max(delays[100:]) > 0.5  # still jittered over the whole [0, 1] once grown
    library = Backoff(rng=random.Random(7))
    assert max(library.next_delay() for _ in range(200)) > 1.0  # what the relay no longer waits


def test_it_grows_from_the_base_and_starts_again_only_on_reset():
    backoff = RelayBackoff(rng=random.Random(1))
    assert all(backoff.next_delay() <= 0.05 * 2 ** n for n in range(5))
    for _ in range(20):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() <= 0.05


def test_permanent_refusals_still_wait_the_protocols_cap():
    assert RelayBackoff().cap == Backoff().cap == 5.0  # Sender waits .cap after a permanent refusal


def test_every_outbox_relay_sender_uses_it():
    async def nothing(*_args):
        return []

    relay = outbox_relay("s", [("127.0.0.1", 1)], nothing, nothing, nothing,
                         LinkSettings(secret=b"x" * 16, node="n"), lambda: None, poll_interval=1.0, lock_retry=1.0)
    assert isinstance(relay.make_sender().backoff, RelayBackoff)
