"""Stopping background tasks for sure, and running one piece of work at a time for many callers.

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
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Final

__all__ = ["RECANCEL_EVERY", "SingleFlight", "cancel_all_and_wait", "cancel_and_wait"]

#: Seconds between cancellations of a task that has not ended yet.
RECANCEL_EVERY: Final = 0.5


async def cancel_and_wait(task: asyncio.Task[Any], every: float = RECANCEL_EVERY) -> None:
    """Cancel ``task`` (again every ``every`` seconds, until it has ended) and wait for it; an
    error it ends with is raised here, its cancellation is not. See :func:`cancel_all_and_wait`
    for a cancellation of the caller meanwhile."""
    await cancel_all_and_wait((task,), every)


async def cancel_all_and_wait(
    tasks: Iterable[asyncio.Task[Any]], every: float = RECANCEL_EVERY
) -> None:
    """Cancel every task of ``tasks`` (again every ``every`` seconds, until each has ended) and
    wait for them all. The first error one ended with (in the given order) is raised here,
    their cancellations are not.

    A cancellation of the caller while it waits does not cut the wait short: the tasks are
    still cancelled and awaited, then the caller's cancellation is raised. So no task is left
    pending behind a shutdown ("Task was destroyed but it is pending"), and a cleanup that is
    itself cancelled again (as this function does to what it stops) still ends its children.
    """
    tasks = list(tasks)
    pending = {t for t in tasks if not t.done()}
    interrupted = False
    while pending:
        for t in pending:
            t.cancel()
        try:
            _, pending = await asyncio.wait(pending, timeout=every)
        except asyncio.CancelledError:
            interrupted = True  # (the tasks first; the caller's cancellation after)
    # (every error retrieved, so none is logged as "never retrieved" later)
    errors = [e for t in tasks if not t.cancelled() and (e := t.exception()) is not None]
    if interrupted:
        raise asyncio.CancelledError
    if errors:
        raise errors[0]


class SingleFlight:
    """Runs ``work`` at most once at a time: callers arriving while it runs await the same run
    (a script load after NOSCRIPT, a cluster's slot map refresh). The run is shielded: a
    caller's cancellation stops that caller's wait, not the work the others wait for. An error
    reaches every caller then waiting, and ``on_error`` (a run started with :meth:`start` may
    have no caller).
    """

    def __init__(
        self,
        work: Callable[[], Coroutine[Any, Any, None]],
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._work = work
        self._on_error = on_error
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> asyncio.Task[None]:
        """The run in progress, or a new one (in the background)."""
        task = self._task
        if task is None:
            task = asyncio.get_running_loop().create_task(self._work())
            self._task = task
            task.add_done_callback(self._done)
        return task

    async def __call__(self) -> None:
        """Join the run in progress, or start one, and wait for it to end."""
        await asyncio.shield(self.start())

    async def stop(self) -> None:
        """Cancel the run in progress, if any, and wait for it (its error went to
        ``on_error``)."""
        task = self._task
        if task is not None:
            with contextlib.suppress(Exception):
                await cancel_and_wait(task)

    def _done(self, task: asyncio.Task[None]) -> None:
        if self._task is task:
            self._task = None
        if not task.cancelled():
            exc = task.exception()  # (retrieved, so never logged as "never retrieved")
            if exc is not None and self._on_error is not None:
                self._on_error(exc)
