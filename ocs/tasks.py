"""Stopping background tasks for sure.

A task is cancelled, then awaited; but on Python 3.11 a cancellation can be lost: redis-py
sends every command under ``asyncio.wait_for(..., socket_timeout)``, and 3.11's ``wait_for``
returns the result instead of raising when the cancellation lands in the loop turn in which
the send completes (CPython gh-86296, fixed by 3.12's rewrite of ``wait_for`` on
``asyncio.timeout``); and one that lands as a read times out can come back as a timeout,
which a consumer's loop takes for "Redis unavailable, try again" (seen with ``RedisCluster``'s
pipelines). A consumer loop (``while True: await redis.xreadgroup(...)``) then runs
on as if nothing happened, and whoever awaits it waits for ever. So: cancel again until it
ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final

#: Seconds between cancellations of a task that has not ended yet.
RECANCEL_EVERY: Final = 0.5


async def cancel_and_wait(task: asyncio.Task[Any], every: float = RECANCEL_EVERY) -> None:
    """Cancel ``task`` (again every ``every`` seconds, until it has ended) and wait for it; an
    error it ends with is raised here, its cancellation is not."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=every)
    with contextlib.suppress(asyncio.CancelledError):
        await task
