"""Bill runs, issuing, notes, explain and pending sums, on SQLite and on PostgreSQL.

The expected invoices are worked out by hand in the comments (money in micro-units where
it matters: 1.00 = 1_000_000)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, select

from ocs.billing import feeds, runs, usage
from ocs.billing import model as M
from ocs.billing import schema as S
from ocs.billing.errors import Conflict, Invalid, NotFound
from tests.billing_db import DEC_START_MS, build_sample

LINE = "491700000001"


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


_seq = iter(range(1, 10**9))


def event(msisdn: str, at: str, svc: str, amount: int, units: int = 1, kind: str = "debit",
          dst: str = "") -> dict[str, Any]:  # fmt: skip
    """A usage row as the outbox consumer makes it from a real entry."""
    fields = {"t": kind, "sub": msisdn, "ts": str(ms(at)), "svc": svc, "u": str(units),
              "amt": f"-{amount}", "dst": dst}  # fmt: skip
    row = usage.usage_row(next(_seq) % 64, f"{ms(at)}-{next(_seq)}", fields)
    assert row is not None
    return row


def put_usage(engine: Engine, *rows: dict[str, Any]) -> None:
    usage.store_usage(engine, list(rows))


def order(oid: str, version: int, committed: str, delivered: str | None, service: str = "L-1",
          ) -> dict[str, Any]:  # fmt: skip
    return {"order_id": oid, "version": version, "service_id": service, "account": "ACC-1",
            "ordered_at": "2026-10-01T10:00:00+02:00", "committed_at": committed,
            "delivered_at": delivered, "status": "delivered" if delivered else "open"}  # fmt: skip


def ticket(tid: str, start: str, end: str | None, excluded: str = "", version: int = 1,
           service: str = "L-1") -> dict[str, Any]:  # fmt: skip
    return {"ticket_id": tid, "version": version, "service_id": service, "fault_start": start,
            "restored_at": end, "cause": "fibre cut", "excluded": excluded}  # fmt: skip


@pytest.fixture
def sample(billing_engine: Engine) -> Engine:
    return november(billing_engine)


def november_usage() -> list[dict[str, Any]]:
    """November's usage of the sample's line (and two events no account owns)."""
    return [
        event(LINE, "2026-11-02T08:00:00+01:00", "sms", 20_000),
        event(LINE, "2026-11-03T08:00:00+01:00", "sms", 20_000),
        event(LINE, "2026-11-30T23:59:59+01:00", "sms", 20_000),
        event(LINE, "2026-11-04T09:00:00+01:00", "voice", 40_000, 60, "release"),
        event(LINE, "2026-11-05T09:00:00+01:00", "voice", 250_000, 60, "commit"),
        # after the cut-off: December's
        event(LINE, "2026-12-01T00:00:00+01:00", "sms", 20_000),
        # before the line was the account's (it is since 2026-10-01): nobody's
        event(LINE, "2026-09-15T10:00:00+02:00", "sms", 20_000),
        # another line, no account's
        event("491799999999", "2026-11-05T09:00:00+01:00", "sms", 20_000),
    ]


def november(e: Engine) -> Engine:
    """The sample hierarchy plus a second service L-2 (100.00 a month in advance from
    2026-11-21, no SLA), November's usage, an order and tickets."""
    build_sample(e)
    with e.begin() as c:
        M.put_service(c, "ACC-1", "L-2", {"description": "VPN site L-2", "monthly_charge": "100",
                                          "charging": "advance", "start_date": "2026-11-21"},
                      None)  # fmt: skip
    put_usage(e, *november_usage())
    feeds.accept_batch(e, "orders", [
        # committed the 10th, delivered the 15th: 5 days - 2 grace = 3 x 10.00 = 30.00
        order("O-1", 1, "2026-11-10T12:00:00+01:00", "2026-11-15T09:00:00+01:00"),
    ], 0)  # fmt: skip
    feeds.accept_batch(e, "tickets", [
        ticket("T-1", "2026-11-20T10:00:00+01:00", "2026-11-20T12:00:00+01:00"),
        ticket("T-2", "2026-11-20T11:00:00+01:00", "2026-11-20T13:00:00+01:00"),
        ticket("T-3", "2026-11-22T01:00:00+01:00", "2026-11-22T06:00:00+01:00", "maintenance"),
    ], 0)  # fmt: skip
    return e


def invoice(e: Engine, period: str, account: str = "ACC-1") -> dict[str, Any]:
    found = runs.list_invoices(e, period=period, account=account, status=None, scope=None,
                               offset=0, limit=10)  # fmt: skip
    assert len(found) == 1
    return runs.get_invoice(e, str(found[0]["id"]), None)


def amounts(inv: dict[str, Any]) -> list[tuple[str, str, int]]:
    return [(x["kind"], x["ref"], x["amount_micro"]) for x in inv["lines"]]


def test_migrations_match_the_schema(billing_engine: Engine) -> None:
    with billing_engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c), S.metadata)
    assert diff == []


def test_the_november_invoice(sample: Engine) -> None:
    runs.run(sample, "2026-11", now_ms=1)
    inv = invoice(sample, "2026-11")
    assert amounts(inv) == [
        ("fixed", "L-1:2026-11", 200_000_000),  # 300.00 x 20/30 (11th..30th), in arrears
        ("fixed", "L-2:2026-11", 33_333_333),  # 100.00 x 10/30 = 33.3333.. -> 33.333333
        ("fixed", "L-2:2026-12", 100_000_000),  # in advance: December whole
        ("usage", "usage:sms", 60_000),  # 3 x 0.02 (the 30th 23:59:59 is November's)
        ("usage", "usage:voice", 290_000),  # 0.04 + 0.25
        ("lad", "lad:O-1", -30_000_000),
        # T-1 + T-2 merged: 3 h = 10_800 s of 2_592_000 -> 99.58333 %, 0.41667 points short
        # of 99.9 -> second step, 10 % of 300.00 (T-3 is maintenance: excluded)
        ("penalty", "L-1:2026-11", -30_000_000),
    ]
    # net = 200 + 33.333333 + 100 + 0.06 + 0.29 - 30 - 30 = 273.683333
    # rounded half-even to cents: 273.68 (rounding -0.003333)
    # tax 19 % of 273.68 = 51.9992 -> 52.00; total 325.68
    assert inv["micro"] == {"net": 273_683_333, "net_rounded": 273_680_000,
                            "tax": 52_000_000, "total": 325_680_000}  # fmt: skip
    assert sum(x["amount_micro"] for x in inv["lines"]) == inv["micro"]["net"]
    assert inv["rounding"] == "-0.003333"
    assert inv["status"] == "draft"
    assert inv["number"] is None


def test_every_line_explains_itself(sample: Engine) -> None:
    runs.run(sample, "2026-11", now_ms=1)
    runs.issue(sample, "2026-11", now_ms=2)
    inv = invoice(sample, "2026-11")
    for x in inv["lines"]:
        out = runs.explain(sample, inv["number"], x["seq"], None)
        assert out["matches"], out
        assert out["recomputed_micro"] == x["amount_micro"]
        assert out["steps"]
    lad = runs.explain(sample, inv["number"], 6, None)
    assert "days late = 5 - grace 2 = 3" in lad["steps"][1]
    with pytest.raises(NotFound):
        runs.explain(sample, inv["number"], 99, None)


def test_rerun_gives_the_same_draft(sample: Engine) -> None:
    runs.run(sample, "2026-11", now_ms=1)
    first = invoice(sample, "2026-11")
    runs.run(sample, "2026-11", now_ms=2)
    runs.run(sample, "2026-11", account="ACC-1", now_ms=3)
    again = invoice(sample, "2026-11")
    assert amounts(again) == amounts(first)
    assert again["micro"] == first["micro"]
    with sample.connect() as c:
        n = c.execute(select(S.invoice.c.id)).all()
        billed = c.execute(select(S.usage_event.c.event_id).where(
            S.usage_event.c.line_id.is_not(None))).all()  # fmt: skip
    assert len(n) == 1
    assert len(billed) == 5


def test_issue_numbers_without_gaps_and_late_input_goes_to_the_next_period(
    sample: Engine,
) -> None:
    runs.run(sample, "2026-11", now_ms=1)
    assert runs.issue(sample, "2026-11", now_ms=2) == ["INV-2026-000001"]
    assert runs.issue(sample, "2026-11", now_ms=3) == []  # nothing left to issue
    nov = invoice(sample, "2026-11")
    # A re-run after issue changes nothing and makes no second invoice.
    assert runs.run(sample, "2026-11", now_ms=4).skipped_issued == ["ACC-1"]
    assert invoice(sample, "2026-11") == nov
    # Late: a November event and a November ticket arrive after the issue.
    put_usage(sample, event(LINE, "2026-11-29T10:00:00+01:00", "sms", 20_000))
    feeds.accept_batch(sample, "tickets", [
        # 10 h = 36_000 s more: 46_800 s of 2_592_000 -> 98.19444 %, 1.70556 points short:
        # the last step, 30 % = 90.00, of which 30.00 was credited: -60.00 more
        ticket("T-4", "2026-11-25T00:00:00+01:00", "2026-11-25T10:00:00+01:00"),
    ], 5)  # fmt: skip
    runs.run(sample, "2026-12", now_ms=6)
    dec = invoice(sample, "2026-12")
    assert amounts(dec) == [
        ("fixed", "L-1:2026-12", 300_000_000),  # arrears: December
        ("fixed", "L-2:2027-01", 100_000_000),  # advance: January
        ("usage-adjustment", "usage:sms", 20_000),  # the late November event
        ("usage", "usage:sms", 20_000),  # 2026-12-01 00:00
        ("penalty-adjustment", "L-1:2026-11", -60_000_000),
    ]
    assert "late" in dec["lines"][2]["description"]
    assert dec["lines"][4]["evidence"]["reason"] == "tickets received after the month was invoiced"
    # net 340.04; tax 19 % = 64.6076 -> 64.61; total 404.65
    assert dec["micro"] == {"net": 340_040_000, "net_rounded": 340_040_000,
                            "tax": 64_610_000, "total": 404_650_000}  # fmt: skip
    assert invoice(sample, "2026-11") == nov  # the issued one did not move
    assert runs.issue(sample, "2026-12", now_ms=7) == ["INV-2026-000002"]
    for x in invoice(sample, "2026-12")["lines"]:
        assert runs.explain(sample, "INV-2026-000002", x["seq"], None)["matches"]


def test_lad_open_order_and_cap_across_periods(billing_engine: Engine) -> None:
    e = billing_engine
    build_sample(e)
    # Open at November's cut-off (2026-12-01), committed the 20th: 11 - 2 = 9 days = 90.00,
    # capped at 50.00 for the contract.
    feeds.accept_batch(e, "orders", [order("O-9", 1, "2026-11-20T12:00:00+01:00", None)], 0)
    runs.run(e, "2026-11", now_ms=1)
    nov = invoice(e, "2026-11")
    assert [x for x in amounts(nov) if x[0] == "lad"] == [("lad", "lad:O-9", -50_000_000)]
    assert "cap reached" in nov["lines"][-1]["description"]
    runs.issue(e, "2026-11", now_ms=2)
    # Delivered in December: more days, but the cap is used up: no LAD line.
    feeds.accept_batch(e, "orders", [order("O-9", 2, "2026-11-20T12:00:00+01:00",
                                           "2026-12-05T12:00:00+01:00")], 3)  # fmt: skip
    runs.run(e, "2026-12", now_ms=4)
    assert [x for x in amounts(invoice(e, "2026-12")) if x[0] == "lad"] == []


def test_lad_open_order_accrues_in_parts(billing_engine: Engine) -> None:
    e = billing_engine
    build_sample(e)
    with e.begin() as c:  # uncapped
        M.put_contract(c, "ACC-1", {"start_date": "2026-11-01",
                                    "lad": {"rate": "10", "grace_days": 2}}, None)  # fmt: skip
    feeds.accept_batch(e, "orders", [order("O-7", 1, "2026-11-27T12:00:00+01:00", None)], 0)
    runs.run(e, "2026-11", now_ms=1)
    # committed the 27th, open at 2026-12-01: 4 - 2 = 2 days = 20.00
    assert [x for x in amounts(invoice(e, "2026-11")) if x[0] == "lad"] == [
        ("lad", "lad:O-7", -20_000_000)]  # fmt: skip
    runs.issue(e, "2026-11", now_ms=2)
    feeds.accept_batch(e, "orders", [order("O-7", 2, "2026-11-27T12:00:00+01:00",
                                           "2026-12-03T08:00:00+01:00")], 3)  # fmt: skip
    runs.run(e, "2026-12", now_ms=4)
    # delivered the 3rd: 6 - 2 = 4 days = 40.00 in all, 20.00 credited before: 20.00 more
    assert [x for x in amounts(invoice(e, "2026-12")) if x[0] == "lad"] == [
        ("lad", "lad:O-7", -20_000_000)]  # fmt: skip


def test_usage_follows_line_ownership(sample: Engine) -> None:
    with sample.begin() as c:
        M.create_account(
            c,
            {
                "code": "ACC-2",
                "name": "Second",
                "agency": "AG-1",
                "tax_profile": "VAT19",
                "timezone": "Europe/Berlin",
            },
            None,
        )
        # the line moves to ACC-2 on 2026-11-04 00:00
        M.assign_line(
            c, "ACC-2", {"msisdn": LINE, "valid_from": ms("2026-11-04T00:00:00+01:00")}, None
        )
    runs.run(sample, "2026-11", now_ms=1)
    one = [x for x in amounts(invoice(sample, "2026-11", "ACC-1")) if x[0] == "usage"]
    two = [x for x in amounts(invoice(sample, "2026-11", "ACC-2")) if x[0] == "usage"]
    assert one == [("usage", "usage:sms", 40_000)]  # the 2nd and the 3rd
    # the 30th's SMS and both calls (4th and 5th)
    assert two == [("usage", "usage:sms", 20_000), ("usage", "usage:voice", 290_000)]


def test_duplicated_usage_events_are_billed_once(sample: Engine) -> None:
    with sample.connect() as c:
        rows = [dict(r._mapping) for r in c.execute(select(S.usage_event))]
    put_usage(sample, *rows)  # the consumer got them all again
    runs.run(sample, "2026-11", now_ms=1)
    assert ("usage", "usage:sms", 60_000) in amounts(invoice(sample, "2026-11"))


def test_credit_and_debit_notes(sample: Engine) -> None:
    runs.run(sample, "2026-11", now_ms=1)
    with pytest.raises(Conflict):  # drafts take no notes
        runs.create_note(sample, str(invoice(sample, "2026-11")["id"]),
                         {"kind": "credit", "reason": "x", "lines": [
                             {"description": "x", "amount": "1"}]},
                         now_ms=2, scope=None)  # fmt: skip
    runs.issue(sample, "2026-11", now_ms=2)
    body = {"kind": "credit", "reason": "goodwill for the outage of 20 November",
            "lines": [{"description": "goodwill", "amount": "10.00"}]}  # fmt: skip
    note = runs.create_note(sample, "INV-2026-000001", body, now_ms=3, scope=None)
    # -10.00, tax 19 % = -1.90, total -11.90
    assert (note["number"], note["refers_to"], note["total"], note["tax"]) == (
        "CN-2026-000001", "INV-2026-000001", "-11.90", "-1.90")  # fmt: skip
    debit = runs.create_note(sample, "INV-2026-000001", {**body, "kind": "debit"}, now_ms=4,
                             scope=None)  # fmt: skip
    assert (debit["number"], debit["total"]) == ("DN-2026-000001", "11.90")
    with pytest.raises(Invalid):
        runs.create_note(sample, "INV-2026-000001", {"kind": "credit", "reason": "x",
                                                     "lines": [{"description": "x",
                                                                "amount": 1.5}]},
                         now_ms=5, scope=None)  # fmt: skip


def test_scoping_hides_other_agencies(sample: Engine) -> None:
    runs.run(sample, "2026-11", now_ms=1)
    inv_id = str(invoice(sample, "2026-11")["id"])
    assert runs.get_invoice(sample, inv_id, "AG-1")["account"] == "ACC-1"
    with pytest.raises(NotFound):
        runs.get_invoice(sample, inv_id, "AG-OTHER")
    with pytest.raises(NotFound):
        runs.pending(sample, "ACC-1", now_ms=1, scope="AG-OTHER")
    assert runs.list_invoices(sample, period=None, account=None, status=None,
                              scope="AG-OTHER", offset=0, limit=10) == []  # fmt: skip


def test_pending_sums(sample: Engine) -> None:
    runs.run(sample, "2026-11", now_ms=1)
    runs.issue(sample, "2026-11", now_ms=2)
    put_usage(sample, event(LINE, "2026-12-02T10:00:00+01:00", "voice", 500_000, 120, "commit"))
    # As of 2026-12-10 12:00: December's fixed charges to date: L-1 (arrears) 10 days of 31
    # counted to the end of the 10th: 300 x 10/31 = 96.774193(5..) -> 96.774194; L-2 is in
    # advance and December was billed on November's invoice.
    # Usage: 0.02 (1 December) + 0.50 = 0.52.
    p = runs.pending(sample, "ACC-1", now_ms=ms("2026-12-10T12:00:00+01:00"), scope=None)
    assert p["period"] == "2026-12"
    assert p["micro"] == {"usage": 520_000, "fixed": 96_774_194, "lad": 0, "penalty": 0,
                          "total": 97_294_194}  # fmt: skip


def test_aggregates_by_level(sample: Engine) -> None:
    runs.run(sample, "2026-11", now_ms=1)
    runs.issue(sample, "2026-11", now_ms=2)
    for level, code in (("national", "NAT"), ("region", "R-N"), ("agency", "AG-1"),
                        ("account", "ACC-1")):  # fmt: skip
        (row,) = runs.aggregates(sample, level, "2026-11", scope=None, offset=0, limit=10)
        assert row["code"] == code
        assert row["micro"] == {"billed": 325_680_000, "drafted": 0, "usage": 350_000,
                                "lad": -30_000_000, "penalties": -30_000_000,
                                "pending": 20_000}  # the 1 December SMS  # fmt: skip
        assert (row["accounts"], row["invoices"]) == (1, 1)
    assert runs.aggregates(sample, "agency", "2026-11", scope="AG-X", offset=0, limit=10) == []
    with pytest.raises(Invalid):
        runs.aggregates(sample, "planet", "2026-11", scope=None, offset=0, limit=10)


def test_bad_period_is_refused(sample: Engine) -> None:
    with pytest.raises(Invalid):
        runs.run(sample, "2026-13", now_ms=1)
    with pytest.raises(NotFound):
        runs.run(sample, "2026-11", account="NOPE", now_ms=1)
    assert ms("2026-12-01T00:00:00+01:00") == DEC_START_MS


def test_the_worked_example_of_the_docs(
    sample: Engine, billing_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/billing.md shows this invoice and the explanation of its LAD line as printed."""
    from pathlib import Path

    from ocs.cli import main

    runs.run(sample, "2026-11", now_ms=1)
    runs.issue(sample, "2026-11", now_ms=2)
    capsys.readouterr()
    assert main(["billing", "--db", billing_url, "explain", "INV-2026-000001", "6"]) == 0
    printed = capsys.readouterr().out
    docs = (Path(__file__).parent.parent / "docs" / "billing.md").read_text()
    block = docs.split("`ocs billing explain INV-2026-000001 6` prints:\n\n```\n", 1)[1]
    assert printed == block.split("```", 1)[0]
    assert "| **total** | | **325.68** |" in docs


def test_a_number_that_changes_class_with_a_new_plan_version(billing_engine: Engine) -> None:
    """gov-payu version 2 (in force from 15 Nov) puts 030 123... in the agency network: the
    calls to it before the 15th are national, from the 15th on agency-network; each line
    bills exactly its events (marked by the run, recomputed by explain)."""
    from pathlib import Path

    from tariffs import PlanBook
    from tariffs.plan import parse_plan

    text = (Path(runs.__file__).parents[2] / "tariffs/plans/gov-payu.toml").read_text()
    v1 = parse_plan(text)
    v2 = parse_plan(
        text.replace("version = 1", "version = 2")
        .replace("2026-01-01T00:00:00+01:00", "2026-11-15T00:00:00+01:00")
        .replace('agency-network = ["49301850"]', 'agency-network = ["49301850", "4930123"]')
    )
    classes = runs.Destinations(PlanBook([v1, v2]))
    build_sample(billing_engine)
    put_usage(
        billing_engine,
        event(LINE, "2026-11-10T10:00:00+01:00", "voice", 40_000, 60, dst="030 1234567"),
        event(LINE, "2026-11-14T23:59:59+01:00", "voice", 40_000, 60, dst="030 1239999"),
        event(LINE, "2026-11-15T00:00:00+01:00", "voice", 7, 60, dst="030 1234567"),
        event(LINE, "2026-11-20T10:00:00+01:00", "voice", 3, 60, dst="030 5550000"),
        event(LINE, "2026-11-21T10:00:00+01:00", "voice", 250_000, 60, dst="+447700900123"),
    )
    runs.run(billing_engine, "2026-11", now_ms=1, classes=classes)
    inv = invoice(billing_engine, "2026-11")
    usage_lines = [
        (x["evidence"]["destination"], x["evidence"]["events"], x["amount_micro"])
        for x in inv["lines"]
        if x["kind"] == "usage"
    ]
    assert usage_lines == [
        ("agency-network", 1, 7),  # the 15th, 00:00: version 2
        ("international", 1, 250_000),
        ("national", 3, 80_003),  # the 10th and the 14th (version 1), 030 555 (never agency)
    ]
    with billing_engine.connect() as c:
        billed = c.execute(
            select(S.usage_event.c.line_id).where(S.usage_event.c.line_id.is_not(None))
        ).all()
    assert len(billed) == 5
    for x in inv["lines"]:
        if x["kind"] == "usage":
            assert runs.explain(billing_engine, str(inv["id"]), x["seq"], None)["matches"]


def test_an_invoice_on_billing_day_15(billing_engine: Engine) -> None:
    """ACC-1 billed on the 15th: period 2026-11 is 15 Nov - 14 Dec (30 days, no change of
    summer time inside). L-1 (300.00 a month in arrears from 11 Nov) first falls in period
    2026-10 (15 Oct - 14 Nov, 31 days), which this invoice catches up."""
    build_sample(billing_engine)
    with billing_engine.begin() as c:
        M.update_account(c, "ACC-1", {"billing_day": 15}, None)
    put_usage(
        billing_engine,
        event(LINE, "2026-11-15T00:00:00+01:00", "sms", 20_000),  # the first instant: in
        event(LINE, "2026-12-14T23:59:59+01:00", "sms", 20_000),  # the last second: in
        event(LINE, "2026-12-15T00:00:00+01:00", "sms", 20_000),  # 2026-12's
    )
    # 3 h on 10 Dec: in period 2026-11 (a calendar-month account would see it in December)
    feeds.accept_batch(billing_engine, "tickets", [
        ticket("T-9", "2026-12-10T10:00:00+01:00", "2026-12-10T13:00:00+01:00"),
    ], 0)  # fmt: skip
    runs.run(billing_engine, "2026-11", now_ms=1)
    inv = invoice(billing_engine, "2026-11")
    assert amounts(inv) == [
        ("fixed", "L-1:2026-10", 38_709_677),  # 11..14 Nov: 300.00 x 4/31 = 38.7096774..
        ("fixed", "L-1:2026-11", 300_000_000),  # 30/30 days
        ("usage", "usage:sms", 40_000),  # 2 x 0.02
        # 10,800 s of 2,592,000 (30 days): 99.58333 %, 0.41667 points under 99.9: 10 %
        ("penalty", "L-1:2026-11", -30_000_000),
    ]
    assert inv["cutoff"] == "2026-12-15T00:00:00+01:00"
    # net 38.709677 + 300 + 0.04 - 30 = 308.749677 -> 308.75; tax 19 % = 58.6625 -> 58.66
    # (half-even: the 0.25 of a cent is below the half); total 367.41
    assert inv["micro"] == {"net": 308_749_677, "net_rounded": 308_750_000,
                            "tax": 58_660_000, "total": 367_410_000}  # fmt: skip
    for x in inv["lines"]:
        assert runs.explain(billing_engine, str(inv["id"]), x["seq"], None)["matches"]
    # pending on 10 Dec 12:00 (the draft dropped: pending counts what no invoice, draft or
    # issued, carries): the same period; fixed to date 15 Nov..10 Dec = 26 days: 300 x 26/30
    # = 260.00, plus 2026-10's 38.709677; usage before noon: 0.02; T-9 up to noon: 2 h =
    # 7,200 s: 99.72222 %, 0.17778 points under 99.9: 10 % again
    with billing_engine.begin() as c:
        runs._drop_draft(c, inv["id"])
    p = runs.pending(billing_engine, "ACC-1", now_ms=ms("2026-12-10T12:00:00+01:00"), scope=None)
    assert p["period"] == "2026-11"
    assert p["micro"] == {"fixed": 298_709_677, "usage": 20_000, "lad": 0,
                          "penalty": -30_000_000, "total": 268_729_677}  # fmt: skip
    # the billing day cannot change once the account has invoices
    runs.run(billing_engine, "2026-11", now_ms=1)
    with billing_engine.begin() as c, pytest.raises(Conflict, match="billing day"):
        M.update_account(c, "ACC-1", {"billing_day": 1}, None)


def test_billing_day_31_in_february(billing_engine: Engine) -> None:
    """Billing day 31: period 2026-02 runs from 28 Feb (February has no 31st) to 30 Mar
    (31 days); a 310.00 service from 1 Mar owes 30 of them: 300.00. Period 2026-01 (31 Jan
    - 27 Feb) bills it nothing."""
    build_sample(billing_engine)
    with billing_engine.begin() as c:
        M.create_account(c, {"code": "ACC-31", "name": "Day 31", "agency": "AG-1",
                             "tax_profile": "VAT19", "timezone": "Europe/Berlin",
                             "billing_day": 31}, None)  # fmt: skip
        M.put_service(c, "ACC-31", "L-31", {"description": "Leased line L-31",
                                            "monthly_charge": "310", "charging": "arrears",
                                            "start_date": "2026-03-01"}, None)  # fmt: skip
    runs.run(billing_engine, "2026-01", account="ACC-31", now_ms=1)
    assert amounts(invoice(billing_engine, "2026-01", "ACC-31")) == []
    runs.run(billing_engine, "2026-02", account="ACC-31", now_ms=1)
    inv = invoice(billing_engine, "2026-02", "ACC-31")
    assert amounts(inv) == [("fixed", "L-31:2026-02", 300_000_000)]
    assert inv["lines"][0]["evidence"]["period_start"] == "2026-02-28"
    assert inv["lines"][0]["evidence"]["period_end"] == "2026-03-31"
    assert inv["cutoff"] == "2026-03-31T00:00:00+02:00"  # summer time from 29 Mar
