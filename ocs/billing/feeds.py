"""The two outside feeds: orders (an ISIM-like ordering system: delivery dates, for LAD) and
tickets (a SAMS-like ticketing system: outages, for SLA penalties).

Schema version 1 (docs/billing.md): a record is a flat object; CSV files carry exactly the
documented header, JSON-lines files one object a line (``"schema": "orders/1"`` or
``"tickets/1"`` optional). Times are ISO 8601 with a UTC offset (``2026-11-03T09:00:00+01:00``):
a time without one is refused, since it would be read in some zone nobody chose.

A record is identified by its id and ``version``: the same id and version again with the same
content is a replay and changes nothing; with other content it is refused; a new version of
an id (an order delivered, a ticket closed) is kept beside the earlier ones, and the highest
version is the current one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

from sqlalchemy import Connection, Engine, func, select

from ocs.api.problems import FieldError
from ocs.billing import schema as S
from ocs.billing.errors import Invalid

Feed = Literal["orders", "tickets"]
FEEDS: Final[tuple[Feed, ...]] = ("orders", "tickets")
SCHEMA_VERSION: Final = 1

ORDER_FIELDS: Final = (
    "order_id",
    "version",
    "service_id",
    "account",
    "ordered_at",
    "committed_at",
    "delivered_at",
    "status",
)
TICKET_FIELDS: Final = (
    "ticket_id",
    "version",
    "service_id",
    "fault_start",
    "restored_at",
    "cause",
    "excluded",
)
FIELDS: Final[dict[str, tuple[str, ...]]] = {"orders": ORDER_FIELDS, "tickets": TICKET_FIELDS}
ORDER_STATUS: Final = ("open", "delivered", "cancelled")
EXCLUSIONS: Final = ("", "customer", "maintenance")


def parse_time(text: object, name: str, errors: list[str]) -> datetime | None:
    if not isinstance(text, str) or not text.strip():
        errors.append(f"{name}: is required (ISO 8601 with a UTC offset)")
        return None
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        errors.append(f"{name}: not an ISO 8601 time: {text!r}")
        return None
    if t.tzinfo is None or t.utcoffset() is None:
        errors.append(f"{name}: {text!r} has no UTC offset (write e.g. +01:00 or Z)")
        return None
    return t


def _text(rec: Mapping[str, Any], name: str, errors: list[str], *, required: bool = True) -> str:
    v = rec.get(name)
    if v is None or v == "":
        if required:
            errors.append(f"{name}: is required")
        return ""
    if not isinstance(v, str) or len(v) > 200:
        errors.append(f"{name}: must be a string of at most 200 characters")
        return ""
    return v.strip()


def _version(rec: Mapping[str, Any], errors: list[str]) -> int:
    v = rec.get("version")
    if isinstance(v, str) and v.strip().isdigit():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        errors.append("version: must be an integer >= 1")
        return 0
    return v


@dataclass(frozen=True, slots=True)
class Checked:
    """A valid record, normalised, ready to store; ``key`` is (id, version)."""

    feed: Feed
    key: tuple[str, int]
    values: dict[str, Any]
    digest: str


def _digest(values: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def _known_service(conn: Connection, service_id: str) -> tuple[str, str] | None:
    """(service id, its account's code) of a known fixed service."""
    r = conn.execute(
        select(S.fixed_service.c.service_id, S.account.c.code)
        .select_from(S.fixed_service.join(S.account))
        .where(S.fixed_service.c.service_id == service_id)
    ).first()
    return (r[0], r[1]) if r else None


def check_record(conn: Connection, feed: Feed, rec: object) -> Checked | list[str]:
    """The record validated against the schema and the hierarchy, or its problems."""
    errors: list[str] = []
    if not isinstance(rec, Mapping):
        return ["record: must be an object"]
    schema = rec.get("schema")
    if schema not in (None, "", f"{feed}/{SCHEMA_VERSION}"):
        errors.append(f"schema: this OCS reads {feed}/{SCHEMA_VERSION}, not {schema!r}")
    unknown = set(rec) - set(FIELDS[feed]) - {"schema"}
    if unknown:
        errors.append(f"unknown field(s): {', '.join(sorted(unknown))}")
    version = _version(rec, errors)
    service_id = _text(rec, "service_id", errors)
    known = _known_service(conn, service_id) if service_id else None
    if service_id and known is None:
        errors.append(f"service_id: unknown service {service_id!r}")
    values: dict[str, Any]
    if feed == "orders":
        rid = _text(rec, "order_id", errors)
        account = _text(rec, "account", errors)
        status = _text(rec, "status", errors)
        if status and status not in ORDER_STATUS:
            errors.append(f"status: must be one of {', '.join(ORDER_STATUS)}")
        ordered = parse_time(rec.get("ordered_at"), "ordered_at", errors)
        committed = parse_time(rec.get("committed_at"), "committed_at", errors)
        delivered = None
        if rec.get("delivered_at") not in (None, ""):
            delivered = parse_time(rec.get("delivered_at"), "delivered_at", errors)
        if status == "delivered" and rec.get("delivered_at") in (None, ""):
            errors.append("delivered_at: is required when status is delivered")
        if status == "open" and delivered is not None:
            errors.append("delivered_at: an open order has no delivery time")
        if ordered and committed and committed < ordered:
            errors.append("committed_at: is before ordered_at")
        if ordered and delivered and delivered < ordered:
            errors.append("delivered_at: is before ordered_at")
        if known and account and known[1] != account:
            errors.append(f"account: service {service_id!r} belongs to account {known[1]!r}")
        values = {
            "order_id": rid,
            "version": version,
            "service_id": service_id,
            "account_code": account,
            "ordered_at": _iso(ordered),
            "committed_at": _iso(committed),
            "delivered_at": _iso(delivered),
            "status": status,
        }
    else:
        rid = _text(rec, "ticket_id", errors)
        start = parse_time(rec.get("fault_start"), "fault_start", errors)
        restored = None
        if rec.get("restored_at") not in (None, ""):
            restored = parse_time(rec.get("restored_at"), "restored_at", errors)
        if start and restored and restored < start:
            errors.append("restored_at: is before fault_start (restore before start)")
        excluded = _text(rec, "excluded", errors, required=False)
        if excluded not in EXCLUSIONS:
            errors.append("excluded: must be empty, customer or maintenance")
        values = {
            "ticket_id": rid,
            "version": version,
            "service_id": service_id,
            "fault_start": _iso(start),
            "restored_at": _iso(restored),
            "cause": _text(rec, "cause", errors, required=False),
            "excluded": excluded,
        }
    if errors:
        return errors
    return Checked(feed, (rid, version), values, _digest(values))


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def _table(feed: Feed) -> Any:
    return S.order_version if feed == "orders" else S.ticket_version


def _id_column(feed: Feed) -> Any:
    t = _table(feed)
    return t.c.order_id if feed == "orders" else t.c.ticket_id


Outcome = Literal["stored", "replay"]


def store_checked(conn: Connection, c: Checked, now_ms: int) -> Outcome | str:
    """Store a checked record: "stored", "replay" (the same record again: nothing changes),
    or the reason it is refused (the same id and version with other content)."""
    t = _table(c.feed)
    rid, version = c.key
    prev = conn.execute(
        select(t.c.digest).where(_id_column(c.feed) == rid, t.c.version == version)
    ).first()
    if prev is not None:
        if prev.digest == c.digest:
            return "replay"
        return f"{c.feed[:-1]} {rid!r} version {version} was received with other content"
    conn.execute(t.insert().values(**c.values, digest=c.digest, received_at=now_ms))
    return "stored"


@dataclass(slots=True)
class FeedResult:
    stored: int = 0
    replays: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)


def accept_batch(engine: Engine, feed: Feed, records: Sequence[object], now_ms: int) -> FeedResult:
    """Validate every record, then store them all in one transaction, or none: a batch with
    any bad record raises :class:`Invalid` naming each one (``records[i]: reason``)."""
    result = FeedResult()
    with engine.begin() as conn:
        problems: list[FieldError] = []
        checked: list[Checked] = []
        seen: dict[tuple[str, int], str] = {}
        for i, rec in enumerate(records):
            c = check_record(conn, feed, rec)
            if isinstance(c, list):
                problems.extend(FieldError(f"records[{i}]", p) for p in c)
                continue
            if seen.get(c.key, c.digest) != c.digest:
                problems.append(
                    FieldError(
                        f"records[{i}]",
                        "duplicate id and version with other content in the same batch",
                    )
                )
            seen[c.key] = c.digest
            checked.append(c)
        if not problems:
            for i, c in enumerate(checked):
                out = store_checked(conn, c, now_ms)
                if out == "stored":
                    result.stored += 1
                elif out == "replay":
                    result.replays += 1
                else:
                    problems.append(FieldError(f"records[{i}]", out))
        if problems:
            conn.rollback()
            raise Invalid(problems)
    return result


# -- files ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A line of a feed file that is not a record at all (why)."""

    reason: str


def read_records(feed: Feed, name: str, text: str) -> list[tuple[int, object]] | str:
    """(line number, record) of a CSV or JSON-lines file, or why the file cannot be read."""
    if name.endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
        header = tuple(reader.fieldnames or ())
        if header != FIELDS[feed]:
            return (
                f"CSV header must be {','.join(FIELDS[feed])} ({feed}/{SCHEMA_VERSION}), "
                f"got {','.join(header)}"
            )
        out: list[tuple[int, object]] = []
        for row in reader:
            if None in row:
                out.append((reader.line_num, Unreadable("too many columns")))
                continue
            out.append((reader.line_num, {k: v for k, v in row.items() if v != ""}))
        return out
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            out.append((n, json.loads(raw)))
        except json.JSONDecodeError as exc:
            out.append((n, Unreadable(f"not JSON: {exc.msg}")))
    return out


def import_file(
    engine: Engine, feed: Feed, path: Path, rejected_dir: Path, now_ms: int
) -> FeedResult:
    """Store the file's good records (one transaction), write the bad ones with their reasons
    to ``rejected_dir/<name>.rejected.jsonl``."""
    result = FeedResult()
    parsed = read_records(feed, path.name, path.read_text(encoding="utf-8"))
    if isinstance(parsed, str):
        result.rejected.append({"line": 0, "reason": parsed})
    else:
        with engine.begin() as conn:
            for n, rec in parsed:
                if isinstance(rec, Unreadable):
                    out: str = rec.reason
                else:
                    c = check_record(conn, feed, rec)
                    out = "; ".join(c) if isinstance(c, list) else store_checked(conn, c, now_ms)
                if out == "stored":
                    result.stored += 1
                elif out == "replay":
                    result.replays += 1
                else:
                    result.rejected.append(
                        {
                            "line": n,
                            "record": None if isinstance(rec, Unreadable) else rec,
                            "reason": out,
                        }
                    )
    if result.rejected:
        rejected_dir.mkdir(parents=True, exist_ok=True)
        with open(rejected_dir / f"{path.name}.rejected.jsonl", "w", encoding="utf-8") as f:
            for r in result.rejected:
                f.write(json.dumps(r, sort_keys=True, default=str) + "\n")
    return result


def import_dir(engine: Engine, directory: Path, now_ms: int) -> dict[str, FeedResult]:
    """Every file in ``<directory>/orders/`` and ``<directory>/tickets/`` (``*.csv``,
    ``*.jsonl``), oldest name first; each moves to ``done/`` once stored, its bad records to
    ``rejected/``. A file imported again (put back) changes nothing: its records are replays."""
    results: dict[str, FeedResult] = {}
    for feed in FEEDS:
        folder = directory / feed
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.iterdir() if p.suffix in (".csv", ".jsonl")):
            r = import_file(engine, feed, path, directory / "rejected" / feed, now_ms)
            results[f"{feed}/{path.name}"] = r
            done = directory / "done" / feed
            done.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), done / path.name)
    return results


# -- current versions ----------------------------------------------------------------------


def current(conn: Connection, feed: Feed, where: Any = None) -> list[Any]:
    """The current (highest) version of each record, optionally filtered."""
    t = _table(feed)
    idc = _id_column(feed)
    newer = t.alias("newer")
    newer_id = newer.c.order_id if feed == "orders" else newer.c.ticket_id
    latest = select(func.max(newer.c.version)).where(newer_id == idc).scalar_subquery()
    q = select(t).where(t.c.version == latest)
    if where is not None:
        q = q.where(where)
    return list(conn.execute(q.order_by(idc)))


def history(
    conn: Connection, feed: Feed, rid: str, scope: str | None = None
) -> list[dict[str, Any]]:
    """Every version of record ``rid``; with ``scope`` (an agency code), only if it concerns
    that agency's accounts (an order by its account, a ticket by its service's account), so
    another agency's record is not found rather than shown."""
    t = _table(feed)
    q = select(t).where(_id_column(feed) == rid).order_by(t.c.version)
    if scope is not None:
        accounts = (
            select(S.account.c.id, S.account.c.code)
            .join(S.org, S.org.c.id == S.account.c.agency_id)
            .where(S.org.c.code == scope)
            .subquery()
        )
        if feed == "orders":
            q = q.where(t.c.account_code.in_(select(accounts.c.code)))
        else:
            services = select(S.fixed_service.c.service_id).where(
                S.fixed_service.c.account_id.in_(select(accounts.c.id))
            )
            q = q.where(t.c.service_id.in_(services))
    return [dict(r._mapping) for r in conn.execute(q)]
