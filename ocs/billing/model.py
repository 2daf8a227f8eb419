"""The organisation hierarchy, accounts, lines, fixed services, contracts and tax profiles:
validated writes and scoped reads over the billing database.

Every function takes a SQLAlchemy connection (the caller owns the transaction) and, for reads
and writes of an agency's objects, the ``scope``: the agency code an agency-scoped caller is
limited to (None: every agency). An object outside the scope is :class:`NotFound`, never a
refusal that would reveal it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, Row, and_, func, select

from ocs.api.problems import FieldError
from ocs.api.schema import parse_day
from ocs.billing import rollup
from ocs.billing import schema as S
from ocs.billing.errors import Conflict, Invalid, NotFound, invalid
from ocs.billing.formulas import (
    ROUNDING_METHODS,
    FormulaError,
    LadderStep,
    LadTerms,
    percent,
)
from ocs.money import MoneyFormatError, format_money, parse_money

LEVELS: Final = ("national", "region", "agency")
PARENT_LEVEL: Final = {"national": None, "region": "national", "agency": "region"}
CHARGING: Final = ("advance", "arrears")
TAX_MODES: Final = ("exclusive", "inclusive", "exempt")
#: SLA tiers and their default monthly availability targets (a service may set its own).
SLA_TIERS: Final = {"none": None, "bronze": "99.5", "silver": "99.9", "gold": "99.99"}
#: Default penalty ladder: below target by up to 0.1 points -> 5 %, up to 0.5 -> 10 %,
#: up to 1 -> 20 %, more -> 30 % of the service's monthly charge.
DEFAULT_LADDER: Final = (
    LadderStep("0.1", "5"),
    LadderStep("0.5", "10"),
    LadderStep("1", "20"),
    LadderStep(None, "30"),
)


# -- input helpers -------------------------------------------------------------------------


class Fields:
    """Reads typed values out of a JSON object, collecting every problem."""

    def __init__(self, body: object, prefix: str = "") -> None:
        if not isinstance(body, Mapping):
            raise invalid(prefix or "body", "must be a JSON object")
        self.body: Mapping[str, Any] = body
        self.prefix = prefix
        self.errors: list[FieldError] = []

    def _bad(self, name: str, detail: str) -> None:
        self.errors.append(FieldError(f"{self.prefix}{name}", detail))

    def has(self, name: str) -> bool:
        return name in self.body and self.body[name] is not None

    def text(self, name: str, default: str | None = None, *, max_len: int = 200) -> str:
        v = self.body.get(name, default)
        if v is None:
            self._bad(name, "is required")
            return ""
        if not isinstance(v, str) or not v.strip() or len(v) > max_len:
            self._bad(name, f"must be a non-empty string of at most {max_len} characters")
            return ""
        return v.strip()

    def opt_text(self, name: str) -> str | None:
        return self.text(name) if self.has(name) else None

    def choice(self, name: str, options: tuple[str, ...], default: str | None = None) -> str:
        v = self.text(name, default)
        if v and v not in options:
            self._bad(name, f"must be one of {', '.join(options)}")
        return v

    def integer(self, name: str, default: int | None = None, lo: int = 0, hi: int = 10**9) -> int:
        v = self.body.get(name, default)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            self._bad(name, f"must be an integer from {lo} to {hi}")
            return lo
        return v

    def money(self, name: str, default: str | None = None) -> int:
        v = self.body.get(name, default)
        if v is None:
            self._bad(name, 'is required (a decimal string such as "12.50")')
            return 0
        try:
            return parse_money(v, allow_negative=False)
        except MoneyFormatError as exc:
            self._bad(name, str(exc))
            return 0

    def pct(self, name: str, default: str | None = None, hi: str = "100") -> str:
        v = self.body.get(name, default)
        if v is None:
            self._bad(name, 'is required (a decimal percentage string such as "1.5")')
            return "0"
        try:
            if not isinstance(v, str):
                raise FormulaError("must be a decimal string")
            p = percent(v)
            if p < 0 or p > percent(hi):
                raise FormulaError(f"must be from 0 to {hi}")
        except FormulaError as exc:
            self._bad(name, str(exc))
            return "0"
        return v.strip()

    def day(self, name: str, *, required: bool = True) -> str | None:
        v = self.body.get(name)
        if v is None:
            if required:
                self._bad(name, "is required (YYYY-MM-DD)")
            return None
        try:
            return parse_day(v)
        except ValueError:
            self._bad(name, "must be a date YYYY-MM-DD")
            return None

    def check(self) -> None:
        if self.errors:
            raise Invalid(self.errors)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise invalid("timezone", f"unknown time zone {name!r}") from None


# -- organisation --------------------------------------------------------------------------


def org_json(r: Row[Any], parent_code: str | None) -> dict[str, Any]:
    return {"level": r.level, "code": r.code, "name": r.name, "parent": parent_code}


def _org_row(conn: Connection, code: str, level: str | None = None) -> Row[Any]:
    q = select(S.org).where(S.org.c.code == code)
    if level:
        q = q.where(S.org.c.level == level)
    r = conn.execute(q).first()
    if r is None:
        raise NotFound(f"no {level or 'organisation unit'} {code!r}")
    return r


def agency_of_org(conn: Connection, org_id: int) -> str | None:
    """The agency code of an org unit (None above agency level)."""
    r = conn.execute(select(S.org.c.level, S.org.c.code).where(S.org.c.id == org_id)).one()
    return str(r.code) if r.level == "agency" else None


def create_org(conn: Connection, level: str, body: object) -> dict[str, Any]:
    f = Fields(body)
    code, name = f.text("code", max_len=64), f.text("name")
    parent = f.text("parent", max_len=64) if PARENT_LEVEL.get(level) else None
    f.check()
    if level not in LEVELS:
        raise NotFound(f"no level {level!r}")
    parent_id = None
    if parent is not None:
        parent_level = PARENT_LEVEL[level]
        try:
            parent_id = _org_row(conn, parent, parent_level).id
        except NotFound:
            raise invalid("parent", f"no {parent_level} {parent!r}") from None
    if conn.execute(select(S.org.c.id).where(S.org.c.code == code)).first():
        raise Conflict(f"an organisation unit {code!r} exists")
    conn.execute(S.org.insert().values(level=level, code=code, name=name, parent_id=parent_id))
    return {"level": level, "code": code, "name": name, "parent": parent}


def _visible_org(r: Row[Any], scope: str | None) -> bool:
    return scope is None or (r.level == "agency" and r.code == scope)


def get_org(conn: Connection, level: str, code: str, scope: str | None) -> dict[str, Any]:
    r = _org_row(conn, code, level)
    if not _visible_org(r, scope):
        raise NotFound(f"no {level} {code!r}")
    parent = conn.execute(select(S.org.c.code).where(S.org.c.id == r.parent_id)).scalar()
    return org_json(r, parent)


def list_orgs(
    conn: Connection, level: str, scope: str | None, offset: int, limit: int
) -> list[dict[str, Any]]:
    parent = S.org.alias("parent")
    q = (
        select(S.org, parent.c.code.label("parent_code"))
        .select_from(S.org.outerjoin(parent, S.org.c.parent_id == parent.c.id))
        .where(S.org.c.level == level)
        .order_by(S.org.c.code)
        .offset(offset)
        .limit(limit)
    )
    if scope is not None:
        q = q.where(S.org.c.level == "agency", S.org.c.code == scope)
    return [org_json(r, r.parent_code) for r in conn.execute(q)]


def update_org(
    conn: Connection, level: str, code: str, body: object, scope: str | None
) -> dict[str, Any]:
    r = _org_row(conn, code, level)
    if not _visible_org(r, scope):
        raise NotFound(f"no {level} {code!r}")
    f = Fields(body)
    name = f.text("name")
    f.check()
    conn.execute(S.org.update().where(S.org.c.id == r.id).values(name=name))
    return get_org(conn, level, code, scope)


def delete_org(conn: Connection, level: str, code: str, scope: str | None) -> None:
    r = _org_row(conn, code, level)
    if not _visible_org(r, scope):
        raise NotFound(f"no {level} {code!r}")
    children = conn.execute(
        select(func.count()).select_from(S.org).where(S.org.c.parent_id == r.id)
    ).scalar_one()
    accounts = conn.execute(
        select(func.count()).select_from(S.account).where(S.account.c.agency_id == r.id)
    ).scalar_one()
    if children or accounts:
        raise Conflict(f"{level} {code!r} still has units or accounts below it")
    conn.execute(S.org.delete().where(S.org.c.id == r.id))


# -- tax profiles --------------------------------------------------------------------------


def put_tax_profile(conn: Connection, code: str, body: object) -> dict[str, Any]:
    f = Fields(body)
    mode = f.choice("mode", TAX_MODES)
    rate = f.pct("rate", "0" if mode == "exempt" else None)
    rounding = f.choice("rounding", ROUNDING_METHODS, "half-even")
    f.check()
    values = {"rate": rate, "mode": mode, "rounding": rounding}
    if conn.execute(select(S.tax_profile).where(S.tax_profile.c.code == code)).first():
        conn.execute(S.tax_profile.update().where(S.tax_profile.c.code == code).values(**values))
    else:
        conn.execute(S.tax_profile.insert().values(code=code, **values))
    return {"code": code, **values}


def list_tax_profiles(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(select(S.tax_profile).order_by(S.tax_profile.c.code))
    return [dict(r._mapping) for r in rows]


# -- accounts ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccountInfo:
    id: int
    code: str
    name: str
    agency: str
    currency: str
    tax_profile: str
    billing_day: int
    timezone: str


def _account_query() -> Any:
    return select(
        S.account.c.id,
        S.account.c.code,
        S.account.c.name,
        S.org.c.code.label("agency"),
        S.account.c.currency,
        S.account.c.tax_profile,
        S.account.c.billing_day,
        S.account.c.timezone,
    ).select_from(S.account.join(S.org, S.account.c.agency_id == S.org.c.id))


def account_info(conn: Connection, code: str, scope: str | None) -> AccountInfo:
    r = conn.execute(_account_query().where(S.account.c.code == code)).first()
    if r is None or (scope is not None and r.agency != scope):
        raise NotFound(f"no account {code!r}")
    return AccountInfo(*r)


def accounts(conn: Connection, scope: str | None, code: str | None = None) -> list[AccountInfo]:
    q = _account_query().order_by(S.account.c.code)
    if scope is not None:
        q = q.where(S.org.c.code == scope)
    if code is not None:
        q = q.where(S.account.c.code == code)
    return [AccountInfo(*r) for r in conn.execute(q)]


def account_json(conn: Connection, a: AccountInfo) -> dict[str, Any]:
    lines = conn.execute(
        select(S.line).where(S.line.c.account_id == a.id).order_by(S.line.c.msisdn)
    ).all()
    services = conn.execute(
        select(S.fixed_service)
        .where(S.fixed_service.c.account_id == a.id)
        .order_by(S.fixed_service.c.service_id)
    ).all()
    c = conn.execute(select(S.contract).where(S.contract.c.account_id == a.id)).first()
    return {
        "code": a.code,
        "name": a.name,
        "agency": a.agency,
        "currency": a.currency,
        "tax_profile": a.tax_profile,
        "billing_day": a.billing_day,
        "timezone": a.timezone,
        "lines": [
            {"msisdn": r.msisdn, "valid_from": r.valid_from, "valid_to": r.valid_to} for r in lines
        ],
        "services": [service_json(r) for r in services],
        "contract": contract_json(c) if c is not None else None,
    }


def create_account(conn: Connection, body: object, scope: str | None) -> dict[str, Any]:
    f = Fields(body)
    code, name = f.text("code", max_len=64), f.text("name")
    agency = f.text("agency", max_len=64)
    currency = f.text("currency", "EUR", max_len=3)
    tax = f.text("tax_profile", max_len=64)
    billing_day = f.integer("billing_day", 1, 1, 31)
    tz = f.text("timezone", "UTC", max_len=64)
    f.check()
    _zone(tz)
    if scope is not None and agency != scope:
        raise invalid("agency", f"no agency {agency!r}")
    try:
        agency_id = _org_row(conn, agency, "agency").id
    except NotFound:
        raise invalid("agency", f"no agency {agency!r}") from None
    if not conn.execute(select(S.tax_profile).where(S.tax_profile.c.code == tax)).first():
        raise invalid("tax_profile", f"no tax profile {tax!r}")
    if conn.execute(select(S.account.c.id).where(S.account.c.code == code)).first():
        raise Conflict(f"an account {code!r} exists")
    conn.execute(
        S.account.insert().values(
            code=code,
            name=name,
            agency_id=agency_id,
            currency=currency,
            tax_profile=tax,
            billing_day=billing_day,
            timezone=tz,
        )
    )
    return account_json(conn, account_info(conn, code, scope))


def update_account(conn: Connection, code: str, body: object, scope: str | None) -> dict[str, Any]:
    a = account_info(conn, code, scope)
    f = Fields(body)
    values: dict[str, Any] = {}
    if f.has("name"):
        values["name"] = f.text("name")
    if f.has("tax_profile"):
        values["tax_profile"] = f.text("tax_profile", max_len=64)
    if f.has("billing_day"):
        values["billing_day"] = f.integer("billing_day", 1, 1, 31)
    f.check()
    if (
        values.get("billing_day", a.billing_day) != a.billing_day
        and conn.execute(select(S.invoice.c.id).where(S.invoice.c.account_id == a.id)).first()
    ):
        # (its periods would no longer meet those invoiced: days billed twice or never)
        raise Conflict(f"account {code!r} has invoices: its billing day cannot change")
    if not values:
        raise invalid("body", "must change at least one of name, tax_profile, billing_day")
    if (
        "tax_profile" in values
        and not conn.execute(
            select(S.tax_profile).where(S.tax_profile.c.code == values["tax_profile"])
        ).first()
    ):
        raise invalid("tax_profile", f"no tax profile {values['tax_profile']!r}")
    if values.get("billing_day", a.billing_day) != a.billing_day:
        # (its agency's rollup rows are per billing day: its sums move to the new day's)
        rollup.rebilled(conn, a.id, a.billing_day, values["billing_day"])
    conn.execute(S.account.update().where(S.account.c.id == a.id).values(**values))
    return account_json(conn, account_info(conn, code, scope))


def delete_account(conn: Connection, code: str, scope: str | None) -> None:
    a = account_info(conn, code, scope)
    if conn.execute(select(S.invoice.c.id).where(S.invoice.c.account_id == a.id)).first():
        raise Conflict(f"account {code!r} has invoices: it cannot be deleted")
    msisdns = conn.execute(select(S.line.c.msisdn).where(S.line.c.account_id == a.id)).scalars()
    with rollup.moving(conn, list(msisdns)):  # (its lines' usage no longer counts for it)
        for t in (S.line, S.fixed_service, S.contract):
            conn.execute(t.delete().where(t.c.account_id == a.id))
    conn.execute(S.account.delete().where(S.account.c.id == a.id))


# -- lines ---------------------------------------------------------------------------------


def assign_line(
    conn: Connection, account_code: str, body: object, scope: str | None
) -> dict[str, Any]:
    """The line belongs to the account from ``valid_from`` (Unix ms) on; the previous owner's
    ownership ends then (usage before stays billed to it)."""
    a = account_info(conn, account_code, scope)
    f = Fields(body)
    msisdn = f.text("msisdn", max_len=32)
    valid_from = f.integer("valid_from", 0, 0, 2**53)
    f.check()
    if not msisdn.isdigit():
        raise invalid("msisdn", "must be digits (E.164 without +)")
    current = conn.execute(
        select(S.line).where(S.line.c.msisdn == msisdn, S.line.c.valid_to.is_(None))
    ).first()
    if current is not None:
        if current.account_id == a.id:
            return {"msisdn": msisdn, "account": a.code, "valid_from": current.valid_from}
        if current.valid_from >= valid_from:
            raise invalid("valid_from", "must be after the current owner's valid_from")
    # (the line's usage from valid_from on, stored already, counts for its new owner now)
    with rollup.moving(conn, [msisdn]):
        if current is not None:
            conn.execute(
                S.line.update().where(S.line.c.id == current.id).values(valid_to=valid_from)
            )
        conn.execute(
            S.line.insert().values(
                msisdn=msisdn, account_id=a.id, valid_from=valid_from, valid_to=None
            )
        )
    return {"msisdn": msisdn, "account": a.code, "valid_from": valid_from}


def end_line(conn: Connection, account_code: str, msisdn: str, at: int, scope: str | None) -> None:
    a = account_info(conn, account_code, scope)
    r = conn.execute(
        select(S.line).where(
            S.line.c.msisdn == msisdn, S.line.c.account_id == a.id, S.line.c.valid_to.is_(None)
        )
    ).first()
    if r is None:
        raise NotFound(f"account {account_code!r} has no line {msisdn!r}")
    with rollup.moving(conn, [msisdn]):
        conn.execute(
            S.line.update().where(S.line.c.id == r.id).values(valid_to=max(at, r.valid_from))
        )


# -- fixed services and contracts ----------------------------------------------------------


def ladder_of(text: str) -> tuple[LadderStep, ...]:
    return tuple(LadderStep(s["up_to"], s["penalty"]) for s in json.loads(text))


def service_json(r: Row[Any]) -> dict[str, Any]:
    return {
        "service_id": r.service_id,
        "description": r.description,
        "monthly_charge": format_money(r.monthly_charge),
        "charging": r.charging,
        "start_date": r.start_date,
        "end_date": r.end_date,
        "sla_tier": r.sla_tier,
        "sla_target": r.sla_target,
        "sla_ladder": json.loads(r.sla_ladder),
    }


def _ladder(f: Fields) -> list[dict[str, str | None]]:
    raw = f.body.get("sla_ladder")
    if raw is None:
        return [{"up_to": s.up_to, "penalty": s.penalty} for s in DEFAULT_LADDER]
    if not isinstance(raw, list) or not raw:
        f._bad("sla_ladder", "must be a non-empty list of {up_to, penalty}")
        return []
    out: list[dict[str, str | None]] = []
    last = None
    for i, step in enumerate(raw):
        sf = Fields(step, f"{f.prefix}sla_ladder[{i}].")
        up_to = sf.pct("up_to") if sf.has("up_to") else None
        penalty = sf.pct("penalty")
        if up_to is None and i != len(raw) - 1:
            sf._bad("up_to", "only the last step may be unbounded")
        if up_to is not None and last is not None and percent(up_to) <= percent(last):
            sf._bad("up_to", "steps must be in increasing order")
        last = up_to
        f.errors.extend(sf.errors)
        out.append({"up_to": up_to, "penalty": penalty})
    return out


def put_service(
    conn: Connection, account_code: str, service_id: str, body: object, scope: str | None
) -> dict[str, Any]:
    a = account_info(conn, account_code, scope)
    f = Fields(body)
    values: dict[str, Any] = {
        "description": f.text("description"),
        "monthly_charge": f.money("monthly_charge"),
        "charging": f.choice("charging", CHARGING, "arrears"),
        "start_date": f.day("start_date"),
        "end_date": f.day("end_date", required=False),
        "sla_tier": f.choice("sla_tier", tuple(SLA_TIERS), "none"),
    }
    target = f.pct("sla_target") if f.has("sla_target") else SLA_TIERS.get(values["sla_tier"])
    values["sla_target"] = target
    values["sla_ladder"] = json.dumps(_ladder(f))
    if values["end_date"] and values["start_date"] and values["end_date"] <= values["start_date"]:
        f._bad("end_date", "must be after start_date")
    f.check()
    existing = conn.execute(
        select(S.fixed_service).where(S.fixed_service.c.service_id == service_id)
    ).first()
    if existing is not None:
        if existing.account_id != a.id:
            raise Conflict(f"service {service_id!r} belongs to another account")
        conn.execute(
            S.fixed_service.update()
            .where(S.fixed_service.c.service_id == service_id)
            .values(**values)
        )
    else:
        conn.execute(
            S.fixed_service.insert().values(service_id=service_id, account_id=a.id, **values)
        )
    r = conn.execute(
        select(S.fixed_service).where(S.fixed_service.c.service_id == service_id)
    ).one()
    return service_json(r)


def delete_service(conn: Connection, account_code: str, service_id: str, scope: str | None) -> None:
    a = account_info(conn, account_code, scope)
    done = conn.execute(
        S.fixed_service.delete().where(
            and_(S.fixed_service.c.service_id == service_id, S.fixed_service.c.account_id == a.id)
        )
    )
    if not done.rowcount:
        raise NotFound(f"account {account_code!r} has no service {service_id!r}")


def contract_json(r: Row[Any]) -> dict[str, Any]:
    return {
        "start_date": r.start_date,
        "end_date": r.end_date,
        "usage_plan": r.usage_plan,
        "lad": {
            "rate_kind": r.lad_rate_kind,
            "rate": format_money(r.lad_rate),
            "rate_percent": r.lad_rate_percent,
            "grace_days": r.lad_grace_days,
            "cap_kind": r.lad_cap_kind,
            "cap": format_money(r.lad_cap),
            "cap_percent": r.lad_cap_percent,
        },
    }


def lad_terms(r: Row[Any]) -> LadTerms:
    return LadTerms(
        rate_kind=r.lad_rate_kind,
        rate=r.lad_rate,
        rate_percent=r.lad_rate_percent,
        grace_days=r.lad_grace_days,
        cap_kind=r.lad_cap_kind,
        cap=r.lad_cap,
        cap_percent=r.lad_cap_percent,
    )


def put_contract(
    conn: Connection, account_code: str, body: object, scope: str | None
) -> dict[str, Any]:
    a = account_info(conn, account_code, scope)
    f = Fields(body)
    start, end = f.day("start_date"), f.day("end_date", required=False)
    plan = f.text("usage_plan", "gov-payu", max_len=64)
    lad = f.body.get("lad", {})
    lf = Fields(lad if lad is not None else {}, "lad.")
    values: dict[str, Any] = {
        "start_date": start,
        "end_date": end,
        "usage_plan": plan,
        "lad_rate_kind": lf.choice("rate_kind", ("fixed", "percent"), "fixed"),
        "lad_rate": lf.money("rate", "0"),
        "lad_rate_percent": lf.pct("rate_percent", "0"),
        "lad_grace_days": lf.integer("grace_days", 0, 0, 365),
        "lad_cap_kind": lf.choice("cap_kind", ("none", "amount", "percent"), "none"),
        "lad_cap": lf.money("cap", "0"),
        "lad_cap_percent": lf.pct("cap_percent", "0"),
    }
    f.errors.extend(lf.errors)
    if start and end and end <= start:
        f._bad("end_date", "must be after start_date")
    f.check()
    if conn.execute(select(S.contract).where(S.contract.c.account_id == a.id)).first():
        conn.execute(S.contract.update().where(S.contract.c.account_id == a.id).values(**values))
    else:
        conn.execute(S.contract.insert().values(account_id=a.id, **values))
    return contract_json(
        conn.execute(select(S.contract).where(S.contract.c.account_id == a.id)).one()
    )
