"""The simplest rater: a fixed price per block of units, per service and plan.

A plan file (TOML) looks like::

    name = "prepaid-basic"

    [services.voice]
    unit = "seconds"      # seconds | octets | events
    price = "0.0015"      # per block, a decimal string in currency units
    block = 1             # units per block; a started block is charged whole
    default_quota = 60
    outgoing = true

The real rating engine (destinations, time bands, tiers, tax) replaces this module behind the
same :class:`tariffs.interface.Rater` protocol.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from tariffs.errors import PlanFileError, UnknownPlan, UnknownService
from tariffs.interface import ServiceSpec, UnitKind, UsageContext

_MICRO = 1_000_000
#: What affordable() answers for a free service: "as many as you like", bounded.
UNLIMITED_UNITS = 10**12


@dataclass(frozen=True, slots=True)
class BlockPrice:
    """``price`` micro-units per started block of ``block`` units."""

    spec: ServiceSpec
    price: int
    block: int

    def cost(self, units: int) -> int:
        if units <= 0:
            return 0
        return -(-units // self.block) * self.price

    def affordable(self, money: int, used: int) -> int:
        if self.price == 0:
            return UNLIMITED_UNITS
        if money < 0:
            return 0
        paid_blocks = -(-used // self.block) if used > 0 else 0
        more = money // self.price
        return (paid_blocks + more) * self.block - used


@dataclass(frozen=True, slots=True)
class SimplePlan:
    name: str
    services: Mapping[str, BlockPrice]


class SimpleRater:
    """A :class:`tariffs.interface.Rater` over block-priced plans."""

    def __init__(self, plans: Iterable[SimplePlan] = ()) -> None:
        self._plans: dict[str, SimplePlan] = {p.name: p for p in plans}

    @property
    def plans(self) -> Mapping[str, SimplePlan]:
        return self._plans

    def add(self, plan: SimplePlan) -> None:
        self._plans[plan.name] = plan

    def _price(self, ctx: UsageContext) -> BlockPrice:
        plan = self._plans.get(ctx.plan)
        if plan is None:
            raise UnknownPlan(f"no plan named {ctx.plan!r}")
        price = plan.services.get(ctx.service)
        if price is None:
            raise UnknownService(f"plan {ctx.plan!r} has no service {ctx.service!r}")
        return price

    def service(self, ctx: UsageContext) -> ServiceSpec:
        return self._price(ctx).spec

    def cost(self, ctx: UsageContext, units: int) -> int:
        return self._price(ctx).cost(units)

    def affordable(self, ctx: UsageContext, money: int, used: int) -> int:
        return self._price(ctx).affordable(money, used)


def _money(value: object, where: str) -> int:
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise PlanFileError(f'{where}: price must be a decimal string such as "0.0015"')
    try:
        d = Decimal(str(value)) * _MICRO
    except InvalidOperation:
        raise PlanFileError(f"{where}: price {value!r} is not a decimal number") from None
    if d != d.to_integral_value() or d < 0:
        raise PlanFileError(f"{where}: price {value!r} must be >= 0 with at most 6 decimals")
    return int(d)


def _positive_int(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise PlanFileError(f"{where}: must be a positive integer, got {value!r}")
    return value


def plan_from_mapping(data: Mapping[str, object], source: str = "<plan>") -> SimplePlan:
    """Build a plan from parsed TOML, with errors that name the source and the path."""
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise PlanFileError(f"{source}: 'name' must be a non-empty string")
    services = data.get("services")
    if not isinstance(services, dict) or not services:
        raise PlanFileError(f"{source}: 'services' must be a table with at least one service")
    prices: dict[str, BlockPrice] = {}
    for sname, s in services.items():
        where = f"{source}: services.{sname}"
        if not isinstance(s, dict):
            raise PlanFileError(f"{where}: must be a table")
        unknown = set(s) - {"unit", "price", "block", "default_quota", "outgoing"}
        if unknown:
            raise PlanFileError(f"{where}: unknown keys {sorted(unknown)}")
        try:
            unit = UnitKind(s.get("unit", ""))
        except ValueError:
            raise PlanFileError(
                f"{where}.unit: must be one of {[u.value for u in UnitKind]}"
            ) from None
        price = _money(s.get("price"), f"{where}.price")
        block = _positive_int(s.get("block", 1), f"{where}.block")
        quota = _positive_int(s.get("default_quota"), f"{where}.default_quota")
        outgoing = s.get("outgoing", True)
        if not isinstance(outgoing, bool):
            raise PlanFileError(f"{where}.outgoing: must be true or false")
        spec = ServiceSpec(sname, unit, quota, outgoing=outgoing, free=price == 0)
        prices[sname] = BlockPrice(spec, price, block)
    return SimplePlan(name, prices)


def load_plan(path: str | Path) -> SimplePlan:
    """Load and validate one TOML plan file."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlanFileError(f"{p}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PlanFileError(f"{p}: {exc}") from None
    return plan_from_mapping(data, str(p))


def default_plans_dir() -> Path:
    return Path(__file__).parent / "plans"


def load_default_rater() -> SimpleRater:
    """A rater with every plan shipped in tariffs/plans/."""
    return SimpleRater(load_plan(f) for f in sorted(default_plans_dir().glob("*.toml")))
