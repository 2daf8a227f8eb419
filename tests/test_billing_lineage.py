"""Lineage of the billing exports (#12's open item): the period's Parquet dataset and the
invoices as PDF, CSV and JSON emit OpenLineage run events through ``Lineage.emit``, as the
warehouse and archive writers do: the billing database's tables in, the file or download out.
Read back as plain JSON from the file sink, and through ``ocs lineage show``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import Engine

from ocs.api.openapi import ROUTES_OF_CONTRACT
from ocs.api.routes import add_routes
from ocs.billing import runs
from ocs.billing.api import BillingApi
from ocs.lineage import Lineage
from tests.billing_db import build_sample
from tests.contract import contract_trace
from tests.test_billing_api import NOW, fake_caller
from tests.test_lineage import ocs_cmd


def events(directory: Path) -> list[dict[str, Any]]:
    path = directory / "openlineage.jsonl"
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines()]


def billing_tables(engine: Engine) -> tuple[str, list[str]]:
    """(namespace, names) the records must give the invoice tables."""
    url = engine.url
    if url.get_backend_name() == "postgresql":
        return f"postgres://{url.host}:{url.port}", [
            f"{url.database}.public.{t}"
            for t in ("billing_invoice", "billing_invoice_line", "billing_account", "billing_org")
        ]
    return f"sqlite://{Path(str(url.database)).absolute()}", [
        "billing_invoice", "billing_invoice_line", "billing_account", "billing_org"
    ]  # fmt: skip


def check_inputs(event: dict[str, Any], engine: Engine) -> None:
    ns, names = billing_tables(engine)
    assert [(d["namespace"], d["name"]) for d in event["inputs"]] == [(ns, n) for n in names]
    cols = {f["name"]: f["type"] for f in event["inputs"][1]["facets"]["schema"]["fields"]}
    assert cols["amount"] == "BIGINT" and cols["evidence"] == "TEXT"


async def test_api_exports_record_their_lineage(billing_engine: Engine, tmp_path: Path) -> None:
    build_sample(billing_engine)
    runs.run(billing_engine, "2026-11", now_ms=1)
    (inv,) = runs.list_invoices(billing_engine, period="2026-11", account=None, status=None,
                                scope=None, offset=0, limit=5)  # fmt: skip
    lineage_dir = tmp_path / "lineage"
    app = web.Application(middlewares=[fake_caller])
    api = BillingApi(billing_engine, warehouse_dir=tmp_path / "wh", clock=lambda: NOW,
                     lineage=Lineage(lineage_dir))  # fmt: skip
    add_routes(app, api.routes())
    add_routes(app, ROUTES_OF_CONTRACT)  # (the contract the answers are checked against)
    client: TestClient[web.Request, web.Application] = TestClient(
        TestServer(app), trace_configs=[contract_trace()]
    )
    await client.start_server()
    try:
        r = await client.get(f"/v1/billing/invoices/{inv['id']}")
        assert r.status == 200
        assert events(lineage_dir) == []  # reading an invoice is no export
        r = await client.post("/v1/billing/exports/2026-11")
        assert r.status == 200, await r.text()
        files = (await r.json())["files"]
        for fmt in ("pdf", "csv"):
            r = await client.get(f"/v1/billing/invoices/{inv['id']}/{fmt}")
            assert r.status == 200
            await r.read()
        host = f"{client.host}:{client.port}"
    finally:
        await client.close()
    parquet, pdf, csv = events(lineage_dir)
    assert parquet["eventType"] == "COMPLETE" and len(parquet["run"]["runId"]) == 36
    assert parquet["job"]["name"] == "ocs.billing.export"
    check_inputs(parquet, billing_engine)
    assert [(d["namespace"], d["name"]) for d in parquet["outputs"]] == [("file", f) for f in files]
    lines_schema = {
        f["name"]: f["type"] for f in parquet["outputs"][1]["facets"]["schema"]["fields"]
    }
    assert lines_schema["amount"] == "int64"
    for event, fmt in ((pdf, "pdf"), (csv, "csv")):
        assert event["job"]["name"] == f"ocs.billing.invoice.{fmt}"
        check_inputs(event, billing_engine)
        (out,) = event["outputs"]
        assert (out["namespace"], out["name"]) == (
            f"http://{host}",
            f"/v1/billing/invoices/{inv['id']}/{fmt}",
        )


def test_cli_exports_record_their_lineage(
    billing_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ocs billing show|csv|pdf -o F`` and ``export`` (in this process: ``ocs.cli.main``),
    then ``ocs lineage show`` as a user runs it."""
    from ocs.cli import main

    build_sample(billing_engine)
    runs.run(billing_engine, "2026-11", now_ms=1)
    runs.issue(billing_engine, "2026-11", now_ms=2)
    lineage_dir = tmp_path / "lineage"
    monkeypatch.setenv("OCS_LINEAGE_DIR", str(lineage_dir))
    monkeypatch.setenv("OCS_WAREHOUSE_DIR", str(tmp_path / "wh"))
    db = billing_engine.url.render_as_string(hide_password=False)
    written = {}
    for fmt, action in (("json", "show"), ("csv", "csv"), ("pdf", "pdf")):
        path = tmp_path / f"inv.{fmt}"
        assert main(["billing", "--db", db, action, "INV-2026-000001", "-o", str(path)]) == 0
        assert path.stat().st_size > 0
        written[fmt] = path
    assert json.loads(written["json"].read_text())["number"] == "INV-2026-000001"
    assert main(["billing", "--db", db, "export", "--period", "2026-11"]) == 0
    got = events(lineage_dir)
    assert [e["job"]["name"] for e in got] == [
        "ocs.billing.invoice.json", "ocs.billing.invoice.csv", "ocs.billing.invoice.pdf",
        "ocs.billing.export",
    ]  # fmt: skip
    for e, fmt in zip(got, ("json", "csv", "pdf"), strict=False):
        check_inputs(e, billing_engine)
        assert e["outputs"][0]["name"] == str(written[fmt].absolute())
    # where the PDF came from: the billing tables, through the invoice export
    r = ocs_cmd("lineage", "show", str(written["pdf"].absolute()), "--dir", str(lineage_dir))
    assert r.returncode == 0, r.stderr
    assert "<- ocs.billing.invoice.pdf" in r.stdout
    assert "billing_invoice_line" in r.stdout
