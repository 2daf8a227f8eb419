"""The rating engine: exact, explainable prices for voice, SMS, data and events.

``cost(ctx, n)`` is the price of a session's first ``n`` units; ``rate(ctx, n)`` is the same
price with its breakdown; ``affordable(ctx, money, used)`` inverts it. One computation serves
all three, so the breakdown always adds up to the price charged.

How a price is made (docs/tariffs.md has the worked example):

1. The plan version in force when the session started; the service; the called number,
   normalised and matched to a destination by longest prefix; the place (home or a roaming
   zone); the time band at the start.
2. Billed units: the rate at the start gives the first increment (charged whole) and the
   increment after it, e.g. 60/1 or 30/6; data in KB steps, say.
3. For time (seconds), the billed seconds are cut where the time band changes, and each part
   is priced at its band's rate; tiers cut them again by cumulative usage ("from the 600th
   second on, 0.05 a minute"). Other units take the band at the start.
4. Connect fee, the usage lines, a percentage discount per line, tax per line (added when
   prices exclude it, shown when they include it), the session cap.
5. Rounding, once, on the sum: the plan's method to its decimals.

All of it is integer arithmetic: a line is an integer count of 1/Q micro-units, where Q is a
common multiple of every rate's "per" times 10^8 (discounts and tax are percentages with two
decimals), so nothing is lost before the one rounding.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from itertools import islice
from typing import Any, Final

from tariffs.errors import RatingError, UnknownPlan, UnknownService
from tariffs.interface import ServiceSpec, UnitKind, UsageContext
from tariffs.plan import PERCENT, PlanVersion, RateEntry, ServiceDef

_MICRO: Final = 1_000_000
_SCALE: Final = 10**8
#: affordable() without a limit searches at most this many units.
UNLIMITED_UNITS: Final = 10**12
#: Time-based services: a search that reaches this many seconds (about 3 years) stops there.
_MAX_SECONDS: Final = 10**8
_SEGMENT_HORIZON: Final = 3600
_CACHE_SIZE: Final = 100_000
#: Prices remembered per profile (billed units -> price) before they start afresh.
_PRICES_SIZE: Final = 4096
#: Prices remembered per session past the start band's first run (units -> price).
_MEMO_SIZE: Final = 8


def make_room(cache: dict[Any, Any], share: int = 16) -> list[Any]:
    """Drop the oldest ``1/share`` of a full cache (its insertion order) and return what went:
    a pause and a burst of misses that size, not the whole cache's at once (emptying a
    200,000-session cache stopped the event loop ~115 ms: docs/architecture.md,
    Performance 20)."""
    return [cache.pop(key) for key in list(islice(cache, max(1, len(cache) // share)))]


class PlanBook:
    """Every loaded plan version by name, the newest effective one first in line."""

    def __init__(self, versions: Iterable[PlanVersion] = ()) -> None:
        self._plans: dict[str, list[PlanVersion]] = {}
        for v in versions:
            self.add(v)

    def add(self, version: PlanVersion) -> None:
        """Add a version (a version with the same number replaces the old one)."""
        lst = [v for v in self._plans.get(version.name, []) if v.version != version.version]
        lst.append(version)
        lst.sort(key=lambda v: (v.effective_from, v.version))
        self._plans[version.name] = lst

    def names(self) -> list[str]:
        return sorted(self._plans)

    def keys(self) -> list[str]:
        """Plan names (so a PlanBook can stand where a mapping of plans is expected)."""
        return self.names()

    def versions(self, name: str) -> list[PlanVersion]:
        return list(self._plans.get(name, []))

    def __contains__(self, name: object) -> bool:
        return name in self._plans

    def at(self, name: str, t_ms: int) -> PlanVersion:
        """The version of plan ``name`` in force at ``t_ms`` (Unix ms)."""
        lst = self._plans.get(name)
        if not lst:
            raise UnknownPlan(f"no plan named {name!r}")
        chosen = None
        for v in lst:
            if v.effective_from <= t_ms:
                chosen = v
            else:
                break
        if chosen is None:
            raise UnknownPlan(f"plan {name!r} has no version in force at {_iso(t_ms // 1000)}")
        return chosen


@dataclass(slots=True)
class Line:
    """One line of a breakdown: ``num / den`` micro-units, exact (``amount`` as a Fraction,
    made only when asked: reducing fractions is most of a breakdown's cost). ``counted``
    lines add up to the total."""

    kind: str
    text: str
    num: int
    den: int = 1
    units: int = 0
    counted: bool = True

    @property
    def amount(self) -> Fraction:
        return Fraction(self.num, self.den)


@dataclass(slots=True)
class Rating:
    """A price and how it was made. (Plain slotted dataclasses, not frozen: a rating is made
    per call on the rating path, where freezing costs a third of the time; treat it as
    read-only.)"""

    plan: str
    version: int
    currency: str
    service: str
    number: str
    destination: str
    place: str
    band: str
    started_at: int
    units: int
    billed_units: int
    lines: tuple[Line, ...]
    total: int
    rounding: str

    def to_json(self) -> dict[str, Any]:
        """For people and the admin API: money as decimal strings, exact."""
        return {
            "plan": self.plan,
            "version": self.version,
            "currency": self.currency,
            "service": self.service,
            "number": self.number,
            "destination": self.destination,
            "place": self.place,
            "band_at_start": self.band,
            "started_at": _iso(self.started_at),
            "units": self.units,
            "billed_units": self.billed_units,
            "lines": [
                {
                    "kind": ln.kind,
                    "text": ln.text,
                    **({"units": ln.units} if ln.units else {}),
                    **money_json(ln.amount),
                    **({} if ln.counted else {"counted": False}),
                }
                for ln in self.lines
            ],
            "rounding": self.rounding,
            "total": money_json(Fraction(self.total))["amount"],
        }

    def explain(self) -> str:
        """The breakdown as text, one line each, the total last."""
        out = [
            f"{self.plan} v{self.version}  {self.service}  "
            f"{self.number or '-'} ({self.destination or 'no destination'})  {self.place}  "
            f"start {_iso(self.started_at)} ({self.band})",
            f"units {self.units}, billed {self.billed_units}",
        ]
        for ln in self.lines:
            m = money_json(ln.amount)
            amount = m["amount"] + (f" (= {m['exact']})" if "exact" in m else "")
            mark = "" if ln.counted else "  (included, not added)"
            out.append(f"  {ln.kind:<10} {ln.text:<52} {amount:>16} {self.currency}{mark}")
        out.append(
            f"  {'total':<10} {self.rounding:<52} {_decimal(self.total):>16} {self.currency}"
        )
        return "\n".join(out)


def _iso(t_s: int) -> str:
    """Unix seconds as ISO 8601 UTC with milliseconds, as every time the API shows."""
    return (
        datetime.fromtimestamp(t_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def _decimal(micro: int) -> str:
    """Micro-units as the one money format (ocs.money.format_money): at least 2 decimals,
    more when they are not zero ("0.10", "0.095")."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), _MICRO)
    return f"{sign}{whole}." + f"{frac:06d}".rstrip("0").ljust(2, "0")


def money_json(micro: Fraction) -> dict[str, str]:
    """An exact amount in micro-units as a currency decimal string; when it does not end, the
    string has 12 decimals and "…", and ``exact`` gives the fraction of a currency unit."""
    units = micro / _MICRO
    n, d = units.numerator, units.denominator
    d2 = d
    for p in (2, 5):
        while d2 % p == 0:
            d2 //= p
    if d2 == 1:
        # A terminating decimal: print every digit.
        places = 2  # at least 2 decimals, as every amount the OCS prints ("0.10")
        while (n * 10**places) % d:
            places += 1
        whole = abs(n) * 10**places // d
        s = str(whole).rjust(places + 1, "0")
        text = s[:-places] + "." + s[-places:]
        return {"amount": ("-" if n < 0 else "") + text}
    q = abs(n) * 10**12 // d
    s = str(q).rjust(13, "0")
    return {
        "amount": ("-" if n < 0 else "") + s[:-12] + "." + s[-12:] + "…",
        "exact": f"{n}/{d}",
    }


def round_to(x: int, step: int, method: str) -> int:
    """Round a non-negative integer to a multiple of ``step`` by the named method."""
    q, r = divmod(x, step)
    if r:
        if method == "up":
            q += 1
        elif method == "half-even":
            twice = 2 * r
            if twice > step or (twice == step and q % 2 == 1):
                q += 1
    return q * step


class _Profile:
    """What rating resolves for a plan version, service, called number, location and start
    band: the same for every session that shares them, so resolved once and shared (a new
    session costs a band lookup, not a plan walk). It also holds those sessions' common
    prices: while a session's billed units stay in its start band's first run, its price is a
    function of the billed units alone (see :meth:`TariffRater._cost`)."""

    __slots__ = (
        "band",
        "dest",
        "first",
        "free",
        "free_dest",
        "number",
        "place",
        "plan",
        "prices",
        "spec",
        "svc",
        "taxed",
        "time_based",
    )

    def __init__(self, plan: PlanVersion, ctx: UsageContext, band: str) -> None:
        svc = plan.services.get(ctx.service)
        if svc is None:
            raise UnknownService(f"plan {plan.name!r} has no service {ctx.service!r}")
        self.plan = plan
        self.svc: ServiceDef = svc
        self.number = plan.numbering.normalise(ctx.destination) if ctx.destination else ""
        self.dest = plan.destinations.lookup(self.number) if self.number else None
        place = plan.places.resolve(ctx.location)
        if place is None:
            raise RatingError(f"plan {plan.name!r} has no place for location {ctx.location!r}")
        self.place = place
        self.band = band
        first = plan.rate_for(svc.name, self.dest, place, band)
        if first is None:
            raise RatingError(
                f"plan {plan.name!r} has no rate for {svc.name} to "
                f"{self.dest or 'this destination'} at {place} in band {band}"
            )
        self.first: RateEntry = first
        self.free_dest = self.dest is not None and self.dest in plan.free_destinations
        self.taxed = plan.tax.applies(svc.name, self.dest)
        self.time_based = svc.unit is UnitKind.SECONDS
        # Free: it never costs anything, in any band a call may run into (barred-all lets
        # free services through, so "free so far" is not enough).
        bands = plan.calendar.names if self.time_based else (band,)
        entries = [plan.rate_for(svc.name, self.dest, place, b) for b in bands]
        self.free = self.free_dest or all(
            e is not None and e.connect_fee == 0 and all(t.price == 0 for t in e.tiers)
            for e in entries
        )
        self.spec = ServiceSpec(
            svc.name, svc.unit, svc.default_quota, outgoing=svc.outgoing, free=self.free
        )
        #: Billed units -> price, for the billed units within the start band's first run.
        self.prices: dict[int, int] = {}


class _Session:
    """What rating needs of one context, resolved once and kept (sessions rate many times)."""

    __slots__ = (
        "band",
        "dest",
        "first",
        "first_run",
        "free",
        "free_dest",
        "horizon",
        "memo",
        "number",
        "place",
        "plan",
        "profile",
        "segs",
        "svc",
        "t0",
        "taxed",
        "time_based",
    )

    def __init__(self, profile: _Profile, t0: int, first_run: int) -> None:
        self.profile = profile
        self.plan = profile.plan
        self.svc = profile.svc
        self.number = profile.number
        self.dest = profile.dest
        self.place = profile.place
        self.t0 = t0
        self.band = profile.band
        self.first = profile.first
        self.free_dest = profile.free_dest
        self.taxed = profile.taxed
        self.time_based = profile.time_based
        self.free = profile.free
        #: Seconds from the start that lie in the start band for sure (units other than
        #: seconds never change band).
        self.first_run = first_run if profile.time_based else UNLIMITED_UNITS
        self.horizon = 0
        self.segs: list[tuple[int, int, str]] = []
        #: The last few prices (units -> micro-units) past the first run: the engine prices
        #: the same cursor again at the next report.
        self.memo: dict[int, int] = {}

    def segments(self, billed: int) -> list[tuple[int, int, str]]:
        if not self.time_based:
            return [(0, billed, self.band)]
        if billed > self.horizon:
            self.horizon = max(billed, 2 * self.horizon, _SEGMENT_HORIZON)
            self.segs = self.plan.calendar.segments(self.t0, self.horizon)
        out = []
        for off, n, band in self.segs:
            if off >= billed:
                break
            out.append((off, min(n, billed - off), band))
        return out


class TariffRater:
    """A :class:`tariffs.interface.Rater` over a :class:`PlanBook`."""

    def __init__(self, book: PlanBook | None = None) -> None:
        self.book = book or PlanBook()
        self._sessions: dict[UsageContext, _Session] = {}
        self._profiles: dict[tuple[int, str, str, str, str], _Profile] = {}
        self._by_id: dict[int, tuple[UsageContext, _Session]] = {}

    @property
    def plans(self) -> PlanBook:
        return self.book

    def add(self, version: PlanVersion) -> None:
        """Add or replace a plan version; rating caches start afresh."""
        self.book.add(version)
        self._sessions = {}
        self._profiles = {}
        self._by_id = {}

    def replace_book(self, book: PlanBook) -> None:
        """Rate with another set of plans from now on (sessions keep their plan's name and
        start time, so they are rated with the version in force when they started)."""
        self.book = book
        self._sessions = {}
        self._profiles = {}
        self._by_id = {}

    def _session(self, ctx: UsageContext) -> _Session:
        # By identity first: the engine rates a session with the one context it keeps, and a
        # context's hash (its seven fields) is most of a lookup by value.
        seen = self._by_id.get(id(ctx))
        if seen is not None and seen[0] is ctx:
            return seen[1]
        s = self._sessions.get(ctx)
        if s is None:
            plan = self.book.at(ctx.plan, ctx.started_at)
            t0 = ctx.started_at // 1000
            band, first_run = plan.calendar.band_run(t0)
            # (the plan by identity: the profile holds it, so the id stays its own)
            key = (id(plan), ctx.service, ctx.destination, ctx.location, band)
            profile = self._profiles.get(key)
            if profile is None:
                profile = _Profile(plan, ctx, band)
                if len(self._profiles) >= _CACHE_SIZE:
                    make_room(self._profiles)
                self._profiles[key] = profile
            s = _Session(profile, t0, first_run)
            if len(self._sessions) >= _CACHE_SIZE:
                make_room(self._sessions)
            self._sessions[ctx] = s
        if len(self._by_id) >= _CACHE_SIZE:
            make_room(self._by_id)
        # (the entry holds the context, so its id cannot be another's while it is there)
        self._by_id[id(ctx)] = (ctx, s)
        return s

    def _cost(self, s: _Session, units: int) -> int:
        """``_price`` without a breakdown, remembered. While the billed units lie in the start
        band's first run, the price depends on them and the profile only (one band, one
        connect fee, the same tiers, discount, tax, rounding and cap), so every session of
        the profile shares it; past it, the session keeps its own last few."""
        billed = s.first.billed(units)
        if billed <= s.first_run:
            table, key, size = s.profile.prices, billed, _PRICES_SIZE
        else:
            table, key, size = s.memo, units, _MEMO_SIZE
        price = table.get(key)
        if price is None:
            price = self._price(s, units, None)
            if len(table) >= size:
                table.clear()
            table[key] = price
        return price

    # -- the Rater protocol -------------------------------------------------------------------

    def forget(self, ctx: UsageContext) -> None:
        # (the profile and its shared prices stay: every session of the profile uses them.
        # An entry by id holds its context, so while ``ctx`` lives its id is nobody else's.)
        self._by_id.pop(id(ctx), None)
        self._sessions.pop(ctx, None)

    def service(self, ctx: UsageContext) -> ServiceSpec:
        return self._session(ctx).profile.spec

    def cost(self, ctx: UsageContext, units: int) -> int:
        return self._cost(self._session(ctx), units)

    def rate(self, ctx: UsageContext, units: int) -> Rating:
        s = self._session(ctx)
        lines: list[Line] = []
        total = self._price(s, units, lines)
        plan = s.plan
        return Rating(
            plan=plan.name,
            version=plan.version,
            currency=plan.currency,
            service=s.svc.name,
            number=s.number,
            destination=s.dest or "",
            place=s.place,
            band=s.band,
            started_at=s.t0,
            units=units,
            billed_units=s.first.billed(units),
            lines=tuple(lines),
            total=total,
            rounding=f"{plan.rounding.method} to {plan.rounding.decimals} decimals",
        )

    def affordable(self, ctx: UsageContext, money: int, used: int, limit: int | None = None) -> int:
        """The largest n <= limit with cost(used + n) - cost(used) <= money; exact."""
        s = self._session(ctx)
        cap = UNLIMITED_UNITS if limit is None else limit
        if s.time_based:
            cap = min(cap, _MAX_SECONDS) if limit is None else cap
        base = self._cost(s, used)

        def fits(n: int) -> bool:
            return self._cost(s, used + n) - base <= money

        if money < 0 or cap <= 0:
            return 0
        if limit is not None and fits(cap):
            return cap  # the common case in quota sizing: the whole slice fits
        # Exponential search for a bound, then bisection: O(log n) prices.
        lo, hi = 0, 1
        while hi < cap and fits(hi):
            lo, hi = hi, hi * 2
        hi = min(hi, cap)
        if fits(hi):
            return hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if fits(mid):
                lo = mid
            else:
                hi = mid
        return lo

    # -- the one computation ----------------------------------------------------------------

    def _price(self, s: _Session, units: int, lines: list[Line] | None) -> int:
        """The price in micro-units of the first ``units`` units; the breakdown into
        ``lines`` when given."""
        if units <= 0:
            return 0
        plan = s.plan
        q = plan.denominator * _SCALE
        billed = s.first.billed(units)
        svc = s.svc.name
        if s.free_dest:
            if lines is not None:
                lines.append(Line("usage", f"{billed} units to {s.dest}: free destination",
                                  0, 1, billed))  # fmt: skip
            return 0
        tax = plan.tax
        add_tax = s.taxed and not tax.inclusive
        gross = 0
        if s.first.connect_fee:
            gross += self._line(
                s, "connect", f"connect fee ({s.band})", s.first.connect_fee * q, 0, s.band,
                lines,
            )  # fmt: skip
        for off, n, band in s.segments(billed):
            entry = plan.rate_for(svc, s.dest, s.place, band)
            if entry is None:
                raise RatingError(
                    f"plan {plan.name!r} has no rate for {svc} to {s.dest or 'this destination'}"
                    f" at {s.place} in band {band}"
                )
            tiers = entry.tiers
            for i, tier in enumerate(tiers):
                t_end = tiers[i + 1].start if i + 1 < len(tiers) else None
                lo = max(off, tier.start)
                hi = off + n if t_end is None else min(off + n, t_end)
                if hi <= lo:
                    continue
                u = hi - lo
                amount = tier.price * u * (plan.denominator // tier.per) * _SCALE
                text = None
                if lines is not None:
                    tier_s = f", from unit {tier.start}" if tier.start else ""
                    text = f"{band}: {u} x {_decimal(tier.price)} per {tier.per}{tier_s}"
                gross += self._line(s, "usage", text, amount, u, band, lines)
        if add_tax:
            tax_amount = gross * tax.percent // PERCENT
            gross += tax_amount
            if lines is not None:
                lines.append(Line("tax", f"tax {_pct(tax.percent)} added",
                                  tax_amount, q))  # fmt: skip
        rounded = round_to(gross, plan.rounding.step * q, plan.rounding.method)
        if lines is not None and rounded != gross:
            lines.append(Line("rounding", f"{plan.rounding.method} to "
                              f"{plan.rounding.decimals} decimals",
                              rounded - gross, q))  # fmt: skip
        # The cap comes last, so that a session never costs more than it, whatever rounding.
        cap = s.svc.session_cap
        if cap is not None and rounded > cap * q:
            if lines is not None:
                lines.append(Line("cap", f"session cap {_decimal(cap)}",
                                  cap * q - rounded, q))  # fmt: skip
            rounded = cap * q
        if lines is not None and s.taxed and tax.inclusive:
            lines.append(Line("tax", f"of which tax {_pct(tax.percent)}", rounded * tax.percent,
                              q * (PERCENT + tax.percent), counted=False))  # fmt: skip
        return rounded // q

    @staticmethod
    def _line(
        s: _Session,
        kind: str,
        text: str | None,
        amount: int,
        units: int,
        band: str,
        lines: list[Line] | None,
    ) -> int:
        """Add one priced line (and its discount); returns its net amount in 1/Q micro."""
        plan = s.plan
        q = plan.denominator * _SCALE
        disc = plan.discount_for(s.svc.name, s.dest, s.place, band)
        off = amount * disc.percent // PERCENT if disc is not None else 0
        if lines is not None:
            lines.append(Line(kind, text or kind, amount, q, units))
            if off:
                assert disc is not None
                lines.append(Line("discount", f"{disc.name} -{_pct(disc.percent)}",
                                  -off, q))  # fmt: skip
        return amount - off


def _pct(basis: int) -> str:
    whole, frac = divmod(basis, 100)
    return f"{whole}.{frac:02d}".rstrip("0").rstrip(".") + "%"
