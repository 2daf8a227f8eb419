"""Per-agency scoping, generated from the route table (docs/security.md): an agency user
(agency-viewer of AG-1, through the real authentication middleware and an API key) gets, on
every route the policy lets it read (billing's and the dashboard's), its own agency's objects
and a 404 for every object of another agency (AG-2), and no list shows it anything of AG-2.
A route with a level parameter is tried at each level an agency owns (agency, account), and
the levels above it (national, region: their sums include other agencies) are a 404 even for
its own region. A new agency-readable route whose path parameter this test cannot fill fails
here until it is added to OWN_OTHER."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import Engine

from ocs.api.app import create_app
from ocs.api.routes import ROUTES, Route
from ocs.auth.credentials import AuthConfig, new_api_key
from ocs.auth.http import SECURITY
from ocs.auth.policy import load_policy
from ocs.billing import feeds
from ocs.billing import model as M
from ocs.billing.api import BillingApi
from ocs.charging.tariffs import TariffRegistry
from ocs.metrics import Metrics
from ocs.store.cluster import hot_client
from ocs.store.store import Store
from ocs.ui.api import DashboardApi
from ocs.ui.live import live_feed
from tariffs import PlanBook, TariffRater, load_plans
from tests.billing_db import build_sample
from tests.contract import contract_trace

Client = TestClient[web.Request, web.Application]
ADMIN = "test-admin-token"
NOW = 1_796_425_200_000  # 2026-12-05T00:00:00+01:00
POLICY = load_policy()
ROLE, OWN = "agency-viewer", "AG-1"

#: Each path parameter of an agency-readable route: (own agency's value, another agency's).
#: Parameters that are not objects (a level, a feed kind) have one value for both.
OWN_OTHER: dict[str, tuple[str, str]] = {
    "level": ("agency", "agency"),
    "code": ("ACC-1", "ACC-2"),  # accounts; for /hierarchy/agency/{code}: see _values
    "msisdn": ("491700000001", "491700000002"),
    "service": ("L-1", "L-2"),
    "feed": ("orders", "orders"),
    "id": ("O-1", "O-2"),
    "ref": ("", ""),  # the invoices' numbers, known once issued: see _values
    "seq": ("1", "1"),
}
#: What must never appear in an AG-1 caller's answer.
OTHERS = ("AG-2", "ACC-2", "491700000002", "L-2", "O-2", "T-2")


def add_second_agency(engine: Engine) -> None:
    """AG-2 (in its own region) with account ACC-2, its line and a leased line L-2, and one
    order and one ticket per agency."""
    with engine.begin() as c:
        M.create_org(c, "region", {"code": "R-S", "name": "South", "parent": "NAT"})
        M.create_org(c, "agency", {"code": "AG-2", "name": "Ministry Two", "parent": "R-S"})
        account = {"code": "ACC-2", "name": "Ministry Two HQ", "agency": "AG-2",
                   "tax_profile": "VAT19", "timezone": "Europe/Berlin"}  # fmt: skip
        M.create_account(c, account, None)
        M.assign_line(c, "ACC-2", {"msisdn": "491700000002", "valid_from": 1_790_805_600_000},
                      None)  # fmt: skip
        M.put_service(c, "ACC-2", "L-2", {"description": "Leased line L-2",
                                          "monthly_charge": "150.00", "charging": "arrears",
                                          "start_date": "2026-11-01", "sla_tier": "silver"},
                      None)  # fmt: skip
        M.put_contract(c, "ACC-2", {"start_date": "2026-11-01", "end_date": "2027-11-01"}, None)
    for n, account in ((1, "ACC-1"), (2, "ACC-2")):
        feeds.accept_batch(engine, "orders", [{
            "order_id": f"O-{n}", "version": 1, "service_id": f"L-{n}", "account": account,
            "ordered_at": "2026-10-01T10:00:00+02:00",
            "committed_at": "2026-11-10T12:00:00+01:00", "status": "open",
        }], NOW)  # fmt: skip
        feeds.accept_batch(engine, "tickets", [{
            "ticket_id": f"T-{n}", "version": 1, "service_id": f"L-{n}",
            "fault_start": "2026-11-20T10:00:00+01:00",
            "restored_at": "2026-11-20T12:00:00+01:00", "cause": "fibre cut",
        }], NOW)  # fmt: skip


@pytest.fixture
async def api(redis_url: str, billing_engine: Engine, tmp_path: Path) -> AsyncIterator[Client]:
    build_sample(billing_engine)
    add_second_agency(billing_engine)
    async with hot_client(redis_url) as client:
        store = Store(client, session_ttl_ms=900_000, reference_ttl_ms=86_400_000)
        plans = load_plans()
        registry = TariffRegistry(store, TariffRater(PlanBook(plans)), plans)
        await registry.refresh()
        billing = BillingApi(billing_engine, feed_secret="s" * 32, warehouse_dir=tmp_path,
                             clock=lambda: NOW)  # fmt: skip
        metrics = Metrics()
        async with live_feed(store, redis_url, billing_engine, metrics, tick=0.1) as feed:
            dashboard = DashboardApi(billing_engine, store, feed, clock=lambda: NOW)
            app = create_app(store, metrics, tariffs=registry, clock=lambda: NOW,
                             routes=[*billing.routes(), *dashboard.routes()],
                             auth=AuthConfig(admin_token=ADMIN, secret_key="k" * 64,
                                             fail_limit=10**6))  # fmt: skip
            http: Client = TestClient(TestServer(app), trace_configs=[contract_trace()])
            await http.start_server()
            try:
                yield http
            finally:
                await http.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


PARAM = re.compile(r"\{(\w+)(?::([^}]*))?\}")
#: The levels an agency's user owns a unit of, with (own, other) codes; and the levels above,
#: with AG-1's own units there (a 404 too: their figures sum other agencies').
OWNED_LEVELS = {"agency": ("AG-1", "AG-2"), "account": ("ACC-1", "ACC-2")}
ABOVE_LEVELS = {"national": "NAT", "region": "R-N"}


def _levels(route: Route) -> list[str]:
    """The values of the route's ``level`` parameter (its alternatives), or [""] if none."""
    for name, pattern in PARAM.findall(route.path):
        if name == "level":
            return (pattern or "").split("|")
    return [""]


def _values(route: Route, invoices: dict[str, str]) -> list[tuple[str, str]]:
    """``route``'s path filled with AG-1's objects, and with AG-2's: at each level an agency
    owns, for a route with a level (the feeds' records: once with orders, once with tickets)."""
    kinds = [("orders", "O"), ("tickets", "T")] if "{feed" in route.path else [("", "")]
    # A list at a level (no code) is tried at every level: it lists AG-1's units only.
    by_code = "{code}" in route.path
    levels = [lv for lv in _levels(route) if lv in OWNED_LEVELS or lv == "" or not by_code]
    assert levels, f"{route.path}: no level an agency owns"
    out = []
    for level in levels:
        for feed, prefix in kinds:
            own, other = route.path, route.path
            for name, _pattern in PARAM.findall(route.path):
                assert name in OWN_OTHER, f"{route.path}: add {name!r} to OWN_OTHER"
                mine, theirs = OWN_OTHER[name]
                if name == "level":
                    mine = theirs = level
                elif name == "code" and level in OWNED_LEVELS:
                    mine, theirs = OWNED_LEVELS[level]
                elif name == "ref":
                    mine, theirs = invoices["ACC-1"], invoices["ACC-2"]
                elif name == "feed":
                    mine = theirs = feed
                elif name == "id" and feed:
                    mine, theirs = f"{prefix}-1", f"{prefix}-2"
                own = PARAM.sub(mine, own, count=1)
                other = PARAM.sub(theirs, other, count=1)
            out.append((own, other))
    return out


def _above(route: Route) -> list[str]:
    """``route``'s path at the levels above an agency, with AG-1's own units there (routes
    that name a unit by its code)."""
    out = []
    for level in _levels(route) if "{code}" in route.path else []:
        if level in ABOVE_LEVELS:
            path = route.path
            for name, _pattern in PARAM.findall(route.path):
                value = {"level": level, "code": ABOVE_LEVELS[level]}.get(name)
                assert value is not None, f"{route.path}: {name!r} at level {level}"
                path = PARAM.sub(value, path, count=1)
            out.append(path)
    return out


async def _get_or_listen(api: Client, method: str, path: str, headers: dict[str, str],
                         ) -> tuple[int, str, str]:  # fmt: skip
    """Status, content type and body; for a stream of server-sent events, its first event."""
    resp = await api.request(method, path, headers=headers, json={})
    if resp.content_type != "text/event-stream":
        return resp.status, resp.content_type, (await resp.read()).decode("utf-8", "replace")
    text = ""
    async with asyncio.timeout(10):
        while "data: " not in text:
            text += (await resp.content.readuntil(b"\n\n")).decode()
    resp.close()
    return resp.status, resp.content_type, text.split("data: ", 1)[1]


async def test_an_agency_user_sees_its_agency_only_on_every_route(api: Client) -> None:
    admin = bearer(ADMIN)
    r = await api.post("/v1/billing/runs", json={"period": "2026-11"}, headers=admin)
    assert sorted((await r.json())["drafted"]) == ["ACC-1", "ACC-2"], await r.text()
    r = await api.post("/v1/billing/runs/issue", json={"period": "2026-11"}, headers=admin)
    assert r.status == 200, await r.text()
    r = await api.get("/v1/billing/invoices?period=2026-11", headers=admin)
    invoices = {i["account"]: i["number"] for i in (await r.json())["items"]}
    assert set(invoices) == {"ACC-1", "ACC-2"}

    token, record = new_api_key(ROLE, OWN, now=NOW)
    await api.app[SECURITY].store.add_api_key(record)
    viewer = bearer(token)
    visible = [
        route for route in api.app[ROUTES].values()
        if not route.public and POLICY.decide(ROLE, OWN, route.resource, route.action)
    ]  # fmt: skip
    assert visible, "the agency role reads nothing?"
    objects = lists = 0
    pairs = [(route, own, other) for route in visible for own, other in _values(route, invoices)]
    assert {r.resource for r in visible} >= {"dashboard", "billing.invoices"}, visible
    for route, own, other in pairs:
        query = "?period=2026-11" if route.path.endswith("/aggregates") else ""
        status, ctype, text = await _get_or_listen(api, route.method, own + query, viewer)
        assert 200 <= status < 300, (route.method, own, status, text)
        if route.method == "GET" and ctype in ("application/json", "text/event-stream"):
            leaked = [o for o in OTHERS if o in text]
            assert not leaked, (route.path, leaked, text)
        if own == other:
            lists += 1
            continue
        resp = await api.request(route.method, other + query, headers=viewer, json={})
        assert resp.status == 404, (route.method, other, resp.status, await resp.text())
        assert resp.content_type == "application/problem+json"
        body: dict[str, Any] = await resp.json()
        assert not [o for o in OTHERS if o in body.get("title", "")]
        objects += 1
    assert objects >= 8 and lists >= 3, (objects, lists)
    # Above its agency: its own region and the national level are not its to read either.
    above = [(route, path) for route in visible for path in _above(route)]
    assert {p for _, p in above} >= {"/v1/dashboard/national/NAT", "/v1/dashboard/region/R-N"}
    for route, path in above:
        resp = await api.request(route.method, path, headers=viewer, json={})
        assert resp.status == 404, (route.method, path, resp.status, await resp.text())
        assert resp.content_type == "application/problem+json"
        resp = await api.request(route.method, path, headers=admin, json={})
        assert resp.status == 200, (path, await resp.text())
    # The same other-agency objects exist: the admin sees them (so a 404 above is scoping).
    for route, own, other in pairs:
        if other != own:
            resp = await api.request(route.method, other, headers=admin, json={})
            assert resp.status == 200, (other, await resp.text())
