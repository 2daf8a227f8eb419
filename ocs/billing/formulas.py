"""The billing formulas: plain functions over values, no I/O (architecture.md, Conventions:
decisions are plain functions).

Money is an integer count of micro-units (10^-6 of the currency). Every intermediate value is
exact (a :class:`~fractions.Fraction`), and each figure is rounded once, at the end, to a
named increment with a named method (:func:`round_money`). Percentages arrive as decimal
strings ("99.9", "1.5") and are read exactly (:func:`percent`).

Rules (docs/billing.md states them for humans):

- Proration: by actual days of the month. A service active ``d`` whole days of a month of
  ``D`` days owes ``monthly x d / D``; the start day counts, the end day does not (an end
  date is the first day the service is no longer billed).
- LAD: days late = (delivered, or the run's cut-off for an order still open) - committed, in
  whole days (the date in the account's zone), less the grace days, never below zero.
  Damages = days x rate per day (a fixed amount, or a % of the service's monthly charge),
  capped (a % of the contract value, or an amount) less what earlier invoices credited.
- Availability: 1 - outage seconds / seconds in the month, where a service's counted tickets
  (not excluded) are clipped to the month and merged, so overlaps count once.
- Penalty ladder: the shortfall (target - availability, in percentage points) falls in the
  first step whose ``up_to`` is >= it (boundaries inclusive); the step's % of the service's
  monthly charge is credited. No shortfall (availability >= target): no penalty.
- Tax: exclusive (tax = net x rate), inclusive (tax = gross x rate / (100 + rate)) or exempt;
  on the invoice's net after the net is rounded to the currency's minor unit.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Final, Literal

__all__ = [
    "CENT",
    "FormulaError",
    "LadTerms",
    "LadderStep",
    "Outage",
    "RoundingMethod",
    "TaxMode",
    "TaxResult",
    "availability",
    "contract_months",
    "days_in_month",
    "lad_cap",
    "lad_damages",
    "lad_days_late",
    "ladder_penalty",
    "ladder_step",
    "merge_outages",
    "month_bounds",
    "months_between",
    "next_month",
    "outage_seconds",
    "parse_period",
    "percent",
    "period_text",
    "prev_month",
    "prorate",
    "prorated_days",
    "round_money",
    "tax",
]

RoundingMethod = Literal["half-even", "half-up", "up", "down"]
ROUNDING_METHODS: Final[tuple[str, ...]] = ("half-even", "half-up", "up", "down")

#: The invoice's minor unit, in micro-units: cents (10^-2) are 10,000 micro-units.
CENT: Final = 10_000


class FormulaError(ValueError):
    """An input a formula cannot use (a negative day count, an unknown rounding method)."""


def percent(text: str) -> Fraction:
    """A percentage written as a decimal string ("99.95", "1.5"), as an exact fraction of 1:
    ``percent("1.5") == Fraction(3, 200)``. Floats are refused."""
    if not isinstance(text, str):
        raise FormulaError(f"a percentage must be a decimal string, got {text!r}")
    try:
        d = Decimal(text.strip())
    except InvalidOperation:
        raise FormulaError(f"not a decimal percentage: {text!r}") from None
    if not d.is_finite():
        raise FormulaError(f"not a decimal percentage: {text!r}")
    return Fraction(d) / 100


def round_money(value: Fraction | int, method: RoundingMethod = "half-even", inc: int = 1) -> int:
    """``value`` (micro-units, exact) rounded to a multiple of ``inc`` micro-units: the only
    rounding step of billing. ``up``/``down`` are away from / towards zero; the ``half-``
    methods settle a tie (exactly half an increment) to even or away from zero."""
    if inc <= 0:
        raise FormulaError("the rounding increment must be positive")
    q = Fraction(value) / inc
    sign = -1 if q < 0 else 1
    a = abs(q)
    whole, rest = divmod(a.numerator, a.denominator)
    frac = Fraction(rest, a.denominator)
    if method == "down":
        n = whole
    elif method == "up":
        n = whole + (1 if frac else 0)
    elif method == "half-up":
        n = whole + (1 if frac >= Fraction(1, 2) else 0)
    elif method == "half-even":
        if frac > Fraction(1, 2) or (frac == Fraction(1, 2) and whole % 2 == 1):
            n = whole + 1
        else:
            n = whole
    else:
        raise FormulaError(f"unknown rounding method {method!r}")
    return sign * n * inc


def micro_text(value: Fraction) -> str:
    """An exact amount for an explanation: "2000000" or "306451612 + 28/31"."""
    sign = "-" if value < 0 else ""
    whole, rest = divmod(abs(value.numerator), value.denominator)
    return f"{sign}{whole}" if not rest else f"{sign}({whole} + {rest}/{value.denominator})"


def percent_text(value: Fraction, places: int = 5) -> str:
    """A fraction of 1 as a percentage with ``places`` decimals (truncated), for humans."""
    scaled = value * 100 * 10**places
    n = scaled.numerator // scaled.denominator
    return str(Decimal(n).scaleb(-places))


# -- calendar ------------------------------------------------------------------------------


def parse_period(text: str) -> tuple[int, int]:
    """ "2026-11" -> (2026, 11)."""
    try:
        y, m = text.split("-")
        year, month = int(y), int(m)
    except ValueError:
        raise FormulaError(f"a period is YYYY-MM, got {text!r}") from None
    if len(y) != 4 or not 1 <= month <= 12:
        raise FormulaError(f"a period is YYYY-MM, got {text!r}")
    return year, month


def period_text(year: int, month: int) -> str:
    return f"{year:04d}-{month:02d}"


def next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def prev_month(year: int, month: int) -> tuple[int, int]:
    return (year - 1, 12) if month == 1 else (year, month - 1)


def days_in_month(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


def month_bounds(year: int, month: int) -> tuple[date, date]:
    """First day of the month, and first day of the next."""
    return period_bounds(year, month, 1)


def period_start(year: int, month: int, billing_day: int = 1) -> date:
    """The first day of period ``year-month`` of an account billed on ``billing_day``: that
    day of the month, or the month's last day when the month is shorter (billing day 31:
    30 November, 28 February, 29 in a leap year; 31 December). Day 1: calendar months."""
    if not 1 <= billing_day <= 31:
        raise FormulaError(f"a billing day is 1-31, got {billing_day}")
    return date(year, month, min(billing_day, days_in_month(year, month)))


def period_bounds(year: int, month: int, billing_day: int = 1) -> tuple[date, date]:
    """First day of the period, and first day of the next (billing day 15, 2026-11: 15 Nov
    to 15 Dec, the 14th of December its last day)."""
    return period_start(year, month, billing_day), period_start(
        *next_month(year, month), billing_day
    )


def period_days(year: int, month: int, billing_day: int = 1) -> int:
    """Days of the period (28 to 31: billing day 31 gives 31 Jan - 28 Feb: 28 days)."""
    lo, hi = period_bounds(year, month, billing_day)
    return (hi - lo).days


def period_of(day: date, billing_day: int = 1) -> tuple[int, int]:
    """The period ``day`` is in (billing day 15: 14 Dec is in 2026-11, 15 Dec in 2026-12)."""
    y, m = day.year, day.month
    return (y, m) if day >= period_start(y, m, billing_day) else prev_month(y, m)


def months_between(first: tuple[int, int], last: tuple[int, int]) -> list[tuple[int, int]]:
    """Every month from ``first`` to ``last``, both included."""
    out = []
    cur = first
    while cur <= last:
        out.append(cur)
        cur = next_month(*cur)
    return out


# -- fixed charges -------------------------------------------------------------------------


def prorated_days(
    year: int, month: int, start: date, end: date | None, billing_day: int = 1
) -> int:
    """Days of the period the service is billed: from ``start`` (included) to ``end``
    (excluded; None: open-ended)."""
    first, after = period_bounds(year, month, billing_day)
    lo = max(first, start)
    hi = after if end is None else min(after, end)
    return max(0, (hi - lo).days)


def prorate(monthly: int, days: int, days_of_month: int) -> Fraction:
    """The exact part of a monthly charge owed for ``days`` of a month (a billing period) of
    ``days_of_month`` days (actual days); round it with :func:`round_money`."""
    if days < 0 or days > days_of_month or days_of_month not in (28, 29, 30, 31):
        raise FormulaError(f"cannot prorate {days} days of a {days_of_month}-day month")
    return Fraction(monthly * days, days_of_month)


# -- LAD -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LadTerms:
    """Late-delivery damages terms of a contract."""

    #: "fixed": ``rate`` is micro-units per day; "percent": ``rate_percent`` of the monthly
    #: charge of the late service per day.
    rate_kind: Literal["fixed", "percent"]
    rate: int = 0
    rate_percent: str = "0"
    grace_days: int = 0
    #: "percent": ``cap_percent`` of the contract value; "amount": ``cap`` micro-units;
    #: "none": uncapped.
    cap_kind: Literal["percent", "amount", "none"] = "none"
    cap: int = 0
    cap_percent: str = "0"


def lad_days_late(committed: date, delivered: date | None, cutoff: date, grace: int) -> int:
    """Chargeable days late: (delivered, or the cut-off while open) - committed - grace,
    never negative. Delivered on or before the committed date: 0."""
    end = delivered if delivered is not None else cutoff
    return max(0, (end - committed).days - grace)


def lad_cap(terms: LadTerms, contract_value: int) -> Fraction | None:
    """The most LAD the contract pays in all, or None (no cap)."""
    if terms.cap_kind == "amount":
        return Fraction(terms.cap)
    if terms.cap_kind == "percent":
        return contract_value * percent(terms.cap_percent)
    return None


def lad_damages(
    terms: LadTerms,
    days_late: int,
    monthly: int,
    contract_value: int,
    credited_order: int = 0,
    credited_contract: int = 0,
) -> tuple[Fraction, Fraction, bool]:
    """(damages to date for the order, uncapped; what is owed now; whether the cap bit).

    Owed now = the order's damages to date less what earlier invoices credited for it
    (``credited_order``), and at most what is left of the contract's cap after every LAD
    credited on it before (``credited_contract``); never negative. Exact: round the owed
    amount with :func:`round_money`."""
    if days_late < 0:
        raise FormulaError("days late cannot be negative")
    if terms.rate_kind == "fixed":
        daily = Fraction(terms.rate)
    else:
        daily = monthly * percent(terms.rate_percent)
    full = days_late * daily
    owed = full - credited_order
    cap = lad_cap(terms, contract_value)
    capped = False
    if cap is not None and owed > cap - credited_contract:
        owed, capped = cap - credited_contract, True
    return full, max(Fraction(0), owed), capped


def contract_months(start: date, end: date | None) -> int:
    """Months a contract runs, for its value: whole calendar months from the start's to the
    end's (end excluded; at least 1); an open-ended contract counts 12."""
    if end is None:
        return 12
    return max(1, (end.year - start.year) * 12 + end.month - start.month)


# -- availability and penalties --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outage:
    """One counted ticket's outage, ``start`` to ``end`` (aware datetimes)."""

    start: datetime
    end: datetime
    ticket: str = ""


def merge_outages(
    outages: Iterable[Outage], lo: datetime, hi: datetime
) -> list[tuple[datetime, datetime, tuple[str, ...]]]:
    """The outages clipped to [lo, hi) and merged where they overlap or touch; each merged
    interval keeps the tickets it came from."""
    clipped = sorted(
        (max(o.start, lo), min(o.end, hi), o.ticket) for o in outages if o.end > lo and o.start < hi
    )
    merged: list[tuple[datetime, datetime, tuple[str, ...]]] = []
    for s, e, t in clipped:
        if e <= s:
            continue
        if merged and s <= merged[-1][1]:
            ps, pe, pt = merged[-1]
            merged[-1] = (ps, max(pe, e), (*pt, t))
        else:
            merged.append((s, e, (t,)))
    return merged


def outage_seconds(merged: Sequence[tuple[datetime, datetime, tuple[str, ...]]]) -> int:
    """Whole seconds of the merged outages (a partial second is not counted)."""
    total = timedelta(0)
    for s, e, _ in merged:
        total += e - s
    return int(total.total_seconds())


def availability(outage_s: int, month_seconds: int) -> Fraction:
    """1 - outage / month, exact."""
    if month_seconds <= 0 or outage_s < 0:
        raise FormulaError("availability needs a positive month and a non-negative outage")
    return 1 - Fraction(min(outage_s, month_seconds), month_seconds)


@dataclass(frozen=True, slots=True)
class LadderStep:
    """Below target by up to ``up_to`` percentage points (None: any more) -> ``penalty`` %
    of the service's monthly charge."""

    up_to: str | None
    penalty: str


def ladder_step(
    avail: Fraction, target: str, ladder: Sequence[LadderStep]
) -> tuple[int | None, Fraction]:
    """(index of the step the shortfall falls in, or None; the shortfall in points)."""
    shortfall = (percent(target) - avail) * 100
    if shortfall <= 0:
        return None, Fraction(0)
    for i, step in enumerate(ladder):
        if step.up_to is None or shortfall <= percent(step.up_to) * 100:
            return i, shortfall
    return len(ladder) - 1, shortfall  # past the last bounded step: the last step applies


def ladder_penalty(
    avail: Fraction, target: str, ladder: Sequence[LadderStep], monthly: int
) -> tuple[int | None, Fraction]:
    """(step index or None, exact penalty in micro-units)."""
    i, _ = ladder_step(avail, target, ladder)
    if i is None:
        return None, Fraction(0)
    return i, monthly * percent(ladder[i].penalty)


# -- tax -----------------------------------------------------------------------------------

TaxMode = Literal["exclusive", "inclusive", "exempt"]


@dataclass(frozen=True, slots=True)
class TaxResult:
    net: int
    tax: int
    gross: int


def tax(
    amount: int,
    rate: str,
    mode: TaxMode,
    method: RoundingMethod = "half-even",
    inc: int = CENT,
) -> TaxResult:
    """Tax on an invoice's (already rounded) amount: the net for ``exclusive`` (gross = net +
    tax), the gross for ``inclusive`` (net = gross - tax); ``exempt``: no tax. Rounded once,
    to ``inc`` micro-units."""
    if mode == "exempt":
        return TaxResult(amount, 0, amount)
    r = percent(rate)
    if mode == "exclusive":
        t = round_money(amount * r, method, inc)
        return TaxResult(amount, t, amount + t)
    if mode == "inclusive":
        t = round_money(amount * r / (1 + r), method, inc)
        return TaxResult(amount - t, t, amount)
    raise FormulaError(f"unknown tax mode {mode!r}")
