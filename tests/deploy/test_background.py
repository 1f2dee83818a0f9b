"""A daemon's background loops: an unexpected exception is logged and the loop restarted, not lost."""

import asyncio

from structlog.testing import capture_logs

from deploy.runtime.aio import Background, keep_running
from deploy.runtime.backoff import Backoff


async def test_a_loop_that_raises_is_logged_and_started_again():
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RuntimeError(f"bug {calls}")

    with capture_logs() as logs:
        await asyncio.wait_for(keep_running("flaky", flaky, Backoff(base=0.001, cap=0.001)), 5)
    assert calls == 3, "the loop was not restarted after it raised"
    crashes = [e for e in logs if e["event"] == "task_crashed"]
    assert [e["task"] for e in crashes] == ["flaky", "flaky"] and all(e["log_level"] == "error" for e in crashes)


async def test_background_cancel_stops_every_loop():
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    background = Background()
    background.spawn("a", forever)
    background.spawn("b", forever)
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.wait_for(background.cancel(), 5)
    assert not [task for task in asyncio.all_tasks() if task.get_name() in ("a", "b")], "a loop outlived cancel()"
