"""Bill runs, issuing, credit and debit notes, explain, pending sums.

A run of period P (from the account's billing day in month P to the same day of the next,
in its zone; the calendar month on billing day 1) builds, per account and in one
transaction, a draft invoice from what is stored: fixed charges (every month of a service up
to P, or P+1 in advance, not billed yet), the usage events of the account's lines up to the
cut-off (the first instant of P+1) not billed yet, LAD credits (to date, less what was
credited before, within the contract's cap) and SLA penalty credits (per month, less what was
credited before). A draft of the same account and period is replaced whole, so a re-run with
the same inputs gives the same draft, and a run killed midway leaves each account's draft
either whole or absent. An issued invoice is never touched again: what arrives for its period
afterwards (a late event, a late ticket) lands on the next period's invoice as an adjustment
line that says why.

Every line keeps its evidence (the inputs and each step); :func:`explain` recomputes the
figure from it with the same formulas and says whether it matches.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from fractions import Fraction
from time import monotonic
from typing import Any, Final
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    Integer,
    and_,
    case,
    func,
    literal_column,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.util import ClauseAdapter

from ocs.billing import feeds, rollup
from ocs.billing import formulas as F
from ocs.billing import model as M
from ocs.billing import schema as S
from ocs.billing.errors import Conflict, NotFound, StorageUnavailable, invalid
from ocs.constants import SCOPE_LEVELS
from ocs.money import format_money
from tariffs import PlanBook, RatingError, load_plans

#: How many months back a run looks for late tickets of already-billed months.
PENALTY_LOOKBACK: Final = 12
#: Lines are exact to the micro-unit: rounded once each, to 1 micro-unit.
LINE_ROUNDING: Final[F.RoundingMethod] = "half-even"
#: A run drafts up to this many accounts in one transaction, and commits at least every
#: RUN_TRANSACTION_SECONDS (a SQLite writer, the usage consumer, waits meanwhile). Each
#: account's draft is still whole or absent after a kill. Marking an account's events
#: rewrites the pages that hold them, and events arrive in time order, every page holding
#: events of many accounts: one commit per account wrote each page again for each of them
#: (SQLite: ~10 GB to the WAL and the database for 1,000 accounts x 1,000 events, against
#: ~1.4 GB at 100 a transaction; the run 49 -> 29 s, bench/RESULTS.md 2026-12-03 14:00).
RUN_ACCOUNTS_PER_TRANSACTION: Final = 100
RUN_TRANSACTION_SECONDS: Final = 2.0


@dataclass(slots=True)
class LineSpec:
    kind: str
    description: str
    service_id: str
    ref: str
    quantity: int
    amount: int
    evidence: dict[str, Any]
    #: Usage: which of the account's unbilled events it bills (a condition on the usage
    #: table; they are marked with the line's id, in one UPDATE, once the line is stored).
    events: Any = None


@dataclass(frozen=True, slots=True)
class Period:
    """Billing period ``year-month`` of an account: from its billing day of that month (the
    month's last day when it is shorter) to the same day of the next, midnights in the
    account's zone. Billing day 1: the calendar month."""

    year: int
    month: int
    zone: ZoneInfo
    billing_day: int = 1

    @classmethod
    def of(cls, text: str, tz: str, billing_day: int = 1) -> Period:
        try:
            y, m = F.parse_period(text)
        except F.FormulaError as exc:
            raise invalid("period", str(exc)) from None
        return cls(y, m, ZoneInfo(tz), billing_day)

    @classmethod
    def containing(cls, t: datetime, billing_day: int = 1) -> Period:
        """The period the instant ``t`` (aware, in the account's zone) falls in."""
        y, m = F.period_of(t.date(), billing_day)
        assert isinstance(t.tzinfo, ZoneInfo)
        return cls(y, m, t.tzinfo, billing_day)

    @property
    def text(self) -> str:
        return F.period_text(self.year, self.month)

    @property
    def bounds(self) -> tuple[date, date]:
        """The first day, and the first day of the next period."""
        return F.period_bounds(self.year, self.month, self.billing_day)

    @property
    def start(self) -> datetime:
        return datetime.combine(self.bounds[0], time(), self.zone)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.bounds[1], time(), self.zone)

    def other(self, year: int, month: int) -> Period:
        """Period ``year-month`` of the same account."""
        return Period(year, month, self.zone, self.billing_day)


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _local_date(text: str, zone: ZoneInfo) -> date:
    return datetime.fromisoformat(text).astimezone(zone).date()


def _base(kind: str) -> str:
    """fixed, usage, lad, penalty (an adjustment line counts as its kind)."""
    return kind.split("-", 1)[0]


@dataclass(slots=True)
class Inputs:
    """What the line builders of one account read once: its fixed services (by id) and what
    its earlier invoices settled, by (kind, ref)."""

    services: list[Any]
    credited: dict[tuple[str, str], int]

    @classmethod
    def load(cls, conn: Connection, a: M.AccountInfo) -> Inputs:
        services = list(
            conn.execute(
                select(S.fixed_service)
                .where(S.fixed_service.c.account_id == a.id)
                .order_by(S.fixed_service.c.service_id)
            )
        )
        ln, inv = S.invoice_line, S.invoice
        credited: dict[tuple[str, str], int] = defaultdict(int)
        rows = conn.execute(
            select(ln.c.kind, ln.c.ref, func.sum(ln.c.amount))
            .select_from(ln.join(inv, ln.c.invoice_id == inv.c.id))
            .where(inv.c.account_id == a.id, inv.c.kind == "invoice")
            .group_by(ln.c.kind, ln.c.ref)
        )
        for kind, ref, total in rows:
            credited[(_base(kind), ref)] += int(total)
        return cls(services, credited)

    def settled(self, kind: str, ref: str) -> int:
        return self.credited.get((kind, ref), 0)


# -- line builders -------------------------------------------------------------------------


def fixed_lines(ins: Inputs, p: Period, *, to_date: date | None = None) -> list[LineSpec]:
    out = []
    bd = p.billing_day
    for s in ins.services:
        start = date.fromisoformat(s.start_date)
        end = date.fromisoformat(s.end_date) if s.end_date else None
        last = F.next_month(p.year, p.month) if s.charging == "advance" else (p.year, p.month)
        if to_date is not None:
            last = (p.year, p.month)
        for y, m in F.months_between(F.period_of(start, bd), last):
            ref = f"{s.service_id}:{F.period_text(y, m)}"
            if ins.settled("fixed", ref) != 0:
                continue
            stop = end
            if to_date is not None and (y, m) == (p.year, p.month):
                stop = min(end, to_date) if end else to_date
            days = F.prorated_days(y, m, start, stop, bd)
            dim = F.period_days(y, m, bd)
            if days == 0:
                continue
            amount = F.round_money(F.prorate(s.monthly_charge, days, dim), LINE_ROUNDING)
            when = "in advance" if s.charging == "advance" else "in arrears"
            lo, hi = F.period_bounds(y, m, bd)
            out.append(
                LineSpec(
                    "fixed",
                    f"{s.description}, {F.period_text(y, m)} ({days}/{dim} days, {when})"
                    + (f" {lo} - {hi - timedelta(days=1)}" if bd != 1 else ""),
                    s.service_id,
                    ref,
                    days,
                    amount,
                    {
                        "formula": "round(monthly x days / days_in_month)",
                        "monthly": s.monthly_charge,
                        "month": F.period_text(y, m),
                        "billing_day": bd,
                        "period_start": lo.isoformat(),
                        "period_end": hi.isoformat(),
                        "start_date": s.start_date,
                        "end_date": stop.isoformat() if stop else None,
                        "days": days,
                        # (days of the billing period: the calendar month's on billing day 1)
                        "days_in_month": dim,
                        "charging": s.charging,
                        "rounding": LINE_ROUNDING,
                    },
                )
            )
    return out


def _usage_filter(a: M.AccountInfo, u: Any = S.usage_event) -> Any:
    """The join of usage events (``u``: the table or an alias of it) with the account's lines
    that owned them at the event's time, unbilled events only."""
    ln = S.line
    return and_(
        u.c.msisdn == ln.c.msisdn,
        ln.c.account_id == a.id,
        u.c.ts >= ln.c.valid_from,
        (ln.c.valid_to.is_(None)) | (u.c.ts < ln.c.valid_to),
        # "line_id + 0": not the line_id index (SQLite would scan every unbilled event of
        # every account through it); the account's lines and (msisdn, ts) lead the way.
        (u.c.line_id + 0).is_(None),
    )


def _inline(n: int) -> Any:
    """An integer written into the statement (the same text in SELECT and GROUP BY, which
    PostgreSQL needs to see that they are one expression; two bound parameters are not)."""
    return literal_column(str(int(n)), BigInteger)


def _bytewise(col: Any, dialect: str) -> Any:
    """``col`` compared byte by byte, as Python compares str (PostgreSQL's collation of the
    database may not; SQLite's default is already BINARY)."""
    return col.collate("C") if dialect == "postgresql" else col


class Destinations:
    """Destination classes of called numbers (national, international, emergency...) by the
    numbering and destination table of the account's usage plan at the event's time; the
    events carry the number as the network sent it. No re-rating: only the class is read."""

    def __init__(self, book: PlanBook | None = None) -> None:
        self._book = book
        self._cache: dict[tuple[int, str], str] = {}

    @property
    def book(self) -> PlanBook:
        if self._book is None:
            self._book = PlanBook(load_plans())
        return self._book

    def changes(self, plan: str, before_ms: int) -> list[int]:
        """The instants before ``before_ms`` at which another version of ``plan`` comes into
        force (a number may change class there): the events are grouped between them."""
        return sorted(
            {v.effective_from for v in self.book.versions(plan)[1:] if v.effective_from < before_ms}
        )

    def of(self, plan: str, number: str, at_ms: int) -> str:
        if not number:
            return ""
        try:
            version = self.book.at(plan, at_ms)
        except RatingError:
            return "unclassified"
        key = (id(version), number)
        found = self._cache.get(key)
        if found is None:
            digits = version.numbering.normalise(number)
            found = (version.destinations.lookup(digits) if digits else None) or "unclassified"
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[key] = found
        return found


#: The shipped plans' classes (``run`` and ``pending`` take another ``Destinations``).
SHIPPED: Final = Destinations()


def usage_lines(
    conn: Connection,
    a: M.AccountInfo,
    p: Period,
    cutoff_ms: int,
    plan: str,
    classes: Destinations,
) -> list[LineSpec]:
    """One line per (service, destination class) of the account's unbilled events before the
    cut-off, and apart those of earlier periods (late: adjustment lines).

    Added up by the database (count, units, charges, first and last event) per service,
    called number and version of the plan in force; only the distinct numbers are classified
    here. Each line keeps the condition that selects its events, for the marking."""
    u = S.usage_event
    dialect = conn.dialect.name
    start_ms = _ms(p.start)
    late = u.c.ts < _inline(start_ms)
    changes = classes.changes(plan, cutoff_ms)
    # (which version of the plan was in force: 0 before the first change, 1 after it...)
    epoch: Any = case(
        *[(u.c.ts < _inline(t), i) for i, t in enumerate(changes)], else_=len(changes)
    )
    epoch = epoch if changes else literal_column("0", Integer)
    rows = conn.execute(
        select(
            late.label("late"),
            u.c.service,
            u.c.destination,
            epoch.label("epoch"),
            func.count().label("n"),
            func.sum(u.c.units).label("units"),
            func.sum(u.c.amount).label("amount"),
            func.min(_bytewise(u.c.event_id, dialect)).label("first_event"),
            func.max(_bytewise(u.c.event_id, dialect)).label("last_event"),
            func.min(u.c.ts).label("first_ts"),
            func.max(u.c.ts).label("last_ts"),
        )
        .select_from(u.join(S.line, _usage_filter(a)))
        .where(u.c.ts < cutoff_ms)
        .group_by(late, u.c.service, u.c.destination, *([epoch] if changes else []))
    ).all()
    groups: dict[tuple[bool, str, str], list[Any]] = defaultdict(list)
    for r in rows:
        groups[(bool(r.late), r.service, classes.of(plan, r.destination, r.first_ts))].append(r)
    out = []
    for (is_late, service, destination), parts in sorted(
        groups.items(), key=lambda g: (not g[0][0], g[0][1], g[0][2])
    ):
        n = sum(int(r.n) for r in parts)
        dest = destination or "all destinations"
        kind = "usage-adjustment" if is_late else "usage"
        why = " (late usage of earlier periods, received after they were billed)" if is_late else ""
        out.append(
            LineSpec(
                kind,
                f"Usage {service or '-'} to {dest}: {n} events{why}",
                "",
                f"usage:{service}",
                sum(int(r.units) for r in parts),
                sum(int(r.amount) for r in parts),
                {
                    "formula": "sum of the charges of the events billed by this line",
                    "events": n,
                    "service": service,
                    "destination": destination,
                    "first_event": min(r.first_event for r in parts),
                    "last_event": max(r.last_event for r in parts),
                    "first_ts": min(int(r.first_ts) for r in parts),
                    "last_ts": max(int(r.last_ts) for r in parts),
                    "reason": why.strip(" ()") or None,
                },
                events=_selecting(is_late, service, parts, rows, start_ms, changes),
            )
        )
    return out


#: At most this many called numbers in one condition of the marking.
IN_LIST_MAX: Final = 2_000


def _selecting(
    late: bool,
    service: str,
    parts: Sequence[Any],
    rows: Sequence[Any],
    start_ms: int,
    changes: Sequence[int],
) -> list[Any]:
    """Conditions on the usage table (each for one UPDATE) that select the events of a line
    made of the groups ``parts``, among the account's unbilled events before the cut-off:
    by period side and service, and per version of the plan by called number (the line's
    numbers, or not the others', whichever list is shorter)."""
    u = S.usage_event
    side = u.c.ts < start_ms if late else u.c.ts >= start_ms
    bounds = [None, *changes, None]
    out = []
    for e in sorted({int(r.epoch) for r in parts}):
        mine = {r.destination for r in parts if int(r.epoch) == e}
        others = {
            r.destination
            for r in rows
            if bool(r.late) == late and r.service == service and int(r.epoch) == e
        } - mine
        base = [side, u.c.service == service]
        if bounds[e] is not None:
            base.append(u.c.ts >= bounds[e])
        if bounds[e + 1] is not None:
            base.append(u.c.ts < bounds[e + 1])
        if not others:
            out.append(and_(*base))
        elif len(others) < len(mine) and len(others) <= IN_LIST_MAX:
            out.append(and_(*base, u.c.destination.not_in(sorted(others))))
        else:
            listed = sorted(mine)
            for i in range(0, len(listed), IN_LIST_MAX):
                out.append(and_(*base, u.c.destination.in_(listed[i : i + IN_LIST_MAX])))
    return out


def mark_usage(
    conn: Connection, a: M.AccountInfo, cutoff_ms: int, lines: Sequence[tuple[LineSpec, int]]
) -> None:
    """Point the events of the account's usage lines to them: one UPDATE for all the lines
    (set-based; each event's line chosen by a CASE over the lines' conditions, which are
    disjoint), so the account's events are read and written once, not once per line. The
    events it marks (RETURNING) leave the rollup's pending sums in the same transaction."""
    u = S.usage_event
    whens = [(cond, line_id) for spec, line_id in lines for cond in spec.events or ()]
    if not whens:
        return
    chosen_line = case(*whens, else_=u.c.line_id)
    anyone = or_(*(cond for cond, _ in whens))
    if conn.dialect.name == "postgresql":
        # UPDATE .. FROM the account's lines: the events are found through (msisdn, ts) and
        # written in the same pass, without looking each one up again by its key.
        stmt = update(u).where(_usage_filter(a), u.c.ts < cutoff_ms, anyone)
    else:
        # (an alias: the events are chosen in a subquery joined with the account's lines;
        # SQLite plans it through the lines and (msisdn, ts))
        uu = u.alias("uu")
        chosen = (
            select(uu.c.event_id)
            .select_from(uu.join(S.line, _usage_filter(a, uu)))
            .where(uu.c.ts < cutoff_ms, _on(anyone, uu))
        )
        stmt = update(u).where(u.c.event_id.in_(chosen))
    marked = conn.execute(
        stmt.values(line_id=chosen_line).returning(u.c.msisdn, u.c.ts, u.c.service, u.c.amount)
    )
    rollup.billed(conn, marked.all())


def _on(cond: Any, table: Any) -> Any:
    """``cond`` (written on the usage table) on ``table``, an alias of it."""
    return ClauseAdapter(table).traverse(cond)


def _contract(conn: Connection, a: M.AccountInfo) -> Any:
    return conn.execute(select(S.contract).where(S.contract.c.account_id == a.id)).first()


def contract_value(ins: Inputs, c: Any) -> int:
    """The monthly charges of the account's services x the months the contract runs."""
    monthly = sum(s.monthly_charge for s in ins.services)
    months = F.contract_months(
        date.fromisoformat(c.start_date), date.fromisoformat(c.end_date) if c.end_date else None
    )
    return int(monthly) * months


def lad_lines(
    conn: Connection, a: M.AccountInfo, ins: Inputs, p: Period, cutoff: datetime
) -> list[LineSpec]:
    c = _contract(conn, a)
    if c is None or not ins.services:
        return []
    terms = M.lad_terms(c)
    value = contract_value(ins, c)
    services = {r.service_id: r for r in ins.services}
    orders = feeds.current(conn, "orders", S.order_version.c.service_id.in_(sorted(services)))
    credited_contract = -sum(v for (k, _), v in ins.credited.items() if k == "lad")
    out = []
    cutoff_day = cutoff.astimezone(p.zone).date()
    for o in orders:
        if o.status == "cancelled":
            continue
        committed = _local_date(o.committed_at, p.zone)
        delivered = None
        if o.delivered_at and datetime.fromisoformat(o.delivered_at) < cutoff:
            delivered = _local_date(o.delivered_at, p.zone)
        if committed >= cutoff_day:
            continue
        days = F.lad_days_late(committed, delivered, cutoff_day, terms.grace_days)
        ref = f"lad:{o.order_id}"
        credited_order = -ins.settled("lad", ref)
        monthly = services[o.service_id].monthly_charge
        full, owed, capped = F.lad_damages(
            terms, days, monthly, value, credited_order, credited_contract
        )
        amount = F.round_money(owed, LINE_ROUNDING)
        if amount == 0:
            continue
        credited_contract += amount
        state = f"delivered {delivered}" if delivered else f"open at cut-off {cutoff_day}"
        out.append(
            LineSpec(
                "lad",
                f"LAD order {o.order_id} ({o.service_id}): {days} days late, {state}"
                + (" (cap reached)" if capped else ""),
                o.service_id,
                ref,
                days,
                -amount,
                {
                    "formula": "min(days_late x daily - credited_order, cap - credited_contract)",
                    "order_id": o.order_id,
                    "order_version": o.version,
                    "committed": committed.isoformat(),
                    "delivered": delivered.isoformat() if delivered else None,
                    "cutoff": cutoff_day.isoformat(),
                    "grace_days": terms.grace_days,
                    "days_late": days,
                    "rate_kind": terms.rate_kind,
                    "rate": terms.rate,
                    "rate_percent": terms.rate_percent,
                    "monthly": monthly,
                    "cap_kind": terms.cap_kind,
                    "cap": terms.cap,
                    "cap_percent": terms.cap_percent,
                    "contract_value": value,
                    "credited_order": credited_order,
                    "credited_contract": credited_contract - amount,
                    "to_date": str(full),
                    "capped": capped,
                    "rounding": LINE_ROUNDING,
                },
            )
        )
    return out


def _outages(tickets: Sequence[Any], cutoff: datetime) -> tuple[list[F.Outage], list[str]]:
    counted, excluded = [], []
    for t in tickets:
        if t.excluded:
            excluded.append(f"{t.ticket_id} ({t.excluded})")
            continue
        end = datetime.fromisoformat(t.restored_at) if t.restored_at else cutoff
        counted.append(
            F.Outage(
                datetime.fromisoformat(t.fault_start),
                min(end, cutoff),
                f"{t.ticket_id}@v{t.version}",
            )
        )
    return counted, excluded


def penalty_amount(
    outages: Sequence[F.Outage],
    month: tuple[int, int],
    zone: ZoneInfo,
    target: str,
    ladder: Sequence[F.LadderStep],
    monthly: int,
    billing_day: int = 1,
) -> tuple[dict[str, Any], Fraction]:
    """The month's (the billing period's) availability and penalty from its counted
    outages: (evidence, penalty)."""
    p = Period(*month, zone, billing_day)
    lo, hi = p.start, p.end
    merged = F.merge_outages(outages, lo, hi)
    seconds = int((hi - lo).total_seconds())
    out_s = F.outage_seconds(merged)
    avail = F.availability(out_s, seconds)
    step, penalty = F.ladder_penalty(avail, target, ladder, monthly)
    evidence = {
        "month": p.text,
        "month_start": lo.isoformat(),
        "month_end": hi.isoformat(),
        "tickets": [
            [o.start.isoformat(), o.end.isoformat(), o.ticket]
            for o in outages
            if o.end > lo and o.start < hi
        ],
        "month_seconds": seconds,
        "outage_seconds": out_s,
        "merged": [[s.isoformat(), e.isoformat(), list(t)] for s, e, t in merged],
        "availability": F.percent_text(avail),
        "availability_exact": str(avail),
        "target": target,
        "step": step,
        "monthly": monthly,
        "ladder": [{"up_to": s.up_to, "penalty": s.penalty} for s in ladder],
    }
    return evidence, penalty


def penalty_lines(conn: Connection, ins: Inputs, p: Period, cutoff: datetime) -> list[LineSpec]:
    services = [s for s in ins.services if s.sla_target is not None]
    by_service: dict[str, list[Any]] = defaultdict(list)
    if services:
        ids = [s.service_id for s in services]
        for t in feeds.current(conn, "tickets", S.ticket_version.c.service_id.in_(ids)):
            by_service[t.service_id].append(t)
    out = []
    for s in services:
        tickets = by_service[s.service_id]
        start = date.fromisoformat(s.start_date)
        first = max(F.period_of(start, p.billing_day), _months_back(p, PENALTY_LOOKBACK))
        counted, excluded = _outages(tickets, cutoff)
        ladder = M.ladder_of(s.sla_ladder)
        for y, m in F.months_between(first, (p.year, p.month)):
            ref = f"{s.service_id}:{F.period_text(y, m)}"
            evidence, penalty = penalty_amount(
                counted, (y, m), p.zone, s.sla_target, ladder, s.monthly_charge, p.billing_day
            )
            credited = -ins.settled("penalty", ref)
            amount = F.round_money(penalty, LINE_ROUNDING) - credited
            if amount == 0:
                continue
            late = (y, m) != (p.year, p.month)
            evidence.update(
                formula="ladder % x monthly - credited before",
                credited_before=credited,
                excluded=excluded,
                rounding=LINE_ROUNDING,
                reason="tickets received after the month was invoiced" if late else None,
            )
            avail = evidence["availability"]
            out.append(
                LineSpec(
                    "penalty-adjustment" if late else "penalty",
                    f"SLA penalty {s.service_id} {F.period_text(y, m)}: availability {avail} % "
                    f"< {s.sla_target} %" + (" (late tickets)" if late else ""),
                    s.service_id,
                    ref,
                    1,
                    -amount,
                    evidence,
                )
            )
    return out


def _months_back(p: Period, n: int) -> tuple[int, int]:
    y, m = p.year, p.month
    for _ in range(n):
        y, m = F.prev_month(y, m)
    return y, m


# -- totals --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Totals:
    net: int
    net_rounded: int
    tax: int
    total: int


def totals(amounts: Sequence[int], rate: str, mode: str, method: str) -> Totals:
    """The invoice's figures: the exact sum of the lines, that sum rounded once to the
    currency's minor unit, the tax on it (rounded once), and the total."""
    net = sum(amounts)
    rounded = F.round_money(net, method, F.CENT)  # type: ignore[arg-type]
    t = F.tax(rounded, rate, mode, method)  # type: ignore[arg-type]
    if mode == "inclusive":
        return Totals(net, rounded, t.tax, t.gross)
    return Totals(net, rounded, t.tax, t.gross)


def _tax_profile(conn: Connection, code: str) -> Any:
    return conn.execute(select(S.tax_profile).where(S.tax_profile.c.code == code)).one()


# -- the run -------------------------------------------------------------------------------


@dataclass(slots=True)
class RunResult:
    period: str
    drafted: list[str] = field(default_factory=list)
    skipped_issued: list[str] = field(default_factory=list)


def _drop_draft(conn: Connection, invoice_id: int) -> None:
    lines = select(S.invoice_line.c.id).where(S.invoice_line.c.invoice_id == invoice_id)
    u = S.usage_event
    freed = conn.execute(
        update(u)
        .where(u.c.line_id.in_(lines))
        .values(line_id=None)
        .returning(u.c.msisdn, u.c.ts, u.c.service, u.c.amount)
    )
    rollup.unbilled(conn, freed.all())
    conn.execute(S.invoice_line.delete().where(S.invoice_line.c.invoice_id == invoice_id))
    conn.execute(S.invoice.delete().where(S.invoice.c.id == invoice_id))


def build_lines(
    conn: Connection,
    a: M.AccountInfo,
    p: Period,
    *,
    cutoff: datetime,
    to_date: date | None = None,
    classes: Destinations = SHIPPED,
) -> list[LineSpec]:
    ins = Inputs.load(conn, a)
    c = _contract(conn, a)
    plan = c.usage_plan if c is not None else "gov-payu"
    return [
        *fixed_lines(ins, p, to_date=to_date),
        *usage_lines(conn, a, p, _ms(cutoff), plan, classes),
        *lad_lines(conn, a, ins, p, cutoff),
        *penalty_lines(conn, ins, p, cutoff),
    ]


def draft_account(
    conn: Connection,
    a: M.AccountInfo,
    period: str,
    now_ms: int,
    classes: Destinations = SHIPPED,
) -> str | None:
    """(Re)build the account's draft for ``period``; None when it is issued already."""
    p = Period.of(period, a.timezone, a.billing_day)
    key = f"{a.id}:{p.text}"
    prev = conn.execute(select(S.invoice).where(S.invoice.c.draft_key == key)).first()
    if prev is not None:
        if prev.status == "issued":
            return None
        _drop_draft(conn, prev.id)
    specs = build_lines(conn, a, p, cutoff=p.end, classes=classes)
    tp = _tax_profile(conn, a.tax_profile)
    t = totals([s.amount for s in specs], tp.rate, tp.mode, tp.rounding)
    invoice_id = (
        conn.execute(
            S.invoice.insert().values(
                account_id=a.id,
                period=p.text,
                kind="invoice",
                status="draft",
                draft_key=key,
                series=f"INV-{p.year}",
                number=None,
                refers_to=None,
                reason="",
                currency=a.currency,
                net=t.net,
                net_rounded=t.net_rounded,
                tax=t.tax,
                total=t.total,
                tax_rate=tp.rate,
                tax_mode=tp.mode,
                rounding=tp.rounding,
                cutoff=p.end.isoformat(),
                created_at=now_ms,
                issued_at=None,
            )
        ).inserted_primary_key
        or (0,)
    )[0]
    rows = [
        {
            "invoice_id": invoice_id,
            "seq": seq,
            "kind": x.kind,
            "description": x.description,
            "service_id": x.service_id,
            "ref": x.ref,
            "quantity": x.quantity,
            "amount": x.amount,
            "evidence": json.dumps(x.evidence, sort_keys=True),
        }
        for seq, x in enumerate(specs, 1)
    ]
    if not rows:
        return key
    ids = (
        conn.execute(
            S.invoice_line.insert().returning(S.invoice_line.c.id, sort_by_parameter_order=True),
            rows,
        )
        .scalars()
        .all()
    )
    mark_usage(conn, a, _ms(p.end), list(zip(specs, ids, strict=True)))
    return key


def run(
    engine: Engine,
    period: str,
    *,
    account: str | None = None,
    now_ms: int,
    scope: str | None = None,
    classes: Destinations = SHIPPED,
) -> RunResult:
    """Draft every account's invoice for ``period`` (or one account's), each account's draft
    whole in one transaction (up to RUN_ACCOUNTS_PER_TRANSACTION of them in the same one):
    safe to kill at any point and run again. ``classes`` reads destination classes
    with the plans in use (the shipped ones by default)."""
    result = RunResult(period)
    try:
        F.parse_period(period)
    except F.FormulaError as exc:
        raise invalid("period", str(exc)) from None
    try:
        with engine.connect() as conn:
            targets = M.accounts(conn, scope, account)
        if account is None and engine.dialect.name == "postgresql":
            # Fresh planner statistics of the usage table first: a month of ingestion may have
            # outrun autovacuum's ANALYZE, and with stale ones each account's query took ~5x
            # as long (bench/billing.py, docs/billing.md Speed). A sample: ~0.3 s at 1M events.
            with engine.begin() as conn:
                conn.exec_driver_sql(f"ANALYZE {S.usage_event.name}")
        if account is not None and not targets:
            raise NotFound(f"no account {account!r}")
        done = 0
        while done < len(targets):
            # (several accounts a transaction: RUN_ACCOUNTS_PER_TRANSACTION says why)
            with engine.begin() as conn:
                started = monotonic()
                for a in targets[done : done + RUN_ACCOUNTS_PER_TRANSACTION]:
                    done += 1
                    if draft_account(conn, a, period, now_ms, classes) is None:
                        result.skipped_issued.append(a.code)
                    else:
                        result.drafted.append(a.code)
                    if monotonic() - started >= RUN_TRANSACTION_SECONDS:
                        break
    except SQLAlchemyError as exc:
        raise StorageUnavailable(f"billing database: {exc}") from exc
    return result


def issue(
    engine: Engine,
    period: str,
    *,
    account: str | None = None,
    now_ms: int,
    scope: str | None = None,
) -> list[str]:
    """Make the period's drafts final, numbered in account order without gaps per series;
    the numbers given."""
    numbers = []
    with engine.begin() as conn:
        q = (
            select(S.invoice.c.id, S.invoice.c.series)
            .select_from(S.invoice.join(S.account).join(S.org))
            .where(
                S.invoice.c.period == period,
                S.invoice.c.status == "draft",
                S.invoice.c.kind == "invoice",
            )
            .order_by(S.account.c.code)
        )
        if account is not None:
            q = q.where(S.account.c.code == account)
        if scope is not None:
            q = q.where(S.org.c.code == scope)
        for inv_id, series in conn.execute(q).all():
            number = next_number(conn, series)
            conn.execute(
                S.invoice.update()
                .where(S.invoice.c.id == inv_id, S.invoice.c.status == "draft")
                .values(status="issued", number=number, issued_at=now_ms)
            )
            numbers.append(number)
    return numbers


def next_number(conn: Connection, series: str) -> str:
    """The next number of ``series``, taken in the caller's transaction (a rolled-back issue
    gives its numbers back: no gaps). Rows are locked on PostgreSQL."""
    c = S.series_counter
    row = conn.execute(select(c.c.last).where(c.c.series == series).with_for_update()).first()
    if row is None:
        n = 1
        conn.execute(c.insert().values(series=series, last=n))
    else:
        n = int(row.last) + 1
        conn.execute(c.update().where(c.c.series == series).values(last=n))
    return f"{series}-{n:06d}"


# -- reading invoices ----------------------------------------------------------------------


def _invoice_row(conn: Connection, ref: str, scope: str | None) -> Any:
    """An invoice by number, or by ``id`` (drafts have no number)."""
    q = select(
        S.invoice, S.account.c.code.label("account"), S.org.c.code.label("agency")
    ).select_from(S.invoice.join(S.account).join(S.org))
    q = (
        q.where(S.invoice.c.number == ref)
        if not ref.isdigit()
        else q.where(S.invoice.c.id == int(ref))
    )
    r = conn.execute(q).first()
    if r is None or (scope is not None and r.agency != scope):
        raise NotFound(f"no invoice {ref!r}")
    return r


def invoice_json(conn: Connection, r: Any, *, with_lines: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": r.id,
        "number": r.number,
        "kind": r.kind,
        "status": r.status,
        "account": r.account,
        "agency": r.agency,
        "period": r.period,
        "currency": r.currency,
        "net": format_money(r.net),
        "net_rounded": format_money(r.net_rounded),
        "rounding": format_money(r.net_rounded - r.net),
        "tax": format_money(r.tax),
        "tax_rate": r.tax_rate,
        "tax_mode": r.tax_mode,
        "rounding_method": r.rounding,
        "total": format_money(r.total),
        "cutoff": r.cutoff,
        "issued_at": r.issued_at,
        "reason": r.reason,
        "refers_to": _number_of(conn, r.refers_to) if r.refers_to else None,
        "micro": {"net": r.net, "net_rounded": r.net_rounded, "tax": r.tax, "total": r.total},
    }
    if with_lines:
        out["lines"] = [line_json(x) for x in lines_of(conn, r.id)]
    return out


def _number_of(conn: Connection, invoice_id: int) -> str | None:
    return conn.execute(select(S.invoice.c.number).where(S.invoice.c.id == invoice_id)).scalar()


def lines_of(conn: Connection, invoice_id: int) -> list[Any]:
    return list(
        conn.execute(
            select(S.invoice_line)
            .where(S.invoice_line.c.invoice_id == invoice_id)
            .order_by(S.invoice_line.c.seq)
        )
    )


def line_json(x: Any) -> dict[str, Any]:
    return {
        "seq": x.seq,
        "kind": x.kind,
        "description": x.description,
        "service_id": x.service_id,
        "ref": x.ref,
        "quantity": x.quantity,
        "amount": format_money(x.amount),
        "amount_micro": x.amount,
        "evidence": json.loads(x.evidence),
    }


def get_invoice(engine: Engine, ref: str, scope: str | None) -> dict[str, Any]:
    with engine.connect() as conn:
        return invoice_json(conn, _invoice_row(conn, ref, scope))


def list_invoices(
    engine: Engine,
    *,
    period: str | None,
    account: str | None,
    status: str | None,
    scope: str | None,
    offset: int,
    limit: int,
) -> list[dict[str, Any]]:
    q = (
        select(S.invoice, S.account.c.code.label("account"), S.org.c.code.label("agency"))
        .select_from(S.invoice.join(S.account).join(S.org))
        .order_by(S.invoice.c.period, S.account.c.code, S.invoice.c.id)
        .offset(offset)
        .limit(limit)
    )
    if period:
        q = q.where(S.invoice.c.period == period)
    if account:
        q = q.where(S.account.c.code == account)
    if status:
        q = q.where(S.invoice.c.status == status)
    if scope is not None:
        q = q.where(S.org.c.code == scope)
    with engine.connect() as conn:
        return [invoice_json(conn, r, with_lines=False) for r in conn.execute(q)]


# -- notes ---------------------------------------------------------------------------------


def create_note(
    engine: Engine, ref: str, body: object, *, now_ms: int, scope: str | None
) -> dict[str, Any]:
    """A credit or debit note on an issued invoice: issued at once, numbered in its own
    series (CN-/DN-<year>), with its own tax on its own lines."""
    f = M.Fields(body)
    kind = f.choice("kind", ("credit", "debit"))
    reason = f.text("reason", max_len=500)
    raw = f.body.get("lines")
    items: list[tuple[str, int]] = []
    if not isinstance(raw, list) or not raw:
        f._bad("lines", "must be a non-empty list of {description, amount}")
    else:
        for i, item in enumerate(raw):
            lf = M.Fields(item, f"lines[{i}].")
            items.append((lf.text("description"), lf.money("amount")))
            f.errors.extend(lf.errors)
    f.check()
    with engine.begin() as conn:
        inv = _invoice_row(conn, ref, scope)
        if inv.status != "issued" or inv.kind != "invoice":
            raise Conflict(f"invoice {ref!r} is not an issued invoice: notes refer to one")
        sign = -1 if kind == "credit" else 1
        tp = _tax_profile(
            conn,
            conn.execute(
                select(S.account.c.tax_profile).where(S.account.c.id == inv.account_id)
            ).scalar_one(),
        )
        t = totals([sign * amt for _, amt in items], inv.tax_rate, inv.tax_mode, inv.rounding)
        del tp
        year = inv.period[:4]
        series = f"{'CN' if kind == 'credit' else 'DN'}-{year}"
        number = next_number(conn, series)
        note_id = (
            conn.execute(
                S.invoice.insert().values(
                    account_id=inv.account_id,
                    period=inv.period,
                    kind=f"{kind}-note",
                    status="issued",
                    draft_key=None,
                    series=series,
                    number=number,
                    refers_to=inv.id,
                    reason=reason,
                    currency=inv.currency,
                    net=t.net,
                    net_rounded=t.net_rounded,
                    tax=t.tax,
                    total=t.total,
                    tax_rate=inv.tax_rate,
                    tax_mode=inv.tax_mode,
                    rounding=inv.rounding,
                    cutoff=inv.cutoff,
                    created_at=now_ms,
                    issued_at=now_ms,
                )
            ).inserted_primary_key
            or (0,)
        )[0]
        for seq, (desc, amt) in enumerate(items, 1):
            conn.execute(
                S.invoice_line.insert().values(
                    invoice_id=note_id,
                    seq=seq,
                    kind="note",
                    description=desc,
                    service_id="",
                    ref=f"note:{inv.number}",
                    quantity=1,
                    amount=sign * amt,
                    evidence=json.dumps({"refers_to": inv.number, "reason": reason}),
                )
            )
        return invoice_json(conn, _invoice_row(conn, number, scope))


# -- explain -------------------------------------------------------------------------------


def explain(engine: Engine, ref: str, seq: int, scope: str | None) -> dict[str, Any]:
    """The calculation of one line, step by step, recomputed from its evidence."""
    with engine.connect() as conn:
        inv = _invoice_row(conn, ref, scope)
        x = conn.execute(
            select(S.invoice_line).where(
                S.invoice_line.c.invoice_id == inv.id, S.invoice_line.c.seq == seq
            )
        ).first()
        if x is None:
            raise NotFound(f"invoice {ref!r} has no line {seq}")
        ev = json.loads(x.evidence)
        steps, recomputed = recompute(conn, x.kind, x.id, ev)
    return {
        "invoice": inv.number or inv.id,
        "line": seq,
        "kind": x.kind,
        "description": x.description,
        "amount": format_money(x.amount),
        "amount_micro": x.amount,
        "evidence": ev,
        "steps": steps,
        "recomputed_micro": recomputed,
        "recomputed": format_money(recomputed) if recomputed is not None else None,
        "matches": recomputed == x.amount,
    }


def recompute(
    conn: Connection, kind: str, line_id: int, ev: dict[str, Any]
) -> tuple[list[str], int | None]:
    """(the steps in words, the figure) of a line from its evidence."""
    fm = format_money
    if kind == "fixed":
        y, m = F.parse_period(ev["month"])
        end = date.fromisoformat(ev["end_date"]) if ev["end_date"] else None
        bd = ev.get("billing_day", 1)
        days = F.prorated_days(y, m, date.fromisoformat(ev["start_date"]), end, bd)
        dim = F.period_days(y, m, bd)
        exact = F.prorate(ev["monthly"], days, dim)
        amount = F.round_money(exact, ev["rounding"])
        return [
            f"month {ev['month']}: {dim} days; service from {ev['start_date']} to "
            f"{ev['end_date'] or 'open'} -> {days} days billed ({ev['charging']})",
            f"{fm(ev['monthly'])} x {days} / {dim} = {F.micro_text(exact)} micro-units",
            f"rounded {ev['rounding']} to 1 micro-unit: {fm(amount)}",
        ], amount
    if kind.startswith("usage"):
        u = S.usage_event
        n, total = conn.execute(
            select(func.count(), func.coalesce(func.sum(u.c.amount), 0)).where(
                u.c.line_id == line_id
            )
        ).one()
        return [
            f"{n} events of service {ev['service'] or '-'} to "
            f"{ev['destination'] or 'all destinations'} point to this line "
            f"(event ids {ev['first_event']} .. {ev['last_event']})",
            f"sum of their charges as the OCS debited them: {fm(int(total))}",
        ], int(total)
    if kind == "lad":
        terms = F.LadTerms(
            ev["rate_kind"],
            ev["rate"],
            ev["rate_percent"],
            ev["grace_days"],
            ev["cap_kind"],
            ev["cap"],
            ev["cap_percent"],
        )
        delivered = date.fromisoformat(ev["delivered"]) if ev["delivered"] else None
        days = F.lad_days_late(
            date.fromisoformat(ev["committed"]),
            delivered,
            date.fromisoformat(ev["cutoff"]),
            ev["grace_days"],
        )
        full, owed, capped = F.lad_damages(
            terms,
            days,
            ev["monthly"],
            ev["contract_value"],
            ev["credited_order"],
            ev["credited_contract"],
        )
        amount = -F.round_money(owed, ev["rounding"])
        end = delivered or date.fromisoformat(ev["cutoff"])
        raw_days = (end - date.fromisoformat(ev["committed"])).days
        state = f"delivered {delivered}" if delivered else f"open at cut-off {ev['cutoff']}"
        rate = (
            fm(ev["rate"]) + " per day"
            if ev["rate_kind"] == "fixed"
            else f"{ev['rate_percent']} % of {fm(ev['monthly'])} per day"
        )
        return [
            f"committed {ev['committed']}, {state}",
            f"days late = {raw_days} - grace {ev['grace_days']} = {days}",
            f"damages to date = {days} x {rate} = {F.micro_text(full)} micro-units",
            f"less credited for the order before: {fm(ev['credited_order'])}; cap "
            f"{ev['cap_kind']} (contract value {fm(ev['contract_value'])}), credited on the "
            f"contract before {fm(ev['credited_contract'])}{': cap reached' if capped else ''}",
            f"credit rounded {ev['rounding']}: {fm(amount)}",
        ], amount
    if kind.startswith("penalty"):
        outages = [
            F.Outage(datetime.fromisoformat(a), datetime.fromisoformat(b), t)
            for a, b, t in ev["tickets"]
        ]
        lo, hi = datetime.fromisoformat(ev["month_start"]), datetime.fromisoformat(ev["month_end"])
        merged = F.merge_outages(outages, lo, hi)
        seconds = int((hi - lo).total_seconds())
        out_s = F.outage_seconds(merged)
        avail = F.availability(out_s, seconds)
        ladder = [F.LadderStep(s["up_to"], s["penalty"]) for s in ev["ladder"]]
        step, penalty = F.ladder_penalty(avail, ev["target"], ladder, ev["monthly"])
        amount = -(F.round_money(penalty, ev["rounding"]) - ev["credited_before"])
        return [
            f"{ev['month']}: {seconds} s in the month; counted tickets merged: "
            f"{len(outages)} ticket(s) -> {len(merged)} interval(s), {out_s} s of outage"
            + (f"; excluded: {', '.join(ev['excluded'])}" if ev["excluded"] else ""),
            f"availability = 1 - {out_s}/{seconds} = {F.percent_text(avail)} % "
            f"(target {ev['target']} %)",
            f"ladder step {step if step is not None else '-'}: "
            + (
                f"{ladder[step].penalty} % of {fm(ev['monthly'])}"
                if step is not None
                else "no penalty"
            ),
            f"penalty {fm(F.round_money(penalty, ev['rounding']))} less credited before "
            f"{fm(ev['credited_before'])}: credit {fm(amount)}",
        ], amount
    if kind == "note":
        return [f"a note on invoice {ev['refers_to']}: {ev['reason']}"], None
    return [f"no recomputation for {kind} lines"], None


# -- pending -------------------------------------------------------------------------------


def pending(
    engine: Engine,
    account: str,
    *,
    now_ms: int,
    scope: str | None,
    classes: Destinations = SHIPPED,
) -> dict[str, Any]:
    """What the account has accrued and not been invoiced for in the current period: usage so
    far, fixed charges to date, LAD and penalties accrued; figures of a draft built now,
    written nowhere."""
    with engine.connect() as conn:
        a = M.account_info(conn, account, scope)
        zone = ZoneInfo(a.timezone)
        now = datetime.fromtimestamp(now_ms / 1000, zone)
        p = Period.containing(now, a.billing_day)
        specs = build_lines(
            conn, a, p, cutoff=now, to_date=now.date() + timedelta(days=1), classes=classes
        )
        last_event = conn.execute(select(func.max(S.usage_event.c.ts))).scalar()
    sums: dict[str, int] = {"usage": 0, "fixed": 0, "lad": 0, "penalty": 0}
    for s in specs:
        sums[s.kind.split("-")[0]] += s.amount
    return {
        "account": a.code,
        "agency": a.agency,
        "period": p.text,
        "as_of": now.isoformat(),
        "currency": a.currency,
        "last_usage_event_ts": last_event,
        **{k: format_money(v) for k, v in sums.items()},
        "total": format_money(sum(sums.values())),
        "micro": {**sums, "total": sum(sums.values())},
    }


# -- aggregates ----------------------------------------------------------------------------

AGG_LEVELS: Final = SCOPE_LEVELS


def aggregates(
    engine: Engine, level: str, period: str, *, scope: str | None, offset: int, limit: int
) -> list[dict[str, Any]]:
    """Per unit of ``level`` for ``period``: billed (issued invoices' totals), drafted, usage,
    LAD and penalties (lines of the period's invoices), pending (usage not yet on any invoice),
    counts of accounts and invoices. Pending is read from the usage rollup (its rows with
    unbilled events: :mod:`ocs.billing.rollup`), not scanned from the events."""
    if level not in AGG_LEVELS:
        raise invalid("level", f"must be one of {', '.join(AGG_LEVELS)}")
    agency = S.org.alias("agency")
    region = S.org.alias("region")
    national = S.org.alias("national")
    unit = {
        "national": national.c.code,
        "region": region.c.code,
        "agency": agency.c.code,
        "account": S.account.c.code,
    }[level]
    base = (
        S.account.join(agency, S.account.c.agency_id == agency.c.id)
        .join(region, agency.c.parent_id == region.c.id)
        .join(national, region.c.parent_id == national.c.id)
    )
    inv, ln, d = S.invoice, S.invoice_line, S.usage_daily
    out: dict[str, dict[str, int]] = {}

    def acc(key: str) -> dict[str, int]:
        return out.setdefault(key, dict.fromkeys(
            ("billed", "drafted", "usage", "lad", "penalties", "pending", "accounts",
             "invoices"), 0))  # fmt: skip

    # Each sum per account first (no join with the hierarchy for each invoice line or rollup
    # row), then the accounts' sums added up per unit here.
    with engine.connect() as conn:
        q = select(S.account.c.id, unit).select_from(base)
        if scope is not None:
            q = q.where(agency.c.code == scope)
        unit_of: dict[int, str] = {int(a): str(k) for a, k in conn.execute(q)}
        for key in unit_of.values():
            acc(key)["accounts"] += 1

        def mine(col: Any) -> Any:
            """(an agency's caller: its accounts' rows only)"""
            return col.in_(sorted(unit_of)) if scope is not None else true()

        for a, status, n, total in conn.execute(
            select(inv.c.account_id, inv.c.status, func.count(), func.sum(inv.c.total))
            .where(inv.c.period == period, inv.c.kind == "invoice", mine(inv.c.account_id))
            .group_by(inv.c.account_id, inv.c.status)
        ):
            if a in unit_of:
                x = acc(unit_of[a])
                x["invoices"] += int(n)
                x["billed" if status == "issued" else "drafted"] += int(total or 0)
        for a, kind, total in conn.execute(
            select(inv.c.account_id, ln.c.kind, func.sum(ln.c.amount))
            .select_from(inv.join(ln, ln.c.invoice_id == inv.c.id))
            .where(inv.c.period == period, inv.c.kind == "invoice", mine(inv.c.account_id))
            .group_by(inv.c.account_id, ln.c.kind)
        ):
            name = {"usage": "usage", "lad": "lad", "penalty": "penalties"}.get(kind.split("-")[0])
            if name and a in unit_of:
                acc(unit_of[a])[name] += int(total or 0)
        # (the rollup's rows with unbilled events: its partial index holds only those; the 0
        # written in, so that the database sees the index's condition)
        for a, total in conn.execute(
            select(d.c.account_id, func.sum(d.c.pending))
            .where(d.c.pending_events != _inline(0), mine(d.c.account_id))
            .group_by(d.c.account_id)
        ):
            if a in unit_of:
                acc(unit_of[a])["pending"] += int(total or 0)
    rows = []
    for key in sorted(out)[offset : offset + limit]:
        v = out[key]
        rows.append(
            {
                "level": level,
                "code": key,
                "period": period,
                **{
                    m: format_money(v[m])
                    for m in ("billed", "drafted", "usage", "lad", "penalties", "pending")
                },
                "accounts": v["accounts"],
                "invoices": v["invoices"],
                "micro": {
                    m: v[m] for m in ("billed", "drafted", "usage", "lad", "penalties", "pending")
                },
            }
        )
    return rows
