"""The order and ticket feeds: validation with reasons, replays, versions, files (CSV and
JSON lines) with a rejected file, the simulators; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from ocs.billing import feeds
from ocs.billing import schema as S
from ocs.billing.errors import Invalid
from ocs.sims import feeds as feedsim
from tests.billing_db import build_sample

ORDER: dict[str, Any] = {
    "order_id": "O-1", "version": 1, "service_id": "L-1", "account": "ACC-1",
    "ordered_at": "2026-10-01T10:00:00+02:00", "committed_at": "2026-11-10T12:00:00+01:00",
    "delivered_at": None, "status": "open",
}  # fmt: skip
TICKET: dict[str, Any] = {
    "ticket_id": "T-1", "version": 1, "service_id": "L-1",
    "fault_start": "2026-11-20T10:00:00+01:00", "restored_at": "2026-11-20T12:00:00+01:00",
    "cause": "fibre cut", "excluded": "",
}  # fmt: skip


@pytest.fixture
def engine(billing_engine: Engine) -> Engine:
    build_sample(billing_engine)
    return billing_engine


def count(e: Engine, feed: feeds.Feed) -> int:
    t = S.order_version if feed == "orders" else S.ticket_version
    with e.connect() as c:
        return int(c.execute(select(func.count()).select_from(t)).scalar_one())


@pytest.mark.parametrize(
    ("feed", "change", "reason"),
    [
        ("orders", {"service_id": "NOPE"}, "unknown service 'NOPE'"),
        ("orders", {"committed_at": "2026-11-10T12:00:00"}, "has no UTC offset"),
        ("orders", {"committed_at": "10/11/2026"}, "not an ISO 8601 time"),
        ("orders", {"account": "ACC-9"}, "belongs to account 'ACC-1'"),
        ("orders", {"status": "delivered"}, "delivered_at: is required"),
        ("orders", {"status": "lost"}, "status: must be one of"),
        ("orders", {"version": 0}, "version: must be an integer >= 1"),
        ("orders", {"committed_at": "2026-09-01T12:00:00+02:00"}, "is before ordered_at"),
        ("orders", {"colour": "red"}, "unknown field(s): colour"),
        ("orders", {"schema": "orders/2"}, "this OCS reads orders/1"),
        ("tickets", {"restored_at": "2026-11-20T09:00:00+01:00"}, "restore before start"),
        ("tickets", {"fault_start": "2026-11-20 10:00"}, "has no UTC offset"),
        ("tickets", {"excluded": "weather"}, "excluded: must be"),
        ("tickets", {"service_id": "L-404"}, "unknown service"),
    ],
)
def test_bad_records_are_refused_with_reasons_and_change_nothing(
    engine: Engine, feed: feeds.Feed, change: dict[str, Any], reason: str
) -> None:
    good = ORDER if feed == "orders" else TICKET
    other = {**good, ("order_id" if feed == "orders" else "ticket_id"): "OK-1"}
    with pytest.raises(Invalid) as err:
        feeds.accept_batch(engine, feed, [other, {**good, **change}], 0)
    assert any(e.field == "records[1]" and reason in e.detail for e in err.value.errors), (
        err.value.errors
    )
    assert count(engine, feed) == 0  # the good record in the batch was not stored either


def test_replay_changes_nothing_and_versions_are_kept(engine: Engine) -> None:
    assert feeds.accept_batch(engine, "orders", [ORDER], 1).stored == 1
    r = feeds.accept_batch(engine, "orders", [ORDER], 2)
    assert (r.stored, r.replays) == (0, 1)
    with pytest.raises(Invalid) as err:  # the same id and version with other content
        feeds.accept_batch(engine, "orders", [{**ORDER, "committed_at":
                                               "2026-11-11T12:00:00+01:00"}], 3)  # fmt: skip
    assert "version 1 was received with other content" in err.value.errors[0].detail
    delivered = {**ORDER, "version": 2, "status": "delivered",
                 "delivered_at": "2026-11-15T09:00:00+01:00"}  # fmt: skip
    assert feeds.accept_batch(engine, "orders", [delivered], 4).stored == 1
    with engine.connect() as c:
        history = feeds.history(c, "orders", "O-1")
        (cur,) = feeds.current(c, "orders")
    assert [h["version"] for h in history] == [1, 2]
    assert (cur.version, cur.status) == (2, "delivered")


def test_files_csv_and_jsonl_with_a_rejected_file(engine: Engine, tmp_path: Path) -> None:
    (tmp_path / "orders").mkdir()
    (tmp_path / "tickets").mkdir()
    csv_text = ",".join(feeds.ORDER_FIELDS) + "\n"
    csv_text += "O-1,1,L-1,ACC-1,2026-10-01T10:00:00+02:00,2026-11-10T12:00:00+01:00,,open\n"
    csv_text += "O-2,1,L-9,ACC-1,2026-10-01T10:00:00+02:00,2026-11-10T12:00:00+01:00,,open\n"
    (tmp_path / "orders" / "isim-1.csv").write_text(csv_text)
    lines = [
        json.dumps(TICKET),
        "{not json",
        json.dumps({**TICKET, "ticket_id": "T-2", "restored_at": "2026-11-19T00:00:00Z"}),
    ]
    (tmp_path / "tickets" / "sams-1.jsonl").write_text("\n".join(lines) + "\n")
    results = feeds.import_dir(engine, tmp_path, 1)
    assert (results["orders/isim-1.csv"].stored, len(results["orders/isim-1.csv"].rejected)) == (
        1, 1)  # fmt: skip
    assert (results["tickets/sams-1.jsonl"].stored,
            len(results["tickets/sams-1.jsonl"].rejected)) == (1, 2)  # fmt: skip
    rejected = [json.loads(x) for x in
                (tmp_path / "rejected" / "tickets" / "sams-1.jsonl.rejected.jsonl")
                .read_text().splitlines()]  # fmt: skip
    assert [r["line"] for r in rejected] == [2, 3]
    assert "not JSON" in rejected[0]["reason"]
    assert "restore before start" in rejected[1]["reason"]
    assert "unknown service 'L-9'" in (
        tmp_path / "rejected" / "orders" / "isim-1.csv.rejected.jsonl").read_text()  # fmt: skip
    assert (tmp_path / "done" / "orders" / "isim-1.csv").exists()
    assert not (tmp_path / "orders" / "isim-1.csv").exists()
    # The same file again: replays only.
    (tmp_path / "done" / "orders" / "isim-1.csv").rename(tmp_path / "orders" / "isim-1.csv")
    again = feeds.import_dir(engine, tmp_path, 2)["orders/isim-1.csv"]
    assert (again.stored, again.replays) == (0, 1)
    assert count(engine, "orders") == 1


def test_a_csv_with_the_wrong_header_is_rejected_whole(engine: Engine, tmp_path: Path) -> None:
    (tmp_path / "orders").mkdir()
    (tmp_path / "orders" / "x.csv").write_text("id,when\n1,2\n")
    r = feeds.import_dir(engine, tmp_path, 1)["orders/x.csv"]
    assert r.stored == 0
    assert "CSV header must be" in r.rejected[0]["reason"]


def test_simulators_write_valid_feeds(engine: Engine, tmp_path: Path) -> None:
    svcs = feedsim.services(engine)
    assert svcs == [("L-1", "ACC-1", "Europe/Berlin", "99.9")]
    orders = feedsim.simulate_orders(svcs, "2026-11")
    tickets = feedsim.simulate_tickets(svcs * 1, "2026-11", seed=5)
    assert orders == feedsim.simulate_orders(svcs, "2026-11")  # deterministic
    feedsim.write_feed(tmp_path, "orders", "sim", orders, "csv")
    feedsim.write_feed(tmp_path, "tickets", "sim", tickets, "jsonl")
    results = feeds.import_dir(engine, tmp_path, 1)
    assert all(not r.rejected for r in results.values()), results
    assert results["orders/sim.csv"].stored == len(orders)
