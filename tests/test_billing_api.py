"""``/v1/billing/...`` through real HTTP (aiohttp's test server): CRUD, feeds' signed
webhooks, runs, invoices (JSON, CSV, PDF judged by pdftotext where installed), explain,
notes, pending, aggregates, problem+json, and per-agency scoping."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import warnings
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.typedefs import Handler
from secure import AUTH, SECURE
from sqlalchemy import Engine

from ocs.api.openapi import ROUTES_OF_CONTRACT
from ocs.api.routes import CALLER, Caller, add_routes
from ocs.billing.api import BillingApi
from ocs.provisioning.signing import sign
from tests.billing_db import build_sample
from tests.contract import contract_trace

Client = TestClient[web.Request, web.Application]
SECRET = "feed-secret"
NOW = 1_796_425_200_000  # 2026-12-05T00:00:00+01:00


@web.middleware
async def fake_caller(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Stands in for the authentication middleware: X-Test-Agency makes an agency-scoped
    caller."""
    agency = request.headers.get("X-Test-Agency")
    if agency:
        # (ocs.api.routes.CALLER is a str key, which aiohttp 3.14 warns about)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", web.NotAppKeyWarning)
            request[CALLER] = Caller("user:t", "agency-viewer", agency)
    return await handler(request)


@pytest.fixture
async def api(billing_engine: Engine, tmp_path: Any) -> AsyncIterator[Client]:
    build_sample(billing_engine)
    app = web.Application(middlewares=[fake_caller])
    add_routes(
        app,
        BillingApi(
            billing_engine, feed_secret=SECRET, warehouse_dir=tmp_path, clock=lambda: NOW
        ).routes(),
    )
    add_routes(app, ROUTES_OF_CONTRACT)  # (the contract the answers are checked against)
    client: Client = TestClient(TestServer(app), trace_configs=[contract_trace()])
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


def pdf_text(path: Any) -> str:
    """The PDF's text as poppler's pdftotext reads it (an independent reader)."""
    return subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True, text=True
    ).stdout


async def problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    body: dict[str, Any] = await resp.json()
    assert body["status"] == status
    return body


def test_every_route_declares_a_billing_resource(billing_engine: Engine) -> None:
    routes = BillingApi(billing_engine).routes()
    assert routes
    for r in routes:
        assert r.path.startswith("/v1/billing/")
        assert r.resource.startswith("billing.")
        assert r.action == ("read" if r.method == "GET" else "write")
        assert not r.public


async def test_hierarchy_crud(api: Client) -> None:
    r = await api.post(
        "/v1/billing/hierarchy/agency",
        json={"code": "AG-2", "name": "Ministry Two", "parent": "R-N"},
    )
    assert r.status == 201
    r = await api.get("/v1/billing/hierarchy/agency")
    assert [a["code"] for a in (await r.json())["items"]] == ["AG-1", "AG-2"]
    r = await api.patch("/v1/billing/hierarchy/agency/AG-2", json={"name": "Ministry 2"})
    assert (await r.json())["name"] == "Ministry 2"
    dup = {"code": "AG-2", "name": "x", "parent": "R-N"}
    await problem(await api.post("/v1/billing/hierarchy/agency", json=dup), 409)
    body = await problem(
        await api.post(
            "/v1/billing/hierarchy/agency", json={"code": "AG-3", "name": "x", "parent": "NOPE"}
        ),
        422,
    )
    assert body["field"] == "parent"
    await problem(await api.delete("/v1/billing/hierarchy/region/R-N"), 409)  # units below
    assert (await api.delete("/v1/billing/hierarchy/agency/AG-2")).status == 204
    r = await api.post(
        "/v1/billing/accounts",
        json={"code": "ACC-2", "name": "Second", "agency": "AG-1", "tax_profile": "VAT19"},
    )
    assert r.status == 201
    r = await api.post(
        "/v1/billing/accounts/ACC-2/lines", json={"msisdn": "491700000009", "valid_from": 0}
    )
    assert r.status == 201
    r = await api.put(
        "/v1/billing/accounts/ACC-2/services/VPN-9",
        json={
            "description": "VPN",
            "monthly_charge": "99.99",
            "start_date": "2026-11-01",
            "sla_tier": "gold",
            "charging": "advance",
        },
    )
    assert (await r.json())["sla_target"] == "99.99"
    bad = {"description": "VPN", "monthly_charge": 99.99, "start_date": "2026-13-01"}
    body = await problem(await api.put("/v1/billing/accounts/ACC-2/services/VPN-8", json=bad), 422)
    assert {e["field"] for e in body["errors"]} == {"monthly_charge", "start_date"}
    lad = {
        "rate_kind": "percent",
        "rate_percent": "1.5",
        "cap_kind": "percent",
        "cap_percent": "10",
    }
    r = await api.put(
        "/v1/billing/accounts/ACC-2/contract", json={"start_date": "2026-11-01", "lad": lad}
    )
    assert (await r.json())["lad"]["rate_percent"] == "1.5"
    r = await api.get("/v1/billing/accounts/ACC-2")
    acc = await r.json()
    assert [x["msisdn"] for x in acc["lines"]] == ["491700000009"]
    assert acc["services"][0]["monthly_charge"] == "99.99"
    # Not JSON: 400, as on every route of the API.
    bad = await problem(await api.post("/v1/billing/accounts", data=b"{nope"), 400)
    assert bad["type"] == "urn:ocs:problem:malformed-json"


ACCOUNT = {"code": "ACC-9", "name": "Ninth", "agency": "AG-1", "tax_profile": "VAT19"}


@pytest.mark.parametrize(
    ("method", "path", "body", "fields"),
    [
        ("POST", "/v1/billing/accounts", {**ACCOUNT, "billing_day": "1"}, {"billing_day"}),
        ("POST", "/v1/billing/accounts", {**ACCOUNT, "vat": "19"}, {"vat"}),
        ("POST", "/v1/billing/accounts", {**ACCOUNT, "currency": "euro"}, {"currency"}),
        ("POST", "/v1/billing/accounts", {"name": "x"}, {"code", "agency", "tax_profile"}),
        ("POST", "/v1/billing/accounts", ["ACC-9"], {"body"}),
        ("PUT", "/v1/billing/accounts/ACC-1/services/VPN-8",
         {"description": "VPN", "monthly_charge": "1.1234567", "start_date": "2026-11-01"},
         {"monthly_charge"}),
        ("PUT", "/v1/billing/accounts/ACC-1/services/VPN-8",
         {"description": "VPN", "monthly_charge": "1", "start_date": "2026-11-01",
          "sla_ladder": [{"up_to": 0.5, "penalty": "5"}]}, {"sla_ladder[0].up_to"}),
        ("PUT", "/v1/billing/accounts/ACC-1/contract",
         {"start_date": "2026-11-01", "lad": {"rate": 10.5, "grace": 2}},
         {"lad.rate", "lad.grace"}),
        ("PUT", "/v1/billing/tax-profiles/VAT7", {"mode": "exclusive", "rate": 7}, {"rate"}),
        ("PUT", "/v1/billing/tax-profiles/VAT7", {"rate": "7"}, {"mode"}),
        ("POST", "/v1/billing/runs", {"period": "2026-13"}, {"period"}),
        ("POST", "/v1/billing/invoices/INV-1/notes",
         {"kind": "refund", "reason": "x", "lines": []}, {"kind", "lines"}),
    ],
)  # fmt: skip
async def test_bodies_are_read_by_their_declarations(
    api: Client, billing_engine: Engine, method: str, path: str, body: Any, fields: set[str]
) -> None:
    """Each bad member named in one 422 (the same problem as the core API's), money and
    percentages as decimal strings only, and nothing written."""
    before = _tables(billing_engine)
    body_ = await problem(await api.request(method, path, json=body), 422)
    assert body_["type"] == "urn:ocs:problem:invalid-input"
    assert {e["field"] for e in body_["errors"]} == fields
    assert _tables(billing_engine) == before


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/v1/billing/invoices?status=paid", "status"),
        ("/v1/billing/invoices?period=2026-11&sort=total", "sort"),
        ("/v1/billing/aggregates?level=agency", "period"),
        ("/v1/billing/aggregates?period=2026-11&level=planet", "level"),
        ("/v1/billing/accounts?offset=-1", "offset"),
        ("/v1/billing/hierarchy/agency?limit=0", "limit"),
    ],
)
async def test_query_parameters_are_read_by_their_declarations(
    api: Client, url: str, field: str
) -> None:
    body = await problem(await api.get(url), 422)
    assert body["field"] == field


def _tables(engine: Engine) -> dict[str, list[Any]]:
    from sqlalchemy import select

    from ocs.billing import schema as S

    with engine.connect() as conn:
        return {t.name: sorted(map(tuple, conn.execute(select(t)))) for t in
                (S.account, S.fixed_service, S.contract, S.tax_profile, S.invoice)}  # fmt: skip


async def test_agency_scope_hides_other_agencies(api: Client) -> None:
    h = {"X-Test-Agency": "AG-OTHER"}
    await problem(await api.get("/v1/billing/accounts/ACC-1", headers=h), 404)
    await problem(await api.get("/v1/billing/hierarchy/agency/AG-1", headers=h), 404)
    await problem(await api.get("/v1/billing/accounts/ACC-1/pending", headers=h), 404)
    r = await api.get("/v1/billing/accounts", headers=h)
    assert (await r.json())["items"] == []
    r = await api.get("/v1/billing/accounts/ACC-1", headers={"X-Test-Agency": "AG-1"})
    assert r.status == 200


async def post_feed(api: Client, feed: str, records: Any, secret: str = SECRET) -> Any:
    body = json.dumps(records).encode()
    headers = {"Content-Type": "application/json", **sign(secret, body)}
    return await api.post(f"/v1/billing/feeds/{feed}", data=body, headers=headers)


async def test_signed_feed_webhooks(api: Client) -> None:
    order = {
        "order_id": "O-1",
        "version": 1,
        "service_id": "L-1",
        "account": "ACC-1",
        "ordered_at": "2026-10-01T10:00:00+02:00",
        "committed_at": "2026-11-10T12:00:00+01:00",
        "status": "open",
    }
    await problem(await post_feed(api, "orders", [order], "wrong"), 401)
    r = await api.post("/v1/billing/feeds/orders", json=[order])  # unsigned
    await problem(r, 401)
    r = await post_feed(api, "orders", [order])
    assert (r.status, await r.json()) == (202, {"stored": 1, "replays": 0})
    r = await post_feed(api, "orders", order)  # the same again, as one object: a replay
    assert (r.status, await r.json()) == (200, {"stored": 0, "replays": 1})
    body = await problem(
        await post_feed(
            api,
            "tickets",
            [
                {
                    "ticket_id": "T-1",
                    "version": 1,
                    "service_id": "L-1",
                    "fault_start": "2026-11-20T10:00:00+01:00",
                    "restored_at": "2026-11-20T09:00:00+01:00",
                }
            ],
        ),
        422,
    )
    assert "restore before start" in body["detail"]
    r = await api.get("/v1/billing/feeds/orders/O-1")
    assert [v["version"] for v in (await r.json())["versions"]] == [1]
    await problem(await api.get("/v1/billing/feeds/tickets/T-1"), 404)


async def test_run_issue_invoice_formats_explain_notes(api: Client, tmp_path: Any) -> None:
    r = await api.post("/v1/billing/runs", json={"period": "2026-11"})
    assert (await r.json())["drafted"] == ["ACC-1"]
    await problem(await api.post("/v1/billing/runs", json={"period": "11-2026"}), 422)
    r = await api.post("/v1/billing/runs/issue", json={"period": "2026-11"})
    assert (await r.json())["issued"] == ["INV-2026-000001"]
    r = await api.get("/v1/billing/invoices?period=2026-11")
    (item,) = (await r.json())["items"]
    assert item["number"] == "INV-2026-000001"
    # L-1 300.00 x 20/30 = 200.00; 19 % = 38.00; 238.00
    assert (item["net"], item["tax"], item["total"]) == ("200.00", "38.00", "238.00")
    r = await api.get("/v1/billing/invoices/INV-2026-000001/csv")
    rows = (await r.text()).splitlines()
    assert rows[0].startswith("invoice,period,account,seq")
    assert rows[1].endswith(",200.00,200000000")
    r = await api.get("/v1/billing/invoices/INV-2026-000001/pdf")
    assert r.content_type == "application/pdf"
    pdf = await r.read()
    assert pdf.startswith(b"%PDF")
    if shutil.which("pdftotext"):
        (tmp_path / "i.pdf").write_bytes(pdf)
        text = await asyncio.to_thread(pdf_text, tmp_path / "i.pdf")
        for needle in (
            "Invoice INV-2026-000001",
            "Ministry One",
            "Leased line L-1",
            "238.00",
            "Tax 19 % (exclusive)",
            "Evidence",
        ):
            assert needle in text
    r = await api.get("/v1/billing/invoices/INV-2026-000001/lines/1/explain")
    ex = await r.json()
    assert ex["matches"] and ex["recomputed"] == "200.00"
    await problem(await api.get("/v1/billing/invoices/INV-2026-000001/lines/9/explain"), 404)
    await problem(await api.get("/v1/billing/invoices/INV-2026-999999"), 404)
    r = await api.post(
        "/v1/billing/invoices/INV-2026-000001/notes",
        json={
            "kind": "credit",
            "reason": "wrong start date",
            "lines": [{"description": "one day of L-1", "amount": "10.00"}],
        },
    )
    assert r.status == 201
    assert (await r.json())["number"] == "CN-2026-000001"
    r = await api.get("/v1/billing/aggregates?level=region&period=2026-11")
    (agg,) = (await r.json())["items"]
    assert (agg["code"], agg["billed"], agg["invoices"]) == ("R-N", "238.00", 1)
    await problem(await api.get("/v1/billing/aggregates?level=moon&period=2026-11"), 422)
    r = await api.get("/v1/billing/accounts/ACC-1/pending")
    p = await r.json()
    # As of 2026-12-05 00:00 (+01:00): L-1 in arrears, 1-5 December counted = 5 days of 31:
    # 300 x 5/31 = 48.387096(77) -> 48.387097
    assert (p["period"], p["fixed"]) == ("2026-12", "48.387097")
    r = await api.post("/v1/billing/exports/2026-11")
    files = (await r.json())["files"]
    import pyarrow.parquet as pq

    t = pq.read_table(files[1])
    assert sum(t.column("amount").to_pylist()) == 200_000_000 - 10_000_000


async def test_ocs_serve_with_billing_on(redis_url: str, billing_url: str, tmp_path: Any) -> None:
    """``OCS_BILLING=on``: ocs serve migrates the billing database, serves /v1/billing
    through the app's route table, imports the feed files dropped in its feeds directory, and
    its consumer turns charges into pending usage."""
    import time
    from dataclasses import replace

    import aiohttp

    from ocs.billing.db import open_billing_db
    from ocs.config import Settings
    from ocs.service import run_ocs

    engine = open_billing_db(billing_url)
    build_sample(engine)
    engine.dispose()
    (tmp_path / "orders").mkdir()
    (tmp_path / "orders" / "o.jsonl").write_text(
        json.dumps(
            {
                "order_id": "O-5",
                "version": 1,
                "service_id": "L-1",
                "account": "ACC-1",
                "ordered_at": "2026-10-01T10:00:00+02:00",
                "committed_at": "2026-11-10T12:00:00+01:00",
                "status": "open",
            }
        )
        + "\n"
    )
    settings = replace(
        Settings(native_port=0, http_port=0, diameter_port=0, **SECURE),
        redis_url=redis_url,
        billing=True,
        billing_db_url=billing_url,
        billing_feeds_dir=str(tmp_path),
    )
    async with (
        run_ocs(settings) as ocs,
        aiohttp.ClientSession(headers=AUTH, trace_configs=[contract_trace()]) as http,
    ):
        assert ocs.billing is not None
        now = int(time.time() * 1000)
        await ocs.store.create_subscriber(
            "491700000001",
            plan="gov-payu",
            balance=0,
            credit_limit=50_000_000,
            state="active",
            now=now,
        )
        ans = await ocs.store.debit(
            "491700000001",
            request_key="k1",
            service="sms",
            units=1,
            cost=20_000,
            bucket_quote=0,
            flags="o",
            plan="gov-payu",
            now=now,
        )
        assert ans.status == "OK"
        url = f"http://127.0.0.1:{ocs.http_port}/v1/billing/accounts/ACC-1/pending"
        deadline = time.monotonic() + 5
        while True:
            async with http.get(url) as r:
                assert r.status == 200
                p = await r.json()
            async with http.get(url.replace("accounts/ACC-1/pending", "feeds/orders/O-5")) as r:
                stored = r.status == 200
            if p["micro"]["usage"] == 20_000 and stored:
                break
            assert time.monotonic() < deadline, p
            await asyncio.sleep(0.05)


async def test_the_remaining_writes_answer_as_declared(api: Client) -> None:
    """The writes no other test makes, so that each answer meets the contract check too."""
    r = await api.put("/v1/billing/tax-profiles/VAT7", json={"mode": "exclusive", "rate": "7"})
    assert r.status == 200 and (await r.json()) == {
        "code": "VAT7", "rate": "7", "mode": "exclusive", "rounding": "half-even"
    }  # fmt: skip
    r = await api.post("/v1/billing/accounts", json={**ACCOUNT, "tax_profile": "VAT7"})
    assert r.status == 201
    r = await api.patch("/v1/billing/accounts/ACC-9", json={"name": "Ninth (renamed)"})
    assert r.status == 200 and (await r.json())["name"] == "Ninth (renamed)"
    body = await problem(await api.patch("/v1/billing/accounts/ACC-9", json={}), 422)
    assert body["field"] == "body"
    r = await api.post("/v1/billing/accounts/ACC-9/lines", json={"msisdn": "491700000099"})
    assert r.status == 201
    r = await api.delete("/v1/billing/accounts/ACC-9/lines/491700000099?at=1")
    assert r.status == 204
    await problem(await api.delete("/v1/billing/accounts/ACC-9/lines/491700000099?at=x"), 422)
    service = {"description": "VPN", "monthly_charge": "10", "start_date": "2026-11-01"}
    r = await api.put("/v1/billing/accounts/ACC-9/services/VPN-99", json=service)
    assert r.status == 200
    assert (await api.delete("/v1/billing/accounts/ACC-9/services/VPN-99")).status == 204
    assert (await api.delete("/v1/billing/accounts/ACC-9")).status == 204
    await problem(await api.get("/v1/billing/accounts/ACC-9"), 404)
