"""The dashboard inside an OCS process: its live feed (one reader for the process) and its
routes, with one owner (docs/architecture.md, Conventions: lifecycle)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from ocs.api.routes import Route
from ocs.billing.service import Billing
from ocs.metrics import Metrics
from ocs.store.store import Store
from ocs.ui.api import DashboardApi
from ocs.ui.live import live_feed


@contextlib.asynccontextmanager
async def dashboard_for(
    billing: Billing, store: Store, redis_url: str, metrics: Metrics
) -> AsyncIterator[list[Route]]:
    """The dashboard's routes, its live feed reading for as long as the context lasts."""
    async with live_feed(store, redis_url, billing.engine, metrics) as feed:
        yield DashboardApi(billing.engine, store, feed).routes()
