"""The usage rollup (ocs/billing/rollup.py, docs/billing.md "The usage rollup"), on SQLite and
on PostgreSQL: after every change of what it sums (ingestion, replays and duplicates, bill
runs, re-runs, issuing, late events, line moves, ends and overlaps, an account deleted) it
equals the scan of the usage events to the micro-unit, and the hand-computed figures; the
day rule; the migration's back-fill; ``ocs billing check`` finding and repairing drift."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, func, insert, select, update

from ocs.billing import model as M
from ocs.billing import rollup, runs, usage
from ocs.billing import schema as S
from ocs.billing.db import MIGRATIONS, open_billing_db, open_engine
from ocs.ui import figures
from tests.billing_db import build_sample
from tests.test_agency_scope import add_second_agency
from tests.test_billing_runs import LINE, event, ms, november, november_usage, put_usage

LINE2 = "491700000002"
NOBODY = "491799999999"

Sums = tuple[int, int, int, int]


def exact(e: Engine) -> dict[str, dict[tuple[str, str], Sums]]:
    """The rollup, checked against the scan of the events and against the aggregates'
    pending sums; by account code, then (day, service): (events, amount, pending events,
    pending)."""
    with e.connect() as c:
        have, want = rollup.stored(c), rollup.scan(c)
        codes = dict(c.execute(select(S.account.c.id, S.account.c.code)).all())
        assert rollup.drift(c) == []
    assert have == want
    out: dict[str, dict[tuple[str, str], Sums]] = {}
    for (account_id, day, svc), sums in have.items():
        out.setdefault(codes[account_id], {})[(day, svc)] = sums  # type: ignore[assignment]
    # the aggregates' pending (read from the rollup) is the scan's, per account
    pending = {
        r["code"]: r["micro"]["pending"]
        for r in runs.aggregates(e, "account", "2026-11", scope=None, offset=0, limit=1000)
    }
    for code, pend in pending.items():
        assert pend == sum(s[3] for s in out.get(code, {}).values()), code
    return out


@pytest.fixture
def sample(billing_engine: Engine) -> Engine:
    return november(billing_engine)


@pytest.fixture
def two(billing_engine: Engine) -> Engine:
    """Two agencies' accounts (tests/test_agency_scope.py) and november()'s usage of LINE."""
    build_sample(billing_engine)
    add_second_agency(billing_engine)
    put_usage(billing_engine, *november_usage())
    return billing_engine


def pending_of(figures: dict[tuple[str, str], Sums]) -> int:
    return sum(s[3] for s in figures.values())


def test_ingestion_runs_reruns_issue_and_late_usage(sample: Engine) -> None:
    acc1 = exact(sample)["ACC-1"]
    # By hand (november(): ACC-1's line since 2026-10-01; Europe/Berlin days): the September
    # event was before the line was ACC-1's and 491799999999 is no one's: neither counts.
    assert acc1 == {
        ("2026-11-02", "sms"): (1, 20_000, 1, 20_000),
        ("2026-11-03", "sms"): (1, 20_000, 1, 20_000),
        ("2026-11-04", "voice"): (1, 40_000, 1, 40_000),
        ("2026-11-05", "voice"): (1, 250_000, 1, 250_000),
        # 23:59:59 in Berlin is the 30th (22:59:59 UTC), 00:00 of 1 December is the 1st
        ("2026-11-30", "sms"): (1, 20_000, 1, 20_000),
        ("2026-12-01", "sms"): (1, 20_000, 1, 20_000),
    }
    runs.run(sample, "2026-11", now_ms=1)
    acc1 = exact(sample)["ACC-1"]
    assert pending_of(acc1) == 20_000  # December's event only
    assert acc1[("2026-11-05", "voice")] == (1, 250_000, 0, 0)
    assert acc1[("2026-12-01", "sms")] == (1, 20_000, 1, 20_000)
    # a re-run drops the draft (its events pending again) and marks them again
    runs.run(sample, "2026-11", now_ms=2)
    assert exact(sample)["ACC-1"] == acc1
    runs.issue(sample, "2026-11", now_ms=3)
    # a late November event after the invoice was issued: pending until December's run
    put_usage(sample, event(LINE, "2026-11-20T10:00:00+01:00", "sms", 7_000))
    acc1 = exact(sample)["ACC-1"]
    assert acc1[("2026-11-20", "sms")] == (1, 7_000, 1, 7_000)
    assert pending_of(acc1) == 27_000
    runs.run(sample, "2026-12", now_ms=4)
    acc1 = exact(sample)["ACC-1"]
    assert pending_of(acc1) == 0
    assert sum(s[1] for s in acc1.values()) == 377_000  # every event still in the usage sums


def test_replays_and_duplicates_count_once(billing_engine: Engine) -> None:
    build_sample(billing_engine)
    batch = [event(LINE, f"2026-11-{d:02d}T12:00:00+01:00", "data", 1_000 * d) for d in (1, 2)]
    assert usage.store_usage(billing_engine, batch) == 2
    before = exact(billing_engine)
    # the same batch again (read twice from the outbox): nothing added
    assert usage.store_usage(billing_engine, batch) == 0
    assert exact(billing_engine) == before
    # stored ones mixed with new ones, and a new one twice in the batch: the new once
    new = event(LINE, "2026-11-03T12:00:00+01:00", "data", 5_000)
    assert usage.store_usage(billing_engine, [*batch, new, dict(new)]) == 1
    acc1 = exact(billing_engine)["ACC-1"]
    assert acc1[("2026-11-03", "data")] == (1, 5_000, 1, 5_000)
    assert sum(s[0] for s in acc1.values()) == 3
    # in a caller's transaction too
    other = event(LINE, "2026-11-03T13:00:00+01:00", "data", 6_000)
    with billing_engine.begin() as c:
        assert usage.insert_usage(c, [new, other, other]) == 1
    assert exact(billing_engine)["ACC-1"][("2026-11-03", "data")] == (2, 11_000, 2, 11_000)


def test_a_batch_keeps_every_value_exact(billing_engine: Engine) -> None:
    """The batch statements (PostgreSQL: the rows as one JSON parameter) store text with
    quotes, commas, braces, backslashes and non-ASCII, and amounts past 2**53, as given."""
    build_sample(billing_engine)
    odd = ['sms "x", {y}', "voice\\ \u00e9\u4e2d", "NULL"]
    big = 2**53 + 1
    rows = [
        event(LINE, f"2026-11-0{i + 1}T12:00:00+01:00", svc, big + i, dst=svc[::-1])
        for i, svc in enumerate(odd)
    ]
    assert usage.store_usage(billing_engine, rows) == 3
    u = S.usage_event
    with billing_engine.connect() as c:
        got = c.execute(select(u.c.service, u.c.destination, u.c.amount).order_by(u.c.ts)).all()
    assert [tuple(r) for r in got] == [(svc, svc[::-1], big + i) for i, svc in enumerate(odd)]
    acc1 = exact(billing_engine)["ACC-1"]
    assert acc1[("2026-11-01", odd[0])] == (1, big, 1, big)
    assert acc1[("2026-11-02", odd[1])] == (1, big + 1, 1, big + 1)


def test_line_moves_ends_and_a_deleted_account_move_the_sums(two: Engine) -> None:
    sample = two
    put_usage(sample, event(LINE2, "2026-11-10T10:00:00+01:00", "voice", 3_000))
    exact(sample)
    # LINE moves to ACC-2 from 15 November: its events from then on are ACC-2's
    with sample.begin() as c:
        M.assign_line(c, "ACC-2", {"msisdn": LINE, "valid_from": ms("2026-11-15T00:00:00+01:00")},
                      None)  # fmt: skip
    after = exact(sample)
    assert ("2026-11-30", "sms") not in after["ACC-1"]
    assert after["ACC-2"][("2026-11-30", "sms")] == (1, 20_000, 1, 20_000)
    assert after["ACC-2"][("2026-12-01", "sms")] == (1, 20_000, 1, 20_000)
    assert pending_of(after["ACC-1"]) == 330_000
    # the line no one owned comes to ACC-2 with its past
    with sample.begin() as c:
        M.assign_line(c, "ACC-2", {"msisdn": NOBODY, "valid_from": 0}, None)
    assert exact(sample)["ACC-2"][("2026-11-05", "sms")] == (1, 20_000, 1, 20_000)
    # ACC-2's ownership of LINE ends at midnight of 1 December: that day's event is no one's
    with sample.begin() as c:
        M.end_line(c, "ACC-2", LINE, ms("2026-12-01T00:00:00+01:00"), None)
    assert ("2026-12-01", "sms") not in exact(sample)["ACC-2"]
    # its billing day changes (no invoices yet): its agency's rows move to the new day's
    with sample.begin() as c:
        M.update_account(c, "ACC-2", {"billing_day": 15}, None)
    with sample.connect() as c:
        ag2 = c.execute(select(S.org.c.id).where(S.org.c.code == "AG-2")).scalar_one()
        assert {k[1] for k in rollup.stored_agencies(c) if k[0] == ag2} == {15}
    exact(sample)
    # an account deleted (no invoices yet) takes its rows with it
    with sample.begin() as c:
        M.delete_account(c, "ACC-2", None)
    assert "ACC-2" not in exact(sample)
    with sample.connect() as c:
        assert c.execute(select(func.count()).select_from(S.usage_daily)).scalar_one() == 4
        assert len(rollup.stored_agencies(c)) == 4  # AG-1's: ACC-1's rows


def test_overlapping_owners_both_count_until_one_bills(two: Engine) -> None:
    """A line ended, then given to another account from an earlier time: both own the events
    in between (as the bill run's join sees them); the first account's run bills them, and
    they leave both pending sums."""
    sample = two
    with sample.begin() as c:
        M.end_line(c, "ACC-1", LINE, ms("2026-12-01T00:00:00+01:00"), None)
        M.assign_line(c, "ACC-2", {"msisdn": LINE, "valid_from": ms("2026-11-20T00:00:00+01:00")},
                      None)  # fmt: skip
    both = exact(sample)
    assert both["ACC-1"][("2026-11-30", "sms")] == both["ACC-2"][("2026-11-30", "sms")]
    runs.run(sample, "2026-11", account="ACC-1", now_ms=1)
    after = exact(sample)
    assert after["ACC-2"][("2026-11-30", "sms")] == (1, 20_000, 0, 0)
    assert after["ACC-2"][("2026-12-01", "sms")] == (1, 20_000, 1, 20_000)


ZONES = ("Europe/Berlin", "America/St_Johns", "Asia/Kathmandu", "Australia/Lord_Howe",
         "Pacific/Apia", "America/Santiago", "UTC")  # fmt: skip


@pytest.mark.parametrize("tz", ZONES)
def test_the_day_rule_is_the_local_date_and_billings_midnights(tz: str) -> None:
    zone = ZoneInfo(tz)
    rule = rollup.DayRule()
    # every 7 minutes and 13 s over two years (DST changes both ways; Apia skipped 30 Dec
    # 2011, so 2011 is in too), and each instant around every local midnight
    t = datetime(2011, 6, 1, tzinfo=UTC)
    stamps = []
    while t.year < 2013:
        stamps.append(int(t.timestamp() * 1000))
        t += timedelta(minutes=7, seconds=13)
    for d in range(0, 700, 3):
        m = int(datetime.combine((datetime(2011, 6, 1) + timedelta(days=d)).date(),
                                 datetime.min.time(), zone).timestamp() * 1000)  # fmt: skip
        stamps += [m - 1, m, m + 1]
    for ts in stamps:
        local = datetime.fromtimestamp(ts / 1000, zone).date().isoformat()
        assert rule.day(zone, ts) == local, (tz, ts)
    # a period's first instant is its first day's, the instant before is the last day's
    p = runs.Period.of("2026-11", tz, 15)
    start = int(p.start.timestamp() * 1000)
    assert rule.day(zone, start) == "2026-11-15"
    assert rule.day(zone, start - 1) == "2026-11-14"


def test_the_figures_of_a_period_are_its_days(billing_engine: Engine) -> None:
    """An account billed on the 15th in another zone: its days of period 2026-11 (15 Nov -
    14 Dec, local) add up to its invoice's usage, an event at 23:30 local on the 14th of
    December is that day's, not the next UTC day's."""
    build_sample(billing_engine)
    with billing_engine.begin() as c:
        M.create_account(c, {"code": "ACC-T", "name": "Tokyo office", "agency": "AG-1",
                             "tax_profile": "VAT19", "timezone": "Asia/Tokyo",
                             "billing_day": 15}, None)  # fmt: skip
        M.assign_line(c, "ACC-T", {"msisdn": "491700000077", "valid_from": 0}, None)
    put_usage(
        billing_engine,
        event("491700000077", "2026-11-14T23:59:59+09:00", "data", 1_000),  # 2026-10's
        event("491700000077", "2026-11-15T00:00:00+09:00", "data", 2_000),
        event("491700000077", "2026-12-14T23:30:00+09:00", "data", 4_000),  # UTC: the 14th
        event("491700000077", "2026-12-15T00:30:00+09:00", "data", 8_000),  # UTC: the 14th
    )
    rows = exact(billing_engine)["ACC-T"]
    assert sorted(rows) == [("2026-11-14", "data"), ("2026-11-15", "data"),
                            ("2026-12-14", "data"), ("2026-12-15", "data")]  # fmt: skip
    runs.run(billing_engine, "2026-11", account="ACC-T", now_ms=1)
    inv = runs.list_invoices(billing_engine, period="2026-11", account="ACC-T", status=None,
                             scope=None, offset=0, limit=1)[0]  # fmt: skip
    lines = runs.get_invoice(billing_engine, str(inv["id"]), None)["lines"]
    billed = sum(x["amount_micro"] for x in lines if x["kind"].startswith("usage"))
    assert billed == 1_000 + 2_000 + 4_000  # the October one is late usage, on this invoice
    assert exact(billing_engine)["ACC-T"][("2026-12-15", "data")] == (1, 8_000, 1, 8_000)
    # the dashboard's usage of the period: the same days, the same sums
    h = figures.load_hierarchy(billing_engine)
    out = figures.scope_figures(billing_engine, figures.AggregateCache(billing_engine), h,
                                "account", "ACC-T", "2026-11", service=None,
                                agency=None)  # fmt: skip
    assert out["period_usage"] == 2_000 + 4_000
    days = out["by_day"]
    assert (days[0]["day"], days[-1]["day"], len(days)) == ("2026-11-15", "2026-12-14", 30)
    assert days[0]["usage"] == 2_000 and days[-1]["usage"] == 4_000


def test_the_migration_back_fills_the_rollup(billing_url: str) -> None:
    """A database at revision 0002 with usage in it: 0003 creates the rollup from it."""
    engine = open_engine(billing_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0002")
        with engine.begin() as c:
            c.execute(insert(S.org), [
                {"id": 1, "level": "national", "code": "NAT", "name": "N", "parent_id": None},
                {"id": 2, "level": "region", "code": "R", "name": "R", "parent_id": 1},
                {"id": 3, "level": "agency", "code": "AG", "name": "A", "parent_id": 2},
            ])  # fmt: skip
            c.execute(insert(S.tax_profile).values(code="T", rate="19", mode="exclusive",
                                                   rounding="half-even"))  # fmt: skip
            c.execute(insert(S.account).values(id=1, code="A", name="A", agency_id=3,
                                               currency="EUR", tax_profile="T", billing_day=1,
                                               timezone="Europe/Berlin"))  # fmt: skip
            c.execute(insert(S.line).values(msisdn=LINE, account_id=1, valid_from=0))
            rows = [event(LINE, "2026-11-02T00:30:00+01:00", "sms", 10),
                    event(LINE, "2026-11-02T23:30:00+01:00", "sms", 20),
                    event(LINE, "2026-11-03T00:00:00+01:00", "sms", 40),
                    event(NOBODY, "2026-11-03T00:00:00+01:00", "sms", 80)]  # fmt: skip
            c.execute(insert(S.usage_event), [{**r, "line_id": None} for r in rows])
            # (billed, as far as the rollup cares)
            c.execute(update(S.usage_event).where(S.usage_event.c.amount == 40).values(line_id=9))
        engine.dispose()
        migrated = open_billing_db(billing_url)
        try:
            assert exact(migrated)["A"] == {
                ("2026-11-02", "sms"): (2, 30, 2, 30),
                ("2026-11-03", "sms"): (1, 40, 0, 0),
            }
        finally:
            migrated.dispose()
    finally:
        engine.dispose()


def ocs_billing(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ocs.cli", "billing", "--db", url, *args],
                          check=False, capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.mark.timeout(120)
def test_check_reports_drift_and_repairs_it(billing_url: str) -> None:
    engine = open_billing_db(billing_url)
    try:
        november(engine)
        assert ocs_billing(billing_url, "check").returncode == 0
        d = S.usage_daily
        with engine.begin() as c:  # drift: one micro-unit too many, and a row too few
            c.execute(update(d).where(d.c.day == "2026-11-02").values(pending=d.c.pending + 1))
            c.execute(d.delete().where(d.c.day == "2026-11-05"))
            g = S.usage_daily_agency
            c.execute(update(g).where(g.c.day == "2026-11-30").values(events=g.c.events + 1))
        out = ocs_billing(billing_url, "check")
        assert out.returncode == 2, out
        assert "ACC-1 2026-11-02 sms" in out.stdout and "ACC-1 2026-11-05 voice" in out.stdout
        assert "AG-1 day 1 2026-11-30 sms" in out.stdout
        assert "3 row(s) drifted" in out.stdout
        data: Any = json.loads(ocs_billing(billing_url, "--json", "check").stdout)
        assert data["drift"][0]["rollup"]["pending"] == data["drift"][0]["scanned"]["pending"] + 1
        out = ocs_billing(billing_url, "check", "--repair")
        assert out.returncode == 0 and "rebuilt (6 rows)" in out.stdout, out
        exact(engine)
        assert "usage rollup: exact" in ocs_billing(billing_url, "check").stdout
    finally:
        engine.dispose()
