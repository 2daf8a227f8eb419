"""Billing inside an OCS process: its database (migrated at start), its API routes and its
outbox consumer, with one owner (docs/architecture.md, Conventions: lifecycle)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import Engine

from ocs.billing.api import BillingApi
from ocs.billing.db import open_billing_db
from ocs.billing.usage import UsageConsumer, consuming
from ocs.config import Settings
from ocs.store.notify import NotifyStore


@dataclass
class Billing:
    engine: Engine
    api: BillingApi
    consumer: UsageConsumer


@contextlib.asynccontextmanager
async def billing_for(settings: Settings, redis_url: str) -> AsyncIterator[Billing]:
    """Open (and migrate) the billing database, consume the outbox into it for as long as
    the context lasts."""
    engine = await asyncio.to_thread(open_billing_db, settings.billing_url)
    outbox = NotifyStore(redis_url, outbox=True)
    try:
        consumer = UsageConsumer(outbox, engine, clock=_clock)
        api = BillingApi(engine, feed_secret=settings.billing_feed_secret,
                         warehouse_dir=settings.warehouse_dir)  # fmt: skip
        async with consuming(consumer):
            yield Billing(engine, api, consumer)
    finally:
        await outbox.close()
        await asyncio.to_thread(engine.dispose)


def _clock() -> int:
    import time

    return time.time_ns() // 1_000_000
