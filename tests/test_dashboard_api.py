"""The dashboard's API (docs/dashboard.md): the figures of each level against hand-computed
sums and the billing subsystem's own aggregates, agency scoping (404 outside the caller's
agency, on the figures and on the live feed), bad input as problem+json, the live feed's
server-sent events after balance changes, and the static pages."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import Engine

from ocs.api.app import create_app
from ocs.auth.credentials import AuthConfig, new_api_key
from ocs.auth.http import SECURITY
from ocs.billing import usage
from ocs.billing.api import BillingApi
from ocs.charging.engine import ChargingConfig, ChargingEngine
from ocs.charging.tariffs import TariffRegistry
from ocs.charging.types import Outcome, ReserveRequest
from ocs.metrics import Metrics
from ocs.store.cluster import hot_client
from ocs.store.store import Store
from ocs.ui.api import DashboardApi
from ocs.ui.live import LiveFeed, live_feed
from tariffs import PlanBook, TariffRater, load_plans
from tests.billing_db import NOV_START_MS, build_sample
from tests.contract import contract_trace
from tests.test_agency_scope import add_second_agency

Client = TestClient[web.Request, web.Application]
ADMIN = "test-admin-token"
NOW = 1_796_425_200_000  # 2026-12-05T00:00:00+01:00
DAY = 86_400_000
L1, L2 = "491700000001", "491700000002"

#: Usage of November 2026 (days of the accounts' zone, Europe/Berlin, billing's day rule):
#: (event, msisdn, day of month, service, amount micro).
USAGE = [
    ("e1", L1, 2, "data", 1_250_000),
    ("e2", L1, 2, "voice", 300_000),
    ("e3", L1, 15, "voice", 2_000_001),
    ("e4", L2, 15, "data", 4_000_000),
    ("e5", L2, 30, "sms", 90_000),
]


def add_usage(engine: Engine) -> None:
    """Through billing's ingestion (which keeps the usage rollup the figures read)."""
    usage.store_usage(engine, [
        {"event_id": eid, "msisdn": m, "ts": NOV_START_MS + 3_600_000 + (day - 1) * DAY,
         "kind": "commit", "service": svc, "destination": "", "units": 1, "amount": amount,
         "line_id": None}
        for eid, m, day, svc, amount in USAGE
    ])  # fmt: skip


class App:
    def __init__(self, http: Client, feed: LiveFeed, store: Store, rater: TariffRater) -> None:
        self.http, self.feed, self.store, self.rater = http, feed, store, rater


@pytest.fixture
async def app(redis_url: str, billing_engine: Engine, tmp_path: Path) -> AsyncIterator[App]:
    build_sample(billing_engine)
    add_second_agency(billing_engine)
    add_usage(billing_engine)
    async with hot_client(redis_url) as client:
        store = Store(client, session_ttl_ms=900_000, reference_ttl_ms=86_400_000)
        await client.execute("FLUSHALL")
        plans = load_plans()
        registry = TariffRegistry(store, TariffRater(PlanBook(plans)), plans)
        await registry.refresh()
        for m, bal in ((L1, 10_000_000), (L2, 20_000_000)):
            await store.create_subscriber(
                m, plan="gov-payu", balance=bal, credit_limit=0, state="active", now=NOW
            )
        metrics = Metrics()
        billing = BillingApi(billing_engine, warehouse_dir=tmp_path, clock=lambda: NOW)
        async with live_feed(store, redis_url, billing_engine, metrics, tick=0.2) as feed:
            dash = DashboardApi(billing_engine, store, feed, clock=lambda: NOW)
            api = create_app(store, metrics, tariffs=registry, clock=lambda: NOW,
                             routes=[*billing.routes(), *dash.routes()],
                             auth=AuthConfig(admin_token=ADMIN, secret_key="k" * 64,
                                             fail_limit=10**6))  # fmt: skip
            http: Client = TestClient(TestServer(api), trace_configs=[contract_trace()])
            await http.start_server()
            try:
                async with asyncio.timeout(10):
                    await feed.ready.wait()
                yield App(http, feed, store, registry.rater)
            finally:
                await http.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def get(app: App, path: str, token: str = ADMIN, status: int = 200) -> Any:
    r = await app.http.get(path, headers=bearer(token))
    assert r.status == status, (path, r.status, await r.text())
    return await r.json()


async def viewer(app: App, agency: str) -> str:
    token, record = new_api_key("agency-viewer", agency, now=NOW)
    await app.http.app[SECURITY].store.add_api_key(record)
    return token


async def test_each_level_sums_its_children_and_matches_hand_computed_usage(app: App) -> None:
    nat = await get(app, "/v1/dashboard/national/NAT?period=2026-11")
    assert [c["code"] for c in nat["children"]] == ["R-N", "R-S"]
    assert nat["breadcrumb"] == [{"level": "national", "code": "NAT", "name": "National"}]
    k = nat["kpis"]
    total = sum(u[4] for u in USAGE)
    assert k["micro"]["period_usage"] == total == 7_640_001
    assert k["period_usage"] == "7.640001"  # exact, as a decimal string
    assert k["usage_by_service"]["micro"] == {"data": 5_250_000, "sms": 90_000,
                                              "voice": 2_300_001}  # fmt: skip
    assert (k["accounts"], k["active_lines"], k["open_sessions"], k["barred_lines"]) == (2, 2, 0, 0)
    days = {d["day"]: d["micro"] for d in nat["by_day"]}
    assert len(days) == 30 and days["2026-11-02"] == 1_550_000 and days["2026-11-15"] == 6_000_001
    assert days["2026-11-30"] == 90_000 and sum(days.values()) == total
    children = {c["code"]: c for c in nat["children"]}
    assert children["R-N"]["micro"]["period_usage"] == 3_550_001
    assert children["R-S"]["micro"]["period_usage"] == 4_090_000
    # Drill down: a region's children are its agencies, an agency's its accounts.
    region = await get(app, "/v1/dashboard/region/R-S?period=2026-11")
    assert [c["code"] for c in region["children"]] == ["AG-2"]
    assert [b["code"] for b in region["breadcrumb"]] == ["NAT", "R-S"]
    agency = await get(app, "/v1/dashboard/agency/AG-2?period=2026-11")
    assert [(c["code"], c["lines"]) for c in agency["children"]] == [("ACC-2", 1)]
    account = await get(app, "/v1/dashboard/account/ACC-2?period=2026-11&service=data")
    assert account["kpis"]["usage_by_service"]["micro"] == {"data": 4_000_000}
    assert account["children"] == [] and account["service"] == "data"
    # Another period has no usage.
    oct_ = await get(app, "/v1/dashboard/national/NAT?period=2026-10")
    assert oct_["kpis"]["micro"]["period_usage"] == 0 and len(oct_["by_day"]) == 31


async def test_invoice_figures_are_the_billing_aggregates(app: App) -> None:
    r = await app.http.post("/v1/billing/runs", json={"period": "2026-11"}, headers=bearer(ADMIN))
    assert r.status == 200, await r.text()
    r = await app.http.post(
        "/v1/billing/runs/issue", json={"period": "2026-11", "account": "ACC-1"},
        headers=bearer(ADMIN),
    )  # fmt: skip
    assert r.status == 200, await r.text()
    for level, code in (("national", "NAT"), ("region", "R-N"), ("agency", "AG-2")):
        mine = await get(app, f"/v1/dashboard/{level}/{code}?period=2026-11")
        agg = await get(app, f"/v1/billing/aggregates?level={level}&period=2026-11")
        row = next(i for i in agg["items"] if i["code"] == code)
        for m in ("billed", "drafted", "usage", "lad", "penalties", "pending"):
            assert mine["kpis"]["micro"][m] == row["micro"][m], (level, m)
    nat = await get(app, "/v1/dashboard/national/NAT?period=2026-11")
    inv = await get(app, "/v1/billing/invoices?period=2026-11&account=ACC-1")
    assert nat["children"][0]["micro"]["billed"] == inv["items"][0]["micro"]["total"] > 0
    assert nat["children"][1]["micro"]["billed"] == 0 < nat["children"][1]["micro"]["drafted"]


async def test_an_agency_user_sees_its_own_agency_only(app: App) -> None:
    token = await viewer(app, "AG-1")
    home = await get(app, "/v1/dashboard", token)
    assert home["start"] == [{"level": "agency", "code": "AG-1", "name": "Ministry One"}]
    own = await get(app, "/v1/dashboard/agency/AG-1?period=2026-11", token)
    assert "ACC-2" not in json.dumps(own) and own["kpis"]["requests_per_s"] is None
    assert [b["code"] for b in own["breadcrumb"]] == ["AG-1"]
    await get(app, "/v1/dashboard/account/ACC-1", token)
    lines = await get(app, "/v1/dashboard/accounts/ACC-1/lines", token)
    assert [i["msisdn"] for i in lines["items"]] == [L1]
    for path in ("/v1/dashboard/agency/AG-2", "/v1/dashboard/account/ACC-2",
                 "/v1/dashboard/accounts/ACC-2/lines", "/v1/dashboard/national/NAT",
                 "/v1/dashboard/region/R-N", "/v1/dashboard/account/NOPE"):  # fmt: skip
        body = await get(app, path, token, status=404)
        # The same answer as for an object that does not exist (the detail names the path).
        assert body["type"] == "urn:ocs:problem:billing-not-found", body
    # The admin sees the same objects: the 404s are scoping.
    await get(app, "/v1/dashboard/account/ACC-2")
    # Roles without the dashboard: refused.
    token, record = new_api_key("tariff-manager", None, now=NOW)
    await app.http.app[SECURITY].store.add_api_key(record)
    await get(app, "/v1/dashboard/national/NAT", token, status=403)
    r = await app.http.get("/v1/dashboard/national/NAT")
    assert r.status == 401


#: The API paths the pages call (every ``/v1/...`` template in app.js), and what fills them.
APP_JS = Path(__file__).parent.parent / "ocs" / "ui" / "static" / "app.js"
PAGE_CALL = re.compile(r"`(/v1/[^`?]*)")
PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")


async def test_an_operator_reads_everything_the_pages_show_and_changes_no_bill(app: App) -> None:
    """The operations dashboard's billing figures (billed, pending, LAD and penalty credits,
    invoices, their PDF and evidence) for the operator role, read only (docs/security.md)."""
    r = await app.http.post("/v1/billing/runs", json={"period": "2026-11"}, headers=bearer(ADMIN))
    assert r.status == 200, await r.text()
    r = await app.http.post("/v1/billing/runs/issue", json={"period": "2026-11", "account":
                            "ACC-1"}, headers=bearer(ADMIN))  # fmt: skip
    assert r.status == 200, await r.text()
    (number,) = [i["number"] for i in (await get(app, "/v1/billing/invoices?account=ACC-1"))[
        "items"]]  # fmt: skip
    token, record = new_api_key("operator", None, now=NOW)
    await app.http.app[SECURITY].store.add_api_key(record)
    nat = await get(app, "/v1/dashboard/national/NAT?period=2026-11", token)
    assert (
        nat["kpis"]["micro"]["billed"] > 0 and "lad" in nat["kpis"] and "penalties" in nat["kpis"]
    )
    agg = await get(app, "/v1/billing/aggregates?level=national&period=2026-11", token)
    assert agg["items"][0]["micro"]["billed"] == nat["kpis"]["micro"]["billed"]
    # What each placeholder of the templates stands for (a new one fails here: add it).
    values = {"level()": "account", "encodeURIComponent(code())": "ACC-1", "c()": "ACC-1",
              "encodeURIComponent(i.number || i.id)": number,
              "encodeURIComponent(ref_)": number, "l.seq": "1"}  # fmt: skip
    calls = sorted(set(PAGE_CALL.findall(APP_JS.read_text(encoding="utf-8"))))
    billing = [c for c in calls if c.startswith("/v1/billing/")]
    assert len(billing) >= 5, calls  # account, pending, invoices, invoice, explain, pdf
    for template in calls:
        if template.startswith("/v1/auth/"):
            continue
        unknown = [p for p in PLACEHOLDER.findall(template) if p not in values]
        assert not unknown, (template, unknown)
        path = PLACEHOLDER.sub(lambda m: values[m[1]], template)
        r = await app.http.get(path, headers=bearer(token))
        assert r.status == 200, (template, path, r.status, await r.text())
        await r.read()
    # Nothing that makes or changes a bill.
    for method, path, body in (
        ("POST", "/v1/billing/runs", {"period": "2026-11"}),
        ("POST", "/v1/billing/runs/issue", {"period": "2026-11"}),
        ("POST", f"/v1/billing/invoices/{number}/notes",
         {"kind": "credit", "reason": "x", "lines": [{"description": "x", "amount": "1.00"}]}),
        ("PUT", "/v1/billing/accounts/ACC-1/contract", {"start_date": "2026-11-01"}),
        ("PATCH", "/v1/billing/accounts/ACC-1", {"name": "x"}),
    ):  # fmt: skip
        r = await app.http.request(method, path, json=body, headers=bearer(token))
        assert r.status == 403, (method, path, r.status, await r.text())


@pytest.mark.parametrize(
    "query", ["period=2026-13", "period=26-11", "period=x" * 5, "service=DROP%20TABLE"]
)
async def test_bad_filters_are_problems(app: App, query: str) -> None:
    r = await app.http.get(f"/v1/dashboard/national/NAT?{query}", headers=bearer(ADMIN))
    assert r.status == 422, await r.text()
    assert r.content_type == "application/problem+json"


async def read_events(resp: Any, until: Any, limit: float = 10.0) -> dict[str, Any]:
    """The first ``figures`` event for which ``until(data)`` holds."""
    async with asyncio.timeout(limit):
        while True:
            line = (await resp.content.readline()).decode()
            if line.startswith("data: "):
                data: dict[str, Any] = json.loads(line[6:])
                if until(data):
                    return data


async def test_the_live_feed_sends_changed_figures_to_every_listener(app: App) -> None:
    token = await viewer(app, "AG-1")
    admin = await app.http.get("/v1/dashboard/live", headers=bearer(ADMIN))
    scoped = await app.http.get("/v1/dashboard/live", headers=bearer(token))
    assert admin.status == scoped.status == 200
    assert admin.content_type == "text/event-stream"
    for resp in (admin, scoped):  # each is a listener from its first comment on
        async with asyncio.timeout(10):
            assert (await resp.content.readline()) == b": live\n"
    assert len(app.feed.listeners) == 2
    engine = ChargingEngine(app.store, app.rater, ChargingConfig(validity=60, grace=10),
                            clock=lambda: NOW)  # fmt: skip
    r = await engine.reserve(ReserveRequest("s-1", L2, "voice", "k1", units=600))
    assert r.outcome == Outcome.SUCCESS, r
    account = await app.store.get_account(L2)
    assert account is not None
    held = account.sessions[0].held_money
    assert held > 0
    msg = await read_events(admin, lambda d: "account:ACC-2" in d["units"])
    assert msg["units"]["account:ACC-2"]["held"] == held
    assert msg["units"]["national:NAT"] == {"held": held, "sessions": 1, "barred": 0, "lines": 2}
    assert msg["lines"][L2]["sessions"] == 1
    nat = await get(app, "/v1/dashboard/national/NAT?period=2026-11")
    assert (nat["kpis"]["micro"]["held"], nat["kpis"]["open_sessions"]) == (held, 1)
    # The account page's session: its times as the API writes times (ISO 8601 UTC, ms), the
    # same as the subscriber's own answer gives for the same session.
    lines = await get(app, "/v1/dashboard/accounts/ACC-2/lines")
    (shown,) = next(i for i in lines["items"] if i["msisdn"] == L2)["sessions"]
    assert shown["started_at"] == "2026-12-04T23:00:00.000Z"
    (core,) = (await get(app, f"/v1/subscribers/{L2}"))["sessions"]
    assert (shown["started_at"], shown["expires_at"]) == (core["started_at"], core["expires_at"])
    # The AG-1 listener is sent nothing of AG-2's change; it sees its own.
    await app.store.credit(L1, kind="topup", amount=1_000_000, reference="t1", note="", now=NOW)
    mine = await read_events(scoped, lambda d: bool(d["units"]))
    assert set(mine["units"]) == {"agency:AG-1", "account:ACC-1"}
    assert set(mine["lines"]) == {L1} and mine["requests"] is None
    admin.close()
    scoped.close()


async def test_the_pages_are_served_and_every_view_path_is_the_app(app: App) -> None:
    for path in ("/ui/", "/ui/national/NAT", "/ui/account/ACC-1?period=2026-11", "/ui/login"):
        r = await app.http.get(path)
        assert r.status == 200, path
        text = await r.text()
        assert '<script type="importmap">' in text and "/ui/app.js" in text
    r = await app.http.get("/ui", allow_redirects=False)
    assert r.status == 302 and r.headers["Location"] == "/ui/"
    for asset, ctype in (("app.js", "text/javascript"), ("style.css", "text/css"),
                         ("vendor/vue/vue.esm-browser.prod.js", "text/javascript"),
                         ("vendor/echarts/echarts.esm.min.mjs", "text/javascript")):  # fmt: skip
        r = await app.http.get(f"/ui/{asset}")
        assert r.status == 200 and r.content_type == ctype, asset
    for bad in ("/ui/nope.js", "/ui/..%2F..%2Fpyproject.toml", "/ui/vendor/../../api.py"):
        r = await app.http.get(bad)
        assert r.status == 404, bad
