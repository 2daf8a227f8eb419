"""The operators' HTTP API: subscribers, their balances and events, tariff plans and what-if
prices, health and metrics.

Every route is a thin translation: parse and check the request (each bad field is named in a
422 problem, nothing reaches the store), call one :class:`~ocs.store.store.Store` method with
the injected clock's ``now``, and render the answer. Money leaves as decimal strings
("12.50", see :func:`ocs.money.format_money`), never as numbers. Errors are RFC 9457 problem
documents (:mod:`ocs.api.problems`). See docs/api.md for the contract.

One module per route family, each with its ``ROUTES`` (:class:`ocs.api.routes.Route`):
:mod:`ocs.api.subscribers`, :mod:`ocs.api.rating`, :mod:`ocs.api.tariffs`,
:mod:`ocs.api.health`, :mod:`ocs.api.provisioning`; what they share is in
:mod:`ocs.api.context` (the app keys), :mod:`ocs.api.request` (reading requests),
:mod:`ocs.api.render` (showing objects) and :mod:`ocs.api.middleware` (errors and metrics).
This module assembles them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

from aiohttp import web

from ocs.api import health, rating, subscribers
from ocs.api import provisioning as provisioning_api
from ocs.api import tariffs as tariffs_api
from ocs.api.context import BODY_TIMEOUT, CLOCK, METRICS, PROVISIONING, STORE, TARIFFS, Clock
from ocs.api.middleware import errors_and_metrics
from ocs.api.rating import MAX_RATED_SECONDS, rating_answer
from ocs.api.render import account_json, iso_time
from ocs.api.request import MAX_BODY
from ocs.api.routes import Route, add_routes
from ocs.auth.credentials import AuthConfig
from ocs.auth.http import SECURITY, Security
from ocs.charging.tariffs import TariffRegistry
from ocs.constants import HTTP_BODY_TIMEOUT
from ocs.metrics import Metrics
from ocs.provisioning.service import Provisioning
from ocs.store.security import SecurityStore
from ocs.store.store import Store

__all__ = [
    "CLOCK",
    "MAX_RATED_SECONDS",
    "METRICS",
    "STORE",
    "TARIFFS",
    "Clock",
    "account_json",
    "create_app",
    "iso_time",
    "rating_answer",
]

#: Every endpoint of the core API with the resource and action it needs (ocs.api.routes).
CORE_ROUTES: Final[tuple[Route, ...]] = (
    *subscribers.ROUTES,
    *rating.ROUTES,
    *tariffs_api.ROUTES,
    *health.ROUTES,
)


def create_app(
    store: Store,
    metrics: Metrics,
    *,
    tariffs: TariffRegistry,
    clock: Callable[[], int],
    provisioning: Provisioning | None = None,
    body_timeout: float = HTTP_BODY_TIMEOUT,
    routes: Iterable[Route] = (),
    auth: AuthConfig | None = None,
) -> web.Application:
    """The HTTP API over ``store``.

    Args:
        store: the balance store (its owner opens and closes its Redis client).
        metrics: where requests are counted; also served at ``/metrics``.
        tariffs: the plans (its owner keeps them in step with Redis); the known plans are
            asked of it on each request, so reloaded tariffs apply at once.
        clock: Unix milliseconds now, passed as ``now`` to every store call and the default
            time of a rating.
        body_timeout: seconds a request body may take to arrive (408 after).
        provisioning: the provisioning system; its routes exist only when it is given.
        routes: more endpoints, declared by the subsystems that serve them.
        auth: authentication settings (ocs.auth); by default no bootstrap token: only the
            API keys and users kept in the store's Redis get in.
    """
    security = Security(SecurityStore(store.client), auth or AuthConfig(), metrics, clock)
    security.snapshots["subscribers"] = subscribers.subscriber_snapshot
    # Security outermost: it sees every answer as the client will (problems included).
    app = web.Application(
        middlewares=[security.middleware, errors_and_metrics], client_max_size=MAX_BODY
    )
    app[SECURITY] = security
    app[STORE] = store
    app[METRICS] = metrics
    app[CLOCK] = clock
    app[BODY_TIMEOUT] = body_timeout
    app[TARIFFS] = tariffs
    add_routes(app, CORE_ROUTES)
    add_routes(app, security.routes())
    if provisioning is not None:
        app[PROVISIONING] = provisioning
        add_routes(app, provisioning_api.ROUTES)
    add_routes(app, routes)
    return app
