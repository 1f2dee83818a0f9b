"""asyncio helpers of the link adapters that stay correct on Python 3.11.

On 3.11 ``asyncio.wait_for`` can swallow a cancellation that arrives as the
awaited thing completes (fixed in 3.12, which rebuilt it on
``asyncio.timeout``). A swallowed cancellation leaves a task running that its
owner believes stopped; so waits use ``asyncio.timeout``. The daemons' runtime
re-exports these (``deploy.runtime.aio``): the protocol imports nothing of the
project, the project may import the protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` passes; True if it was set."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
        return True
    except TimeoutError:
        return False


async def within(timeout: float, awaitable: Awaitable[T]) -> T:
    """``awaitable`` or ``TimeoutError`` after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        return await awaitable
