"""Background passes over accounts nobody touches: the expiry sweeper releases reservations
whose gateway went silent; the threshold catch-up applies newly published balance thresholds.

Every script releases a subscriber's expired sessions, and applies new thresholds, lazily when
it touches the subscriber; these do it for subscribers nobody touches: the sweeper from each
bucket's expiry index, the catch-up over every account once per change of the thresholds.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Final, Self

from ocs.constants import BUCKET_COUNT, SWEEP_INTERVAL
from ocs.logs import redis_lost
from ocs.store.errors import StoreUnavailable
from ocs.store.store import Store
from ocs.tasks import cancel_and_wait

log = logging.getLogger(__name__)

#: Seconds a process's claim on a generation's threshold pass lasts (another process takes
#: the pass over if this one died in the middle of it, after this long).
CLAIM_TTL: Final = 600
#: Seconds the record that a generation's pass is done is kept.
DONE_TTL: Final = 30 * 86_400


class Periodic:
    """A background pass run every ``interval`` seconds: owns one task, which ``async with``
    starts and stops. Redis being away is logged and the pass tried again next time."""

    name = "pass"
    interval: float
    _task: asyncio.Task[None] | None = None

    async def step(self) -> None:
        raise NotImplementedError

    async def _run(self) -> None:
        while True:
            try:
                await self.step()
            except StoreUnavailable as exc:
                redis_lost(log, self.name, exc)
            await asyncio.sleep(self.interval)

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name=self.name)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            await cancel_and_wait(task)


class ExpirySweeper(Periodic):
    """Releases the sessions whose hold time has passed, from each bucket's expiry index."""

    name = "expiry-sweeper"

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

    async def step(self) -> None:
        n = await self.sweep_once()
        if n:
            log.info("released %d expired reservations", n)


class ThresholdCatchUp(Periodic):
    """Brings idle accounts up to date after the published thresholds change (a plan's new
    version, loaded or taking effect): an account applies them at its next request of any
    kind, and this pass makes that happen for every account within a bounded time, whether
    it makes requests or not (docs/barring.md). One process per generation of thresholds
    does the pass (a claim in Redis); the others see the claim and skip it.

    ``interval`` is how often it looks for a new generation; a pass then takes about
    accounts / ``page`` round trips.
    """

    name = "threshold-catch-up"

    def __init__(
        self,
        store: Store,
        clock: Callable[[], int],
        *,
        interval: float = SWEEP_INTERVAL,
        page: int = 500,
        owner: str = "",
    ) -> None:
        self.store = store
        self.clock = clock
        self.interval = interval
        self.page = page
        self.owner = owner or f"{os.getpid()}:{id(self):x}"
        #: The generation the last pass (here or elsewhere) brought the accounts to.
        self.done_generation = ""
        self.passes = 0

    async def catch_up(self) -> int:
        """If the thresholds changed since the last pass and no other process has taken
        this generation: one pass over every account; how many accounts it visited."""
        generation = self.store.thresholds_generation
        if generation == self.done_generation:
            return 0
        holder = await self.store.claim_thresholds_pass(self.owner, CLAIM_TTL)
        if holder != "mine":
            if holder == "done":
                self.done_generation = generation
            return 0  # (another process is at it: if it dies, its claim runs out)
        visited, cursor = 0, 0
        while True:
            cursor, batch = await self.store.list_subscribers(cursor, self.page)
            now = self.clock()
            # (one write for the page: the client sends a loop turn's commands together)
            await asyncio.gather(*(self.store.expire(m, now) for m in batch))
            visited += len(batch)
            if cursor == 0:
                break
        await self.store.thresholds_pass_done(DONE_TTL)
        self.done_generation = generation
        self.passes += 1
        log.info("thresholds %s applied to %d accounts", generation, visited)
        return visited

    async def step(self) -> None:
        await self.catch_up()
