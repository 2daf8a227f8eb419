"""The dashboard's figures from the billing database: the hierarchy as one snapshot, and per
scope (national, region, agency, account) and period the billed, drafted, pending, usage by
service and by day, LAD and penalty credits, and the same for each child of the scope.

Plain functions over a SQLAlchemy connection (blocking: the API runs them in a thread). The
invoice figures are the billing subsystem's own (:func:`ocs.billing.runs.aggregates`); usage
by service and by day is read from billing's usage rollup (``billing_usage_daily``, kept as
the consumer stores the outbox's usage), for each account's billing period in local days of
its zone: billing's own day and period rule.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

from sqlalchemy import Connection, Engine, and_, func, or_, select, true

from ocs.billing import formulas as F
from ocs.billing import runs
from ocs.billing import schema as S
from ocs.billing.errors import NotFound, invalid
from ocs.constants import SCOPE_LEVELS

__all__ = ["LEVELS", "AggregateCache", "Hierarchy", "Unit", "load_hierarchy", "scope_figures"]

LEVELS: Final = SCOPE_LEVELS
CHILD: Final = {"national": "region", "region": "agency", "agency": "account"}
#: The invoice figures the billing aggregates give, in micro-units.
MONEY: Final = ("billed", "drafted", "usage", "lad", "penalties", "pending")
#: Seconds the billing aggregates of a level are kept (the live feed's tick).
AGGREGATES_TTL: Final = 1.0


@dataclass(frozen=True, slots=True)
class Unit:
    level: str
    code: str
    name: str
    parent: str | None
    #: The agency the unit belongs to (itself for an agency; None above).
    agency: str | None


@dataclass(slots=True)
class Hierarchy:
    """Every unit of the hierarchy, and which lines (MSISDNs) each account holds now."""

    units: dict[tuple[str, str], Unit] = field(default_factory=dict)
    children: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    #: account code -> its MSISDNs (lines with no end).
    lines: dict[str, list[str]] = field(default_factory=dict)
    #: MSISDN -> account code.
    account_of: dict[str, str] = field(default_factory=dict)

    def unit(self, level: str, code: str, agency: str | None) -> Unit:
        """The unit, if an ``agency``-scoped caller may see it (others: NotFound)."""
        u = self.units.get((level, code))
        if u is None or (agency is not None and u.agency != agency):
            raise NotFound(f"no {level} {code!r}")
        return u

    def path(self, u: Unit) -> list[Unit]:
        """From the national level down to ``u``."""
        out = [u]
        while out[0].parent is not None:
            level = LEVELS[LEVELS.index(out[0].level) - 1]
            out.insert(0, self.units[(level, out[0].parent)])
        return out

    def accounts_under(self, u: Unit) -> list[str]:
        if u.level == "account":
            return [u.code]
        out: list[str] = []
        for child in self.children.get((u.level, u.code), []):
            out += self.accounts_under(self.units[(CHILD[u.level], child)])
        return out

    def msisdns_under(self, u: Unit) -> list[str]:
        return [m for a in self.accounts_under(u) for m in self.lines.get(a, [])]

    def ancestors_of(self, msisdn: str) -> list[tuple[str, str]]:
        """(level, code) of every unit above and including the line's account."""
        account = self.account_of.get(msisdn)
        if account is None:
            return []
        return [(u.level, u.code) for u in self.path(self.units[("account", account)])]


def load_hierarchy(engine: Engine) -> Hierarchy:
    h = Hierarchy()
    with engine.connect() as conn:
        orgs = {r.id: r for r in conn.execute(select(S.org))}
        for r in orgs.values():
            parent = orgs[r.parent_id].code if r.parent_id in orgs else None
            agency = r.code if r.level == "agency" else None
            h.units[(r.level, r.code)] = Unit(r.level, r.code, r.name, parent, agency)
            if parent is not None:
                plevel = LEVELS[LEVELS.index(r.level) - 1]
                h.children.setdefault((plevel, parent), []).append(r.code)
        by_id = {}
        for r in conn.execute(select(S.account)):
            agency = orgs[r.agency_id].code
            h.units[("account", r.code)] = Unit("account", r.code, r.name, agency, agency)
            h.children.setdefault(("agency", agency), []).append(r.code)
            by_id[r.id] = r.code
        for r in conn.execute(select(S.line).where(S.line.c.valid_to.is_(None))):
            code = by_id.get(r.account_id)
            if code is not None:
                h.lines.setdefault(code, []).append(r.msisdn)
                h.account_of[r.msisdn] = code
    for kids in h.children.values():
        kids.sort()
    return h


def _usage(
    conn: Connection, u: Unit, period: str, service: str | None
) -> tuple[dict[str, int], list[dict[str, Any]], dict[str, int]]:
    """Usage under ``u`` in ``period`` (micro): by service, by day, by child of ``u`` (by the
    account itself at the account level). Read from billing's usage rollup: each account's
    billing period ``period`` (its billing day) in local days of its zone, billing's day rule
    (ocs/billing/rollup.py), so an account's days add up to what its invoice's period holds.
    The national and regional levels read the agencies' rows (a few thousand a month), the
    agency and account levels the accounts' (a range of the key per account)."""
    y, m = F.parse_period(period)
    acc = S.account
    agency, region, national = S.org.alias("agency"), S.org.alias("region"), S.org.alias("nat")
    above = agency.join(region, agency.c.parent_id == region.c.id).join(
        national, region.c.parent_id == national.c.id
    )
    unit_col = {"national": national, "region": region, "agency": agency, "account": acc}
    scope = unit_col[u.level].c.code == u.code
    child = unit_col[CHILD.get(u.level, "account")].c.code
    windows = {
        bd: F.period_bounds(y, m, bd)
        for bd in conn.execute(
            select(acc.c.billing_day)
            .select_from(acc.join(above, acc.c.agency_id == agency.c.id))
            .where(scope)
            .distinct()
        ).scalars()
    }
    by_service: dict[str, int] = {}
    by_day: dict[str, int] = {}
    by_child: dict[str, int] = {}
    if not windows:
        return by_service, [], by_child
    if u.level in ("national", "region"):
        t: Any = S.usage_daily_agency
        rows = t.join(above, t.c.agency_id == agency.c.id)
        billing_day = t.c.billing_day
    else:
        t = S.usage_daily
        rows = t.join(acc, t.c.account_id == acc.c.id).join(above, acc.c.agency_id == agency.c.id)
        billing_day = acc.c.billing_day
    first = min(lo for lo, _ in windows.values())
    last = max(hi for _, hi in windows.values())
    # (the days of every account's period, then each billing day's own: the first a range of
    # the primary key after the account or agency, which the database reads in order)
    in_period = and_(
        t.c.day >= first.isoformat(),
        t.c.day < last.isoformat(),
        or_(
            *(
                and_(billing_day == bd, t.c.day >= lo.isoformat(), t.c.day < hi.isoformat())
                for bd, (lo, hi) in sorted(windows.items())
            )
        )
        if len(windows) > 1
        else true(),
    )
    q = (
        select(child, t.c.service, t.c.day, func.sum(t.c.amount))
        .select_from(rows)
        .where(scope, in_period)
        .group_by(child, t.c.service, t.c.day)
    )
    if service:
        q = q.where(t.c.service == service)
    for code, svc, day, total in conn.execute(q):
        amount = int(total or 0)
        by_service[svc] = by_service.get(svc, 0) + amount
        by_day[day] = by_day.get(day, 0) + amount
        by_child[code] = by_child.get(code, 0) + amount
    days = []
    for i in range((last - first).days):
        text = (first + timedelta(days=i)).isoformat()
        days.append({"day": text, "usage": by_day.get(text, 0)})
    return by_service, days, by_child


class AggregateCache:
    """The billing aggregates of every unit of a level and period, kept ``ttl`` seconds: every
    page that re-reads its scope in the same second (after a live message, say) shares one
    computation, whatever the number of browsers."""

    def __init__(self, engine: Engine, ttl: float = AGGREGATES_TTL) -> None:
        self.engine = engine
        self.ttl = ttl
        self._kept: dict[tuple[str, str], tuple[float, dict[str, dict[str, int]]]] = {}
        self._lock = threading.Lock()

    def get(self, level: str, period: str) -> dict[str, dict[str, int]]:
        key = (level, period)
        with self._lock:  # (one computation at a time; the others then find it kept)
            kept = self._kept.get(key)
            now = time.monotonic()
            if kept is not None and now - kept[0] < self.ttl:
                return kept[1]
            items = runs.aggregates(self.engine, level, period, scope=None, offset=0,
                                    limit=10**9)  # fmt: skip
            out = {i["code"]: {**i["micro"], "accounts": i["accounts"]} for i in items}
            self._kept[key] = (time.monotonic(), out)
            return out


def scope_figures(
    engine: Engine,
    aggregates: AggregateCache,
    h: Hierarchy,
    level: str,
    code: str,
    period: str,
    *,
    service: str | None,
    agency: str | None,
) -> dict[str, Any]:
    """The scope's figures for ``period`` and one row per child (micro-units)."""
    u = h.unit(level, code, agency)
    try:
        F.parse_period(period)
    except F.FormulaError as exc:
        raise invalid("period", str(exc)) from None
    # Billing's aggregates per account (one computation, kept and shared), added up here for
    # the scope and each child: every figure is a sum over accounts.
    per_account = aggregates.get("account", period)

    def summed(unit: Unit) -> dict[str, int]:
        out = dict.fromkeys(MONEY, 0)
        for a in h.accounts_under(unit):
            figs = per_account.get(a)
            if figs:
                for m in MONEY:
                    out[m] += figs.get(m, 0)
        return out

    own = summed(u)
    child_level = CHILD.get(level)
    kids = h.children.get((level, code), []) if child_level else []
    accounts = h.accounts_under(u)
    with engine.connect() as conn:
        by_service, days, by_child = _usage(conn, u, period, service)
    children = []
    for k in kids:
        ku = h.units[(child_level or "", k)]
        figs = summed(ku)
        usage = by_child.get(k, 0)
        children.append(
            {
                "level": ku.level,
                "code": k,
                "name": ku.name,
                **{m: figs.get(m, 0) for m in MONEY},
                "period_usage": usage,
                "accounts": len(h.accounts_under(ku)),
                "lines": len(h.msisdns_under(ku)),
            }
        )
    return {
        "unit": u,
        "figures": own,
        "period_usage": sum(by_service.values()),
        "usage_by_service": dict(sorted(by_service.items())),
        "by_day": days,
        "children": children,
        "accounts": len(accounts),
    }
