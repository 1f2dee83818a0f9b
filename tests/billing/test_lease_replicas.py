"""Two billing replicas and the relay lease: one relay at a time, through a pause and a kill (issue 12).

Rows are written straight into the outbox (as a writer's transaction would) while both
replicas' /ready are sampled. The holder is paused with SIGSTOP past the lease's TTL:
the other takes over after the expiry, and the paused one, once woken, must stop at
its first check without relaying again. Then the new holder is SIGKILLed and the woken
one takes the lease back after it expired. At the end the bridge stand-in has every
row exactly once, in a gap-free sequence.

Runs on one local MariaDB; tests/ha/test_galera_lease.py runs the same scenario
(tests/support/lease_scenario.py) with the replicas on two Galera nodes.
"""

from __future__ import annotations

import pytest

from tests.support.lease_scenario import LEASE_ENV, relay_through_pause_and_kill

pytestmark = pytest.mark.slow


async def test_two_replicas_never_relay_at_once_through_a_paused_and_a_killed_holder(pipeline):
    a, b = await pipeline.billing(**LEASE_ENV), await pipeline.billing(**LEASE_ENV)
    await relay_through_pause_and_kill(pipeline, pipeline.session, a, b)
