"""The route table (ocs.api.routes): every endpoint the app serves is declared once, with the
resource and action the access policy needs."""

from __future__ import annotations

import pytest
from aiohttp import web

from ocs.api.app import create_app
from ocs.api.routes import ROUTES, Route, add_routes
from ocs.charging.tariffs import TariffRegistry
from ocs.metrics import Metrics
from ocs.provisioning.service import Provisioning
from ocs.store.redis_client import PipelinedRedis
from ocs.store.store import Store


def _app(with_provisioning: bool) -> web.Application:
    # The app is only built, never served: nothing here touches the store or provisioning.
    store = object.__new__(Store)
    store.client = object.__new__(PipelinedRedis)
    tariffs = object.__new__(TariffRegistry)
    provisioning = object.__new__(Provisioning) if with_provisioning else None
    return create_app(store, Metrics(), tariffs=tariffs, clock=lambda: 0, provisioning=provisioning)


@pytest.mark.parametrize("with_provisioning", [False, True])
def test_every_route_is_declared(with_provisioning: bool) -> None:
    app = _app(with_provisioning)
    table = app[ROUTES]
    served = {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None and r.method != "HEAD"
    }
    assert served == set(table)
    for route in table.values():
        assert route.resource and route.action in {"read", "write"}
    public = {"/healthz", "/readyz", "/v1/auth/token", "/v1/auth/refresh"}
    if with_provisioning:  # signed by the provisioning system: its own credential
        public.add("/v1/provisioning/callbacks")
    assert {r.path for r in table.values() if r.public} == public


def test_a_route_declared_twice_is_refused() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response()

    app = web.Application()
    add_routes(app, [Route("GET", "/x", handler, "x", "read")])
    with pytest.raises(ValueError, match="declared twice"):
        add_routes(app, [Route("GET", "/x", handler, "x", "read")])
