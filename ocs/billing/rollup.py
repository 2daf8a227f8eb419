"""The usage rollup: per account, local day and service, the usage of the account's lines and
the part of it on no invoice yet (``billing_usage_daily``), kept by the statements that
change what it sums, in their own transactions:

- ingestion (:mod:`ocs.billing.usage`) adds the events it actually inserted (a replayed event,
  skipped by ``ON CONFLICT DO NOTHING``, adds nothing);
- a bill run's marking (``runs.mark_usage``) takes the events it points to an invoice line
  off the pending sums; dropping a draft (a re-run) puts the events it frees back;
- a line's ownership changing (``model.assign_line``, ``end_line``, ``delete_account``)
  moves its events' sums from the accounts that owned them to those that own them now;
- an account's billing day changing (``model.update_account``) moves its sums between its
  agency's rows.

Two tables: the accounts' rows (``billing_usage_daily``: account, day, service) and the same
added up per agency and billing day of its accounts (``billing_usage_daily_agency``), which
the national and regional figures read; every write goes to both in one step (:func:`apply`).

An event counts for every account owning its line at the event's time (``valid_from <= ts <
valid_to``), as the bill run and the figures join them. The invariant, to the micro-unit: the
accounts' rows equal :func:`scan` of the usage events, and the agencies' rows their sums;
``ocs billing check`` (:func:`drift`) verifies both and ``--repair`` (:func:`rebuild`)
restores them.

The day is billing's day rule (:class:`DayRule`): the account's local day, from one midnight
of its zone to the next, exactly the midnights that bound its billing periods
(``runs.Period``), so a period's days add up to its usage.
"""

from __future__ import annotations

import contextlib
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime, time
from typing import Any, Final, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, and_, select

from ocs.billing import schema as S
from ocs.billing.db import pg_rows

__all__ = [
    "RULE",
    "DayRule",
    "apply",
    "billed",
    "check",
    "drift",
    "ingested",
    "moving",
    "rebilled",
    "rebuild",
    "scan",
    "stored",
    "unbilled",
]

DAY_MS: Final = 86_400_000
_EPOCH: Final = date(1970, 1, 1).toordinal()
#: The sums of a row, in the table's column order.
SUMS: Final = ("events", "amount", "pending_events", "pending")
#: At most this many values in one IN list.
_CHUNK: Final = 2_000
_CACHE_MAX: Final = 200_000

#: (account id, day "YYYY-MM-DD", service)
Key = tuple[int, str, str]
#: (agency id, billing day of its accounts, day, service)
AgencyKey = tuple[int, int, str, str]
#: [events, amount, pending events, pending]
Sums = list[int]


class DayRule:
    """Billing's day rule: day D of an account runs from midnight of D in the account's zone
    (``datetime.combine(D, time(), zone)``, as ``runs.Period`` bounds periods; where a DST
    change skips midnight, the day starts when the clocks do) to midnight of D+1. Computed
    from cached midnights (two look-ups an event), not by converting each event's time."""

    def __init__(self) -> None:
        self._midnights: dict[tuple[str, int], int] = {}
        self._texts: dict[int, str] = {}
        self._windows: dict[tuple[str, int], tuple[int, int, str, str, str]] = {}

    def midnight(self, zone: ZoneInfo, ordinal: int) -> int:
        """Unix ms of the start of day ``ordinal`` (proleptic Gregorian) in ``zone``."""
        key = (zone.key, ordinal)
        found = self._midnights.get(key)
        if found is None:
            if len(self._midnights) > _CACHE_MAX:
                self._midnights.clear()
            t = datetime.combine(date.fromordinal(ordinal), time(), zone)
            found = self._midnights[key] = int(t.timestamp() * 1000)
        return found

    def ordinal(self, zone: ZoneInfo, ts: int) -> int:
        """The local day (ordinal) of the instant ``ts`` (Unix ms) in ``zone``."""
        d = ts // DAY_MS + _EPOCH  # the UTC day; zones are less than a day off it
        if ts >= self.midnight(zone, d + 1):
            return d + 1
        if ts >= self.midnight(zone, d):
            return d
        return d - 1

    def text(self, ordinal: int) -> str:
        found = self._texts.get(ordinal)
        if found is None:
            if len(self._texts) > _CACHE_MAX:
                self._texts.clear()
            found = self._texts[ordinal] = date.fromordinal(ordinal).isoformat()
        return found

    def day(self, zone: ZoneInfo, ts: int) -> str:
        """The local day of ``ts`` in ``zone``, ``YYYY-MM-DD``: one look-up of the UTC day
        of ``ts`` (the midnights of the local days it meets, and their names) and two
        comparisons."""
        key = (zone.key, ts // DAY_MS)
        w = self._windows.get(key)
        if w is None:
            if len(self._windows) > _CACHE_MAX:
                self._windows.clear()
            d = key[1] + _EPOCH
            w = self._windows[key] = (
                self.midnight(zone, d),
                self.midnight(zone, d + 1),
                self.text(d - 1),
                self.text(d),
                self.text(d + 1),
            )
        return w[4] if ts >= w[1] else w[3] if ts >= w[0] else w[2]


#: The rule every writer and reader of the rollup uses.
RULE: Final = DayRule()


class Owner(NamedTuple):
    valid_from: int
    valid_to: int | None
    account_id: int
    zone: ZoneInfo
    #: The account's agency and billing day (its agency row's key).
    agency_id: int
    billing_day: int


class Event(NamedTuple):
    msisdn: str
    ts: int
    service: str
    amount: int
    #: On no invoice line (counts in the pending sums).
    unbilled: bool = True


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


_OWNERS: Final = (
    "SELECT l.msisdn, l.valid_from, l.valid_to, l.account_id, a.timezone, a.agency_id, "
    f"a.billing_day FROM {S.line.name} l JOIN {S.account.name} a ON a.id = l.account_id "
    "WHERE l.msisdn "
)
_ZONES: dict[str, ZoneInfo] = {}


def owners(conn: Connection, msisdns: Iterable[str]) -> dict[str, list[Owner]]:
    """Every ownership of each of ``msisdns``: (from, to, account, the account's zone, its
    agency and billing day). One statement, the numbers as one parameter (a JSON list),
    its rows fetched by the driver's cursor at once (a batch's owners are
    thousands of rows: SQLAlchemy's row processing cost more than the query)."""
    out: dict[str, list[Owner]] = defaultdict(list)
    wanted = sorted(set(msisdns))
    if not wanted:
        return out
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if conn.dialect.name == "postgresql":
            cursor.execute(
                _OWNERS + "IN (SELECT json_array_elements_text(%(m)s::json))",
                {"m": json.dumps(wanted)},
            )
        else:
            cursor.execute(_OWNERS + "IN (SELECT value FROM json_each(?))", (json.dumps(wanted),))
        rows = cursor.fetchall()
    finally:
        cursor.close()
    zones = _ZONES
    for m, lo, hi, account_id, tz, agency_id, billing_day in rows:
        zone = zones.get(tz) or zones.setdefault(tz, ZoneInfo(tz))
        out[m].append(
            Owner(int(lo), None if hi is None else int(hi), account_id, zone, agency_id,
                  int(billing_day))
        )  # fmt: skip
    return out


def tally(
    conn: Connection,
    events: Sequence[Event],
    *,
    usage: int,
    pending: int,
    agencies: dict[int, tuple[int, int]] | None = None,
) -> dict[Key, Sums]:
    """What ``events`` add to the rollup (each for every account owning its line at its
    time), times ``usage`` for the usage sums and ``pending`` for the pending ones (unbilled
    events only): +1, -1 or 0. ``agencies``: filled with each account's (agency, billing
    day), for :func:`apply`."""
    out: dict[Key, Sums] = {}
    if not events:
        return out
    found = owners(conn, (e.msisdn for e in events))
    if agencies is not None:
        for owned in found.values():
            for o in owned:
                agencies[o.account_id] = (o.agency_id, o.billing_day)
    day = RULE.day
    for e in events:
        for o in found.get(e.msisdn, ()):
            ts = e.ts
            if ts < o.valid_from or (o.valid_to is not None and ts >= o.valid_to):
                continue
            key = (o.account_id, day(o.zone, ts), e.service)
            s = out.get(key)
            if s is None:
                s = out[key] = [0, 0, 0, 0]
            s[0] += usage
            s[1] += usage * e.amount
            if e.unbilled:
                s[2] += pending
                s[3] += pending * e.amount
    return out


def _merge(into: dict[Key, Sums], more: Mapping[Key, Sums]) -> dict[Key, Sums]:
    for k, v in more.items():
        s = into.setdefault(k, [0, 0, 0, 0])
        for i in range(4):
            s[i] += v[i]
    return into


def _upserts(table: str, keys: Sequence[str], types: Sequence[str]) -> tuple[str, str]:
    """(SQLite's, PostgreSQL's) upsert adding rows' sums to ``table``'s."""
    cols = (*keys, *SUMS)
    conflict = f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET " + ", ".join(
        f"{c} = {table}.{c} + excluded.{c}" for c in SUMS
    )
    lite = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    # (PostgreSQL: one statement for all the rows, sent as one JSON parameter, one round
    # trip; the keys of a delta are unique)
    pg = f"INSERT INTO {table} ({', '.join(cols)}) {pg_rows((*types, *('bigint',) * 4))}"
    return lite + conflict, pg + conflict


_ACCOUNT_UPSERT: Final = _upserts(S.usage_daily.name, ("account_id", "day", "service"),
                                  ("integer", "text", "text"))  # fmt: skip
_AGENCY_UPSERT: Final = _upserts(
    S.usage_daily_agency.name,
    ("agency_id", "billing_day", "day", "service"),
    ("integer", "integer", "text", "text"),
)


def _upsert(conn: Connection, stmts: tuple[str, str], rows: Sequence[tuple[Any, ...]]) -> None:
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(stmts[1], {"rows": json.dumps(rows)})
    else:
        conn.exec_driver_sql(stmts[0], list(rows))


def _agencies(conn: Connection, accounts: Iterable[int]) -> dict[int, tuple[int, int]]:
    """account id -> (its agency's id, its billing day)."""
    acc = S.account
    ids = sorted(set(accounts))
    out: dict[int, tuple[int, int]] = {}
    for i in range(0, len(ids), _CHUNK):
        q = select(acc.c.id, acc.c.agency_id, acc.c.billing_day).where(
            acc.c.id.in_(ids[i : i + _CHUNK])
        )
        out.update({a: (g, bd) for a, g, bd in conn.execute(q)})
    return out


def by_agency(
    delta: Mapping[Key, Sequence[int]], agencies: Mapping[int, tuple[int, int]]
) -> dict[AgencyKey, Sums]:
    """Accounts' rows added up per (agency, billing day, day, service)."""
    out: dict[AgencyKey, Sums] = {}
    for (a, d, svc), v in delta.items():
        g, bd = agencies[a]
        s = out.setdefault((g, bd, d, svc), [0, 0, 0, 0])
        for i in range(4):
            s[i] += v[i]
    return out


def apply(
    conn: Connection,
    delta: Mapping[Key, Sums],
    agencies: Mapping[int, tuple[int, int]] | None = None,
) -> None:
    """Add ``delta`` to the rollup, the accounts' rows and their agencies' (one upsert
    each), in the caller's transaction. ``agencies``: the accounts' (agency, billing day)
    where known (:func:`tally`'s), the others are read."""
    live = {k: v for k, v in delta.items() if any(v)}
    if not live:
        return
    _upsert(conn, _ACCOUNT_UPSERT, [(*k, *v) for k, v in sorted(live.items())])
    known = dict(agencies or {})
    missing = {k[0] for k in live} - known.keys()
    if missing:
        known.update(_agencies(conn, missing))
    agency = by_agency(live, known)
    _upsert(conn, _AGENCY_UPSERT, [(*k, *v) for k, v in sorted(agency.items()) if any(v)])


def rebilled(conn: Connection, account_id: int, before: int, after: int) -> None:
    """The account's billing day changes from ``before`` to ``after``: its sums move between
    its agency's rows of the two days (call before the account's row changes)."""
    t = S.usage_daily
    rows = conn.execute(
        select(t.c.day, t.c.service, *(t.c[c] for c in SUMS)).where(t.c.account_id == account_id)
    ).all()
    if not rows:
        return
    ((agency_id, _),) = _agencies(conn, [account_id]).values()
    out = []
    for day, svc, *sums in rows:
        out.append((agency_id, before, day, svc, *(-int(x) for x in sums)))
        out.append((agency_id, after, day, svc, *(int(x) for x in sums)))
    _upsert(conn, _AGENCY_UPSERT, out)
    _drop_empty(conn, [agency_id], agency=True)


def _drop_empty(conn: Connection, ids: Sequence[int], *, agency: bool = False) -> None:
    """Delete the rows of ``ids`` (accounts, or agencies) left with no event."""
    t = S.usage_daily_agency if agency else S.usage_daily
    col = t.c.agency_id if agency else t.c.account_id
    if ids:
        conn.execute(t.delete().where(col.in_(ids), t.c.events == 0, t.c.pending_events == 0))


def _as_events(rows: Iterable[Any], unbilled: bool = True) -> list[Event]:
    return [Event(r[0], int(r[1]), r[2], int(r[3]), unbilled) for r in rows]


def ingested(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Usage rows just inserted (unbilled): onto the usage and pending sums."""
    events = [Event(r["msisdn"], int(r["ts"]), r["service"], int(r["amount"])) for r in rows]
    agencies: dict[int, tuple[int, int]] = {}
    apply(conn, tally(conn, events, usage=1, pending=1, agencies=agencies), agencies)


def billed(conn: Connection, rows: Iterable[Any]) -> None:
    """Events (msisdn, ts, service, amount) just pointed to an invoice line: off the pending
    sums."""
    agencies: dict[int, tuple[int, int]] = {}
    apply(conn, tally(conn, _as_events(rows), usage=0, pending=-1, agencies=agencies), agencies)


def unbilled(conn: Connection, rows: Iterable[Any]) -> None:
    """Events (msisdn, ts, service, amount) just freed from their invoice line (a draft
    dropped): back onto the pending sums."""
    apply(conn, tally(conn, _as_events(rows), usage=0, pending=1))


def _events_of(conn: Connection, msisdns: Sequence[str]) -> list[Event]:
    u = S.usage_event
    out: list[Event] = []
    for part in _chunks(sorted(set(msisdns))):
        rows = conn.execute(
            select(u.c.msisdn, u.c.ts, u.c.service, u.c.amount, u.c.line_id.is_(None)).where(
                u.c.msisdn.in_(part)
            )
        )
        out += [Event(m, int(ts), svc, int(a), bool(free)) for m, ts, svc, a, free in rows]
    return out


@contextlib.contextmanager
def moving(conn: Connection, msisdns: Sequence[str]) -> Iterator[None]:
    """Around a change of the ownership of ``msisdns`` (in the caller's transaction): their
    events' sums are taken from the accounts that owned them before and given to those that
    own them after; rows left with no event are deleted."""
    events = _events_of(conn, msisdns)
    delta = tally(conn, events, usage=-1, pending=-1)
    yield
    _merge(delta, tally(conn, events, usage=1, pending=1))
    accounts = sorted({k[0] for k, s in delta.items() if any(s)})
    agencies = sorted({g for g, _ in _agencies(conn, accounts).values()})
    apply(conn, delta)
    _drop_empty(conn, accounts)
    _drop_empty(conn, agencies, agency=True)


# -- the check -----------------------------------------------------------------------------


def scan(conn: Connection) -> dict[Key, tuple[int, ...]]:
    """The rollup as the usage events give it, scanned: every event joined to the lines that
    owned its MSISDN at its time (as the bill run and the aggregates did before the rollup),
    by account, local day and service."""
    u, ln, acc = S.usage_event, S.line, S.account
    rows = conn.execute(
        select(ln.c.account_id, acc.c.timezone, u.c.ts, u.c.service, u.c.amount)
        .add_columns(u.c.line_id.is_(None))
        .select_from(
            u.join(
                ln,
                and_(
                    u.c.msisdn == ln.c.msisdn,
                    u.c.ts >= ln.c.valid_from,
                    ln.c.valid_to.is_(None) | (u.c.ts < ln.c.valid_to),
                ),
            ).join(acc, ln.c.account_id == acc.c.id)
        )
    )
    out: dict[Key, Sums] = {}
    zones: dict[str, ZoneInfo] = {}
    for account_id, tz, ts, svc, amount, free in rows:
        zone = zones.get(tz) or zones.setdefault(tz, ZoneInfo(tz))
        s = out.setdefault((account_id, RULE.day(zone, int(ts)), svc), [0, 0, 0, 0])
        s[0] += 1
        s[1] += int(amount)
        if free:
            s[2] += 1
            s[3] += int(amount)
    return {k: tuple(v) for k, v in out.items()}


def stored(conn: Connection) -> dict[Key, tuple[int, ...]]:
    """The rollup's rows."""
    t = S.usage_daily
    return {
        (r.account_id, r.day, r.service): (
            int(r.events),
            int(r.amount),
            int(r.pending_events),
            int(r.pending),
        )
        for r in conn.execute(select(t))
    }


def stored_agencies(conn: Connection) -> dict[AgencyKey, tuple[int, ...]]:
    """The agencies' rows of the rollup."""
    t = S.usage_daily_agency
    return {
        (r.agency_id, r.billing_day, r.day, r.service): tuple(int(r._mapping[c]) for c in SUMS)
        for r in conn.execute(select(t))
    }


def _differences(
    want: Mapping[Any, Sequence[int]],
    have: Mapping[Any, Sequence[int]],
    names: Sequence[str],
    code: Mapping[int, str],
) -> list[dict[str, Any]]:
    """The keys whose sums differ, named ``names`` (the first an id, shown by its ``code``),
    in the order of the codes, then the rest of the key."""
    zero = (0, 0, 0, 0)
    out = []
    for key in sorted(set(want) | set(have), key=lambda k: (code.get(k[0], ""), *k[1:])):
        w, h = tuple(want.get(key, zero)), tuple(have.get(key, zero))
        if w != h:
            out.append(
                {
                    names[0]: code.get(key[0], str(key[0])),
                    **dict(zip(names[1:], key[1:], strict=True)),
                    "scanned": dict(zip(SUMS, w, strict=True)),
                    "rollup": dict(zip(SUMS, h, strict=True)),
                }
            )
    return out


def drift(conn: Connection) -> list[dict[str, Any]]:
    """Where the rollup differs from :func:`scan` (empty: it is exact), the accounts' rows
    (account and day in order) then the agencies' (``agency``, ``billing_day``), with both
    sides' sums."""
    want = scan(conn)
    codes = dict(conn.execute(select(S.account.c.id, S.account.c.code)).all())
    orgs = dict(conn.execute(select(S.org.c.id, S.org.c.code)).all())
    return [
        *_differences(want, stored(conn), ("account", "day", "service"), codes),
        *_differences(
            by_agency(want, _agencies(conn, codes)),
            stored_agencies(conn),
            ("agency", "billing_day", "day", "service"),
            orgs,
        ),
    ]


def rebuild(conn: Connection) -> int:
    """Replace the rollup with :func:`scan` (the migration's back-fill, ``check --repair``);
    how many rows it has."""
    want = scan(conn)
    conn.execute(S.usage_daily.delete())
    conn.execute(S.usage_daily_agency.delete())
    apply(conn, {k: list(v) for k, v in want.items()})
    return len(want)


def check(engine: Engine, *, repair: bool = False) -> tuple[list[dict[str, Any]], int | None]:
    """:func:`drift` on one snapshot of the database (the consumer may be writing); with
    ``repair``, where there is drift, :func:`rebuild` too, writers held off meanwhile. (the
    drift, the rows rebuilt or None)."""
    pg = engine.dialect.name == "postgresql"
    options = {"isolation_level": "READ COMMITTED" if repair else "REPEATABLE READ"} if pg else {}
    with engine.connect().execution_options(**options) as conn, conn.begin():
        if pg and repair:
            # (writers wait; readers go on; the snapshot is taken after the lock)
            conn.exec_driver_sql(
                f"LOCK TABLE {S.usage_event.name}, {S.line.name}, {S.usage_daily.name} "
                "IN SHARE ROW EXCLUSIVE MODE"
            )
        elif not pg:
            # (the driver begins nothing before a read: one snapshot for both reads, and
            # with repair the write lock first)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if repair else "BEGIN")
        found = drift(conn)
        rebuilt = rebuild(conn) if repair and found else None
    return found, rebuilt
