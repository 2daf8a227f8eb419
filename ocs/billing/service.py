"""Billing inside an OCS process: its database (migrated at start), its API routes and its
outbox consumer, with one owner (docs/architecture.md, Conventions: lifecycle)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from ocs.billing.api import BillingApi
from ocs.billing.db import open_billing_db
from ocs.billing.feeds import import_dir
from ocs.billing.lineage import lineage_of
from ocs.billing.usage import UsageConsumer, consuming
from ocs.config import Settings
from ocs.store.notify import NotifyStore

log = logging.getLogger("ocs.billing")


@dataclass
class Billing:
    engine: Engine
    api: BillingApi
    consumer: UsageConsumer


#: Seconds between looks at the feeds directory.
FEEDS_POLL: Final = 5.0


async def watch_feeds(engine: Engine, directory: Path, interval: float = FEEDS_POLL) -> None:
    """Import the order and ticket files dropped in ``directory`` as they come."""
    while True:
        try:  # (a directory that is not there yet has no files)
            results = await asyncio.to_thread(import_dir, engine, directory, _clock())
        except (OSError, SQLAlchemyError) as exc:
            log.warning("billing feeds in %s: %s", directory, exc)
        else:
            for name, r in results.items():
                log.info(
                    "billing feed %s: %d stored, %d replays, %d rejected",
                    name,
                    r.stored,
                    r.replays,
                    len(r.rejected),
                )
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def billing_for(settings: Settings, redis_url: str) -> AsyncIterator[Billing]:
    """Open (and migrate) the billing database, consume the outbox into it and import the
    feeds directory's files for as long as the context lasts."""
    engine = await asyncio.to_thread(open_billing_db, settings.billing_url)
    outbox = NotifyStore(redis_url, outbox=True)
    feeds_task = asyncio.create_task(
        watch_feeds(engine, Path(settings.billing_feeds_dir)), name="billing-feeds"
    )
    try:
        consumer = UsageConsumer(outbox, engine, clock=_clock)
        api = BillingApi(
            engine,
            feed_secret=settings.billing_feed_secret,
            warehouse_dir=settings.warehouse_dir,
            lineage=lineage_of(settings),
        )
        async with consuming(consumer):
            yield Billing(engine, api, consumer)
    finally:
        feeds_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeds_task
        await outbox.close()
        await asyncio.to_thread(engine.dispose)


def _clock() -> int:
    import time

    return time.time_ns() // 1_000_000
