"""The plans an OCS process rates with, the same in every process.

Shipped plans (tariffs/plans/) and a configured directory are read at start; plans loaded at
run time (``ocs tariffs load``, ``POST /v1/tariffs``) are validated whole, kept in Redis, and
picked up by every process within ``poll_interval`` seconds. A bad file changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from ocs.charging.engine import wall_clock_ms
from ocs.store.errors import StoreUnavailable
from ocs.store.store import Store, ThresholdSpec, UnitBucket
from ocs.tasks import cancel_and_wait
from tariffs import PlanBook, PlanFileError, PlanVersion, TariffRater, UnknownPlan, parse_plan

log = logging.getLogger(__name__)

_DAY_MS = 86_400_000


def bundle_buckets(book: PlanBook, plan: str, now: int) -> list[UnitBucket]:
    """The unit buckets the bundles of ``plan`` (its version in force at ``now``) grant: one
    per bundle, its id the bundle's, expiring ``valid_days`` days from ``now`` (0: never).
    None when the plan has no version in force then."""
    try:
        version = book.at(plan, now)
    except UnknownPlan:
        return []
    return [
        UnitBucket(
            id=b.id,
            service=b.service,
            units=b.units,
            priority=b.priority,
            expires_at=now + b.valid_days * _DAY_MS if b.valid_days else 0,
        )
        for b in version.bundles
    ]


class TariffRegistry:
    """Owns the rater's plan book; ``async with`` keeps it in step with Redis."""

    def __init__(
        self,
        store: Store,
        rater: TariffRater,
        base: Sequence[PlanVersion],
        *,
        poll_interval: float = 2.0,
    ) -> None:
        self.store = store
        self.rater = rater
        self.base = list(base)
        self.poll_interval = poll_interval
        self.revision = -1
        self._published: dict[str, tuple[ThresholdSpec, ...]] | None = None
        self._sources: dict[str, str] = {}
        #: Called with the names of the plans that changed, after each reload.
        self.listeners: list[Callable[[set[str]], None]] = []
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> bool:
        """Reload the plans if another process (or this one) changed them; True if it did."""
        rev = await self.store.plans_revision()
        if rev == self.revision:
            await self.publish_thresholds()
            return False
        book = PlanBook(self.base)
        sources = await self.store.plan_sources()
        for key, text in sorted(sources.items()):
            try:
                book.add(parse_plan(text, f"redis:{key}"))
            except PlanFileError as exc:  # validated when stored: only a newer schema does this
                log.error("stored plan %s does not load: %s", key, exc)
        self.rater.replace_book(book)
        first = self.revision < 0
        self.revision = rev
        # Plans whose stored sources were added, changed or removed ("name@version" keys).
        changed = {k.rpartition("@")[0] for k in set(sources) ^ set(self._sources)} | {
            k.rpartition("@")[0] for k in sources if self._sources.get(k) not in (None, sources[k])
        }
        self._sources = sources
        if changed and not first:
            for listener in self.listeners:
                listener(changed)
        await self.publish_thresholds()
        return True

    def thresholds_now(self, now: int | None = None) -> dict[str, tuple[ThresholdSpec, ...]]:
        """Each plan's balance thresholds in the version in force (now)."""
        t = wall_clock_ms() if now is None else now
        book = self.rater.book
        out: dict[str, tuple[ThresholdSpec, ...]] = {}
        for name in book.names():
            try:
                version = book.at(name, t)
            except UnknownPlan:
                continue
            out[name] = tuple((x.below, x.lift, x.action) for x in version.thresholds)
        return out

    async def publish_thresholds(self) -> None:
        """Give the scripts the thresholds of the plan versions in force, when they changed
        (a new plan, or a version taking effect): the scripts apply them at an account's next
        balance change (docs/barring.md)."""
        specs = self.thresholds_now()
        # (also when Redis lost them: flushed, or restarted without persistence)
        if specs != self._published or not await self.store.thresholds_published(
            sum(1 for t in specs.values() if t)
        ):
            await self.store.publish_thresholds(dict(specs))
            self._published = specs

    async def load(self, text: str, source: str) -> PlanVersion:
        """Validate a plan version and make it live everywhere; PlanFileError if it is bad
        (then nothing changes)."""
        version = parse_plan(text, source)
        await self.store.save_plan(f"{version.name}@{version.version}", text)
        await self.refresh()
        return version

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                if await self.refresh():
                    log.info("tariff plans reloaded (revision %d)", self.revision)
            except StoreUnavailable as exc:
                log.warning("tariff plans: %s", exc)

    async def __aenter__(self) -> TariffRegistry:
        await self.refresh()
        self._task = asyncio.create_task(self._poll(), name="tariff-poll")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            await cancel_and_wait(task)
