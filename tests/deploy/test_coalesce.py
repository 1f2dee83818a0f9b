"""Coalesced actions (deploy/runtime/coalesce.py): a burst of requests costs one or two runs, and a request
is never lost: some run always starts after it."""

import asyncio

from deploy.runtime.coalesce import Coalesced
from tests.helpers import wait_until


class Action:
    def __init__(self) -> None:
        self.started = 0
        self.release = asyncio.Event()

    async def __call__(self) -> None:
        self.started += 1
        await self.release.wait()


async def test_a_burst_of_requests_runs_the_action_at_once_then_once_more():
    action = Action()
    coalesced = Coalesced("test", action, interval=0.001)
    coalesced.request()
    await wait_until(lambda: action.started == 1, 5, "the first request running the action at once")
    for _ in range(1000):  # while the first run is still in progress
        coalesced.request()
    action.release.set()
    await wait_until(lambda: action.started == 2 and coalesced._task is None, 5,
                     "one more run for the whole burst, then quiet")
    assert coalesced.runs == 2


async def test_a_request_after_a_run_always_gets_a_run_of_its_own():
    action = Action()
    action.release.set()
    coalesced = Coalesced("test", action, interval=0.001)
    for n in range(1, 4):
        coalesced.request()
        await wait_until(lambda n=n: action.started == n and coalesced._task is None, 5, f"run {n} for request {n}")


async def test_a_failing_action_is_retried_on_the_next_request_not_lost():
    calls = []

    async def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("database blinked")

    coalesced = Coalesced("test", flaky, interval=0.001)
    coalesced.request()
    await wait_until(lambda: len(calls) == 1 and coalesced._task is None, 5, "the failing run finishing")
    assert coalesced.failures == 1
    coalesced.request()
    await wait_until(lambda: len(calls) == 2 and coalesced.failures == 0, 5, "the next request running again")
    await coalesced.close()
