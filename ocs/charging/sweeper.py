"""The expiry sweeper: releases reservations whose gateway went silent.

Every script releases a subscriber's expired sessions lazily when it touches the subscriber;
the sweeper does it for subscribers nobody touches, from each bucket's expiry index.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from ocs.constants import BUCKET_COUNT, SWEEP_INTERVAL
from ocs.store.errors import StoreUnavailable
from ocs.store.store import Store

log = logging.getLogger(__name__)


class ExpirySweeper:
    """Owns one background task; ``async with`` starts and stops it."""

    def __init__(
        self,
        store: Store,
        clock: Callable[[], int],
        *,
        interval: float = SWEEP_INTERVAL,
        batch: int = 100,
    ) -> None:
        self.store = store
        self.clock = clock
        self.interval = interval
        self.batch = batch
        self.released = 0
        self._task: asyncio.Task[None] | None = None

    async def sweep_once(self) -> int:
        """One pass over every bucket; returns how many sessions it released."""
        now = self.clock()
        released = 0
        for bucket in range(BUCKET_COUNT):
            while True:
                due = await self.store.due_for_expiry(bucket, now, self.batch)
                for msisdn in due:
                    released += await self.store.expire(msisdn, now)
                if len(due) < self.batch:
                    break
        self.released += released
        return released

    async def _run(self) -> None:
        while True:
            try:
                n = await self.sweep_once()
                if n:
                    log.info("released %d expired reservations", n)
            except StoreUnavailable as exc:
                log.warning("sweeper: %s", exc)
            await asyncio.sleep(self.interval)

    async def __aenter__(self) -> ExpirySweeper:
        self._task = asyncio.create_task(self._run(), name="expiry-sweeper")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
