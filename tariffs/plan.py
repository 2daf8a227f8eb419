"""Tariff plans: the TOML file format, its validation, and the parsed plan.

The format is documented in docs/tariffs.md with a complete example; tariffs/plans/ holds the
shipped plans. Loading is all-or-nothing: every problem in a file is collected and reported
with the file name, the path of the value (``rates[3].price``) and, where it can be found, the
line; a file with any problem loads nothing.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from math import lcm
from pathlib import Path
from typing import Any, Final, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tariffs.calendar import DAY_ALIASES, DAY_TYPES, Band, BandCalendar
from tariffs.digits import is_digits, scaled
from tariffs.errors import PlanFileError
from tariffs.interface import UnitKind
from tariffs.numbering import Numbering, PrefixTable

_MICRO: Final = 1_000_000
#: Percentages (discounts, tax) are kept in basis points of a percent: "19" -> 1900, "12.5" ->
#: 1250; 10_000 is 100 %.
PERCENT: Final = 10_000
ROUNDING_METHODS: Final = ("up", "down", "half-even")
#: The largest plan file, in characters (the HTTP API also caps its body at 1 MiB).
MAX_PLAN_SIZE: Final = 1024 * 1024
#: The deepest nesting of tables and arrays in a plan (the format needs 5, for
#: ``rates[0].tiers[1].from``); deeper input is refused before it is walked.
MAX_PLAN_DEPTH: Final = 16
_TOO_DEEP: Final = f"tables and arrays nested deeper than {MAX_PLAN_DEPTH} levels"
DIRECTIONS: Final = ("outgoing", "incoming")
_TIME_RE = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])|24:00")


@dataclass(frozen=True, slots=True)
class Tier:
    """From the ``start``-th unit of a session on: ``price`` micro-units per ``per`` units."""

    start: int
    price: int
    per: int


@dataclass(frozen=True, slots=True)
class RateEntry:
    index: int
    service: str
    destinations: frozenset[str] | None
    places: frozenset[str] | None
    bands: frozenset[str] | None
    connect_fee: int
    first_increment: int
    increment: int
    tiers: tuple[Tier, ...]

    @property
    def specificity(self) -> int:
        """A destination counts most, then a place, then a band: a rate for premium numbers
        beats an evening rate that names no destination."""
        return (
            4 * (self.destinations is not None)
            + 2 * (self.places is not None)
            + (self.bands is not None)
        )

    def matches(self, service: str, dest: str | None, place: str, band: str) -> bool:
        return (
            self.service == service
            and (self.destinations is None or dest in self.destinations)
            and (self.places is None or place in self.places)
            and (self.bands is None or band in self.bands)
        )

    def billed(self, units: int) -> int:
        """Units charged for ``units`` used: the first increment whole, then whole increments."""
        if units <= 0:
            return 0
        if units <= self.first_increment:
            return self.first_increment
        rest = units - self.first_increment
        return self.first_increment + -(-rest // self.increment) * self.increment


@dataclass(frozen=True, slots=True)
class Discount:
    name: str
    percent: int
    services: frozenset[str] | None
    destinations: frozenset[str] | None
    places: frozenset[str] | None
    bands: frozenset[str] | None

    def matches(self, service: str, dest: str | None, place: str, band: str) -> bool:
        return (
            (self.services is None or service in self.services)
            and (self.destinations is None or dest in self.destinations)
            and (self.places is None or place in self.places)
            and (self.bands is None or band in self.bands)
        )


@dataclass(frozen=True, slots=True)
class Tax:
    percent: int = 0
    inclusive: bool = True
    exempt_services: frozenset[str] = frozenset()
    exempt_destinations: frozenset[str] = frozenset()

    def applies(self, service: str, dest: str | None) -> bool:
        return (
            self.percent > 0
            and service not in self.exempt_services
            and dest not in self.exempt_destinations
        )


@dataclass(frozen=True, slots=True)
class Rounding:
    method: str = "half-even"
    decimals: int = 2

    @property
    def step(self) -> int:
        """The rounding step in micro-units (decimals 2: 10_000)."""
        step: int = 10 ** (6 - self.decimals)
        return step


@dataclass(frozen=True, slots=True)
class NetworkIds:
    """How network elements name this service (Diameter Gy, CDRs)."""

    rating_groups: frozenset[int] = frozenset()
    service_identifiers: frozenset[int] = frozenset()
    service_contexts: frozenset[str] = frozenset()
    cdr_record_types: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ServiceDef:
    name: str
    unit: UnitKind
    default_quota: int
    direction: str
    session_cap: int | None
    network: NetworkIds
    description: str = ""

    @property
    def outgoing(self) -> bool:
        return self.direction == "outgoing"


@dataclass(frozen=True, slots=True)
class Bundle:
    """Units a plan includes (e.g. 1,000 minutes a month), granted to a subscriber as a unit
    bucket for ``service``, used before money, valid ``valid_days`` days (0: no expiry)."""

    id: str
    service: str
    units: int
    valid_days: int = 0
    priority: int = 0


#: What crossing a balance threshold does, mildest first (docs/barring.md).
THRESHOLD_ACTIONS = ("notify", "bar-outgoing", "bar-all")


@dataclass(frozen=True, slots=True)
class Threshold:
    """A balance threshold: when the balance falls below ``below`` (micro-units, may be
    negative) ``action`` applies, until the balance is back at ``lift`` or more (hysteresis:
    ``lift`` >= ``below``)."""

    below: int
    action: str
    lift: int


@dataclass(frozen=True, slots=True)
class Places:
    home: frozenset[str]
    roaming: PrefixTable

    def resolve(self, location: str) -> str | None:
        """``home``, a roaming zone, or None when no zone covers the location."""
        if not location or location in self.home:
            return "home"
        return self.roaming.lookup(location)


@dataclass(frozen=True, slots=True)
class PlanVersion:
    """One version of a plan, in force from ``effective_from`` (Unix ms) until the next."""

    name: str
    version: int
    effective_from: int
    currency: str
    timezone: str
    description: str
    rounding: Rounding
    tax: Tax
    numbering: Numbering
    destinations: PrefixTable
    destination_names: frozenset[str]
    places: Places
    calendar: BandCalendar
    services: Mapping[str, ServiceDef]
    rates: tuple[RateEntry, ...]
    discounts: tuple[Discount, ...]
    free_destinations: frozenset[str]
    bundles: tuple[Bundle, ...]
    #: Balance thresholds, highest ``below`` first (empty: no barring by balance).
    thresholds: tuple[Threshold, ...]
    #: A common multiple of every rate's ``per``: line amounts are integers in 1/denominator
    #: of a micro-unit, so sums are exact.
    denominator: int
    source: str = ""
    _rate_memo: dict[tuple[str, str | None, str, str], RateEntry | None] = field(
        default_factory=dict, compare=False, repr=False
    )

    def rate_for(self, service: str, dest: str | None, place: str, band: str) -> RateEntry | None:
        """The most specific rate entry for the combination (naming a destination counts most,
        then a place, then a band); the first in the file among equally specific ones."""
        key = (service, dest, place, band)
        memo = self._rate_memo
        if key in memo:
            return memo[key]
        best: RateEntry | None = None
        for r in self.rates:
            if r.matches(service, dest, place, band) and (
                best is None or r.specificity > best.specificity
            ):
                best = r
        memo[key] = best
        return best

    def discount_for(
        self, service: str, dest: str | None, place: str, band: str
    ) -> Discount | None:
        for d in self.discounts:
            if d.matches(service, dest, place, band):
                return d
        return None

    def service_for(
        self,
        *,
        rating_group: int | None = None,
        service_identifier: int | None = None,
        service_context: str | None = None,
        record_type: str | None = None,
    ) -> str | None:
        """The service a network element means (Diameter Rating-Group, Service-Identifier,
        Service-Context-Id, or a CDR record type), or None. Every identifier given must match."""
        for s in self.services.values():
            n = s.network
            if (
                (rating_group is None or rating_group in n.rating_groups)
                and (service_identifier is None or service_identifier in n.service_identifiers)
                and (service_context is None or service_context in n.service_contexts)
                and (record_type is None or record_type in n.cdr_record_types)
                and (
                    rating_group is not None
                    or service_identifier is not None
                    or service_context is not None
                    or record_type is not None
                )
            ):
                return s.name
        return None


# -- loading -------------------------------------------------------------------------------------


class _Problems:
    """Collects every problem of a file, each with its path (and line where it can be found)."""

    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.lines = text.splitlines()
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        line = _locate(self.lines, path)
        where = f"{self.source}:{line}" if line else self.source
        self.items.append(f"{where}: {path}: {message}" if path else f"{where}: {message}")

    def raise_if_any(self) -> None:
        if self.items:
            raise PlanFileError("\n".join(self.items), problems=tuple(self.items))


def _section_end(lines: Sequence[str], start: int) -> int:
    """The line after the last one of the table whose header is at ``start``."""
    for k in range(start + 1, len(lines)):
        if lines[k].lstrip().startswith("["):
            return k
    return len(lines)


def _locate(lines: Sequence[str], path: str) -> int | None:
    """Best-effort line (1-based) of a path such as ``rates[2].price``, ``services.voice.unit``
    or ``rates[0].tiers[1].from``: the key's own line, else the line of the deepest table
    header on the path (where a missing key would go)."""
    if not path:
        return None
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    start, end = -1, _section_end(lines, -1)
    names: list[str] = []
    i = 0
    while i < len(parts):
        name = parts[i]
        nxt = parts[i + 1] if i + 1 < len(parts) else None
        dotted = ".".join([*names, name])
        if nxt is not None and nxt.startswith("["):
            header = f"[[{dotted}]]"
            hits = [k for k, ln in enumerate(lines) if ln.strip().startswith(header)]
            n = int(nxt[1:-1])
            if n < len(hits):
                start, names = hits[n], [*names, name]
                end = _section_end(lines, start)
                i += 2
                continue
        elif any(ln.strip().startswith(f"[{dotted}]") for ln in lines):
            start = next(k for k, ln in enumerate(lines) if ln.strip().startswith(f"[{dotted}]"))
            end, names = _section_end(lines, start), [*names, name]
            i += 1
            continue
        elif any(ln.strip().startswith(f"[{dotted}.") for ln in lines):
            names = [*names, name]  # [a.b] headers exist but no [a]: keep walking
            i += 1
            continue
        # A key (or an inline table/array) inside the current table.
        key = re.compile(rf"^\s*\"?{re.escape(name)}\"?\s*=")
        hit = next((k for k in range(start + 1, end) if key.match(lines[k])), None)
        if hit is not None:
            return hit + 1
        break
    return start + 1 if start >= 0 else None


def _money(
    p: _Problems, path: str, value: object, *, allow_none: bool = False, signed: bool = False
) -> int:
    if value is None:
        if not allow_none:
            p.add(path, 'is required (a decimal string such as "0.09")')
        return 0
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        p.add(path, 'must be a decimal string such as "0.09" (floats are not exact)')
        return 0
    micro = scaled(str(value), 6)
    if micro is None:
        p.add(path, f"{value!r} is not a decimal number (ASCII digits, at most 6 decimals)")
        return 0
    low = -(10**9) if signed else 0
    if not low * _MICRO <= micro <= 10**9 * _MICRO:
        p.add(path, f"{value!r} must be between {low} and 1000000000 with at most 6 decimals")
        return 0
    return micro


def _percent(p: _Problems, path: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        p.add(path, 'must be a percentage as a decimal string such as "19" or "12.5"')
        return 0
    basis = scaled(str(value), 2)
    if basis is None or not 0 <= basis <= PERCENT:
        p.add(path, f"{value!r} must be between 0 and 100 with at most 2 decimals")
        return 0
    return basis


def _int(
    p: _Problems, path: str, value: object, *, low: int = 1, default: int | None = None
) -> int:
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        p.add(path, f"must be an integer >= {low}, got {value!r}")
        return max(low, 1)
    return value


def _bounded(
    p: _Problems, path: str, value: object, low: int, high: int, default: int | None
) -> int:
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        p.add(path, f"must be an integer from {low} to {high}, got {value!r}")
        return low
    return value


def _names(
    p: _Problems,
    path: str,
    value: object,
    known: Iterable[str] | None,
    what: str,
    *,
    allow_empty: bool = False,
) -> frozenset[str] | None:
    """A list of known names; None when absent (a criterion that matches anything)."""
    if value is None:
        return None
    if value == [] and allow_empty:
        return frozenset()
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        p.add(path, f"must be a non-empty list of {what} names")
        return None
    if known is not None:
        known = set(known)
        for v in value:
            if v not in known:
                p.add(path, f"unknown {what} {v!r} (known: {', '.join(sorted(known))})")
    return frozenset(value)


def _check_keys(p: _Problems, path: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    for k in table:
        if k not in allowed:
            p.add(
                f"{path}.{k}" if path else k,
                f"unknown setting (allowed: {', '.join(sorted(allowed))})",
            )


def _table(p: _Problems, path: str, value: object) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        p.add(path, "must be a table")
        return {}
    return value


def _clock(p: _Problems, path: str, value: object, default: int) -> int:
    if value is None:
        return default
    if not isinstance(value, str) or not _TIME_RE.fullmatch(value):
        p.add(path, f'must be a time of day "HH:MM" (00:00 to 24:00), got {value!r}')
        return default
    h, m = value.split(":")
    return int(h) * 3600 + int(m) * 60


_NETWORK_KEYS = {"rating_groups", "service_identifiers", "service_contexts", "cdr_record_types"}
_RATE_KEYS = {
    "service", "destinations", "places", "bands", "connect_fee", "first_increment", "increment",
    "price", "per", "tiers",
}  # fmt: skip
_TOP_KEYS = {
    "name", "version", "effective_from", "description", "currency", "timezone", "rounding",
    "tax", "numbering", "destinations", "free_destinations", "places", "calendar", "bands",
    "services", "rates", "discounts", "bundles", "thresholds",
}  # fmt: skip


def _refuse(problem: str) -> NoReturn:
    raise PlanFileError(problem, problems=(problem,)) from None


def _depth(data: object) -> int:
    """How deeply tables and arrays nest in ``data`` (a table of scalars is 1), without
    recursion."""
    deepest = 0
    todo: list[tuple[object, int]] = [(data, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, dict):
            children: Iterable[object] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if level <= MAX_PLAN_DEPTH:
            todo.extend((child, level + 1) for child in children)
    return deepest


def parse_plan(text: str, source: str = "<plan>") -> PlanVersion:
    """Parse and validate one plan version from TOML text; PlanFileError lists every problem."""
    if len(text) > MAX_PLAN_SIZE:
        _refuse(f"{source}: {len(text)} characters, more than the {MAX_PLAN_SIZE} a plan may have")
    p = _Problems(source, text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        _refuse(f"{source}: {exc}")
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        _refuse(f"{source}: {_TOO_DEEP}")
    if _depth(data) > MAX_PLAN_DEPTH:
        _refuse(f"{source}: {_TOO_DEEP}")
    _check_keys(p, "", data, _TOP_KEYS)

    name = data.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        p.add("name", "must be 1-64 letters, digits, '.', '_' or '-'")
        name = "?"
    version = _int(p, "version", data.get("version"), default=1)
    eff = data.get("effective_from")
    if eff is None:
        effective_from = 0
    elif isinstance(eff, datetime) and eff.tzinfo is not None:
        effective_from = int(eff.timestamp() * 1000)
    else:
        p.add(
            "effective_from", "must be a date-time with an offset, e.g. 2026-01-01T00:00:00+01:00"
        )
        effective_from = 0
    currency = data.get("currency", "EUR")
    if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
        p.add("currency", "must be an ISO 4217 code such as EUR")
    tz = data.get("timezone", "UTC")
    try:
        ZoneInfo(str(tz))
    except (ZoneInfoNotFoundError, ValueError):
        p.add("timezone", f"unknown time zone {tz!r} (an IANA name such as Europe/Berlin)")
        tz = "UTC"
    description = data.get("description", "")
    if not isinstance(description, str):
        p.add("description", "must be a string")
        description = ""

    r = _table(p, "rounding", data.get("rounding"))
    _check_keys(p, "rounding", r, {"method", "decimals"})
    method = r.get("method", "half-even")
    if method not in ROUNDING_METHODS:
        p.add("rounding.method", f"must be one of {', '.join(ROUNDING_METHODS)}")
        method = "half-even"
    decimals = r.get("decimals", 2)
    if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= 6:
        p.add("rounding.decimals", "must be an integer from 0 to 6")
        decimals = 2
    rounding = Rounding(method, decimals)

    nb = _table(p, "numbering", data.get("numbering"))
    _check_keys(
        p, "numbering", nb,
        {"country_code", "national_prefix", "international_prefix", "bare", "short_numbers"},
    )  # fmt: skip
    short = nb.get("short_numbers", 5)
    if isinstance(short, bool) or not isinstance(short, int) or not 0 <= short <= 8:
        p.add("numbering.short_numbers", "must be an integer from 0 to 8")
        short = 5
    for k in ("country_code", "national_prefix", "international_prefix"):
        v = nb.get(k)
        if v is not None and (not isinstance(v, str) or (v and not is_digits(v))):
            p.add(f"numbering.{k}", "must be a string of digits")
    if nb.get("bare", "international") not in ("international", "national"):
        p.add("numbering.bare", "must be international or national")
    numbering = Numbering(
        country_code=str(nb.get("country_code", "")),
        national_prefix=str(nb.get("national_prefix", "0")),
        international_prefix=str(nb.get("international_prefix", "00")),
        bare=str(nb.get("bare", "international")),
        short_numbers=short,
    )

    dests = _table(p, "destinations", data.get("destinations"))
    groups: dict[str, list[str]] = {}
    for g, prefixes in dests.items():
        if not isinstance(prefixes, list) or not all(
            isinstance(x, str) and (x == "*" or is_digits(x)) for x in prefixes
        ):
            p.add(
                f"destinations.{g}",
                'must be a list of digit strings (international prefixes), or "*"',
            )
            continue
        groups[g] = ["" if x == "*" else x for x in prefixes]
    try:
        table = PrefixTable(groups)
    except ValueError as exc:
        p.add("destinations", str(exc))
        table = PrefixTable({})
    dest_names = frozenset(groups)
    free_dest = _names(
        p, "free_destinations", data.get("free_destinations"), dest_names, "destination"
    )

    pl = _table(p, "places", data.get("places"))
    _check_keys(p, "places", pl, {"home", "roaming"})
    home = pl.get("home", [])
    if not isinstance(home, list) or not all(is_digits(x) for x in home):
        p.add("places.home", "must be a list of home network ids (MCC+MNC digits)")
        home = []
    roaming_t = _table(p, "places.roaming", pl.get("roaming"))
    zones: dict[str, list[str]] = {}
    for z, ids in roaming_t.items():
        if z == "home":
            p.add(f"places.roaming.{z}", "'home' is reserved")
        if not isinstance(ids, list) or not all(
            isinstance(x, str) and (x == "*" or is_digits(x)) for x in ids
        ):
            p.add(f"places.roaming.{z}", 'must be a list of MCC or MCC+MNC prefixes, or "*"')
            continue
        zones[z] = ["" if x == "*" else x for x in ids]
    try:
        places = Places(frozenset(home), PrefixTable(zones))
    except ValueError as exc:
        p.add("places.roaming", str(exc))
        places = Places(frozenset(home), PrefixTable({}))
    place_names = {"home", *zones}

    cal = _table(p, "calendar", data.get("calendar"))
    _check_keys(p, "calendar", cal, {"holidays"})
    holidays = cal.get("holidays", [])
    if not isinstance(holidays, list) or not all(
        isinstance(d, date) and not isinstance(d, datetime) for d in holidays
    ):
        p.add("calendar.holidays", "must be a list of dates such as 2026-12-25")
        holidays = []

    bands: list[Band] = []
    raw_bands = data.get("bands", [{"name": "any"}])
    if not isinstance(raw_bands, list) or not raw_bands:
        p.add("bands", "must be an array of tables ([[bands]])")
        raw_bands = [{"name": "any"}]
    for i, b in enumerate(raw_bands):
        path = f"bands[{i}]"
        if not isinstance(b, dict):
            p.add(path, "must be a table")
            continue
        _check_keys(p, path, b, {"name", "days", "from", "to"})
        bname = b.get("name")
        if not isinstance(bname, str) or not bname:
            p.add(f"{path}.name", "must be a non-empty string")
            continue
        days_v = b.get("days", ["all"])
        days: set[str] = set()
        if not isinstance(days_v, list) or not days_v:
            p.add(f"{path}.days", "must be a non-empty list of day types")
        else:
            for d in days_v:
                if d in DAY_ALIASES:
                    days.update(DAY_ALIASES[d])
                elif d in DAY_TYPES:
                    days.add(d)
                else:
                    p.add(
                        f"{path}.days", f"unknown day {d!r} (mon..sun, hol, weekday, weekend, all)"
                    )
        start = _clock(p, f"{path}.from", b.get("from"), 0)
        end = _clock(p, f"{path}.to", b.get("to"), 86_400)
        if end <= start:
            p.add(f"{path}.to", "must be after 'from' (a band cannot cross midnight: split it)")
        bands.append(Band(bname, frozenset(days), start, end))
    band_names = {b.name for b in bands}
    if len(band_names) != len(bands):
        p.add("bands", "band names must be unique")
    try:
        calendar = BandCalendar(bands, str(tz), holidays)
    except ValueError as exc:
        p.add("bands", f"{exc}: the last band should have no 'days', 'from' or 'to'")
        calendar = BandCalendar([Band("any", frozenset(DAY_TYPES))], "UTC")

    services: dict[str, ServiceDef] = {}
    raw_services = _table(p, "services", data.get("services"))
    if not raw_services:
        p.add("services", "a plan needs at least one service")
    for sname, s in raw_services.items():
        path = f"services.{sname}"
        if not isinstance(s, dict):
            p.add(path, "must be a table")
            continue
        _check_keys(
            p,
            path,
            s,
            {"unit", "default_quota", "direction", "session_cap", "network", "description"},
        )
        try:
            unit = UnitKind(s.get("unit", ""))
        except ValueError:
            p.add(f"{path}.unit", f"must be one of {', '.join(u.value for u in UnitKind)}")
            unit = UnitKind.EVENTS
        quota = _int(p, f"{path}.default_quota", s.get("default_quota"))
        direction = s.get("direction", "outgoing")
        if direction not in DIRECTIONS:
            p.add(f"{path}.direction", "must be outgoing or incoming")
        cap = s.get("session_cap")
        cap_micro = None if cap is None else _money(p, f"{path}.session_cap", cap)
        net = _table(p, f"{path}.network", s.get("network"))
        _check_keys(p, f"{path}.network", net, _NETWORK_KEYS)
        ints = {}
        for k in ("rating_groups", "service_identifiers"):
            v = net.get(k, [])
            if not isinstance(v, list) or not all(
                isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v
            ):
                p.add(f"{path}.network.{k}", "must be a list of non-negative integers")
                v = []
            ints[k] = frozenset(v)
        strs = {}
        for k in ("service_contexts", "cdr_record_types"):
            v = net.get(k, [])
            if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
                p.add(f"{path}.network.{k}", "must be a list of strings")
                v = []
            strs[k] = frozenset(v)
        services[sname] = ServiceDef(
            sname, unit, quota, str(direction), cap_micro,
            NetworkIds(ints["rating_groups"], ints["service_identifiers"],
                       strs["service_contexts"], strs["cdr_record_types"]),
            str(s.get("description", "")),
        )  # fmt: skip

    rates: list[RateEntry] = []
    raw_rates = data.get("rates", [])
    if not isinstance(raw_rates, list):
        p.add("rates", "must be an array of tables ([[rates]])")
        raw_rates = []
    pers: set[int] = {1}
    for i, rt in enumerate(raw_rates):
        path = f"rates[{i}]"
        if not isinstance(rt, dict):
            p.add(path, "must be a table")
            continue
        _check_keys(p, path, rt, _RATE_KEYS)
        svc = rt.get("service")
        if svc not in services:
            p.add(f"{path}.service", f"unknown service {svc!r}")
            continue
        per = _int(p, f"{path}.per", rt.get("per"), default=1)
        tiers = [Tier(0, _money(p, f"{path}.price", rt.get("price")), per)]
        pers.add(per)
        raw_tiers = rt.get("tiers", [])
        if not isinstance(raw_tiers, list):
            p.add(f"{path}.tiers", "must be a list of {from, price, per} tables")
            raw_tiers = []
        for j, t in enumerate(raw_tiers):
            tp = f"{path}.tiers[{j}]"
            if not isinstance(t, dict):
                p.add(tp, 'must be a table {from = N, price = "...", per = N}')
                continue
            _check_keys(p, tp, t, {"from", "price", "per"})
            start = _int(p, f"{tp}.from", t.get("from"))
            if start <= tiers[-1].start:
                p.add(f"{tp}.from", "tiers must start at increasing unit counts")
            tper = _int(p, f"{tp}.per", t.get("per"), default=per)
            pers.add(tper)
            tiers.append(Tier(start, _money(p, f"{tp}.price", t.get("price")), tper))
        first = _int(p, f"{path}.first_increment", rt.get("first_increment"), default=1)
        inc = _int(p, f"{path}.increment", rt.get("increment"), default=1)
        rates.append(
            RateEntry(
                i,
                str(svc),
                _names(
                    p, f"{path}.destinations", rt.get("destinations"), dest_names, "destination"
                ),
                _names(p, f"{path}.places", rt.get("places"), place_names, "place"),
                _names(p, f"{path}.bands", rt.get("bands"), band_names, "band"),
                _money(p, f"{path}.connect_fee", rt.get("connect_fee"), allow_none=True),
                first,
                inc,
                tuple(tiers),
            )
        )
    for sname in services:
        if not any(r.service == sname for r in rates):
            p.add(f"services.{sname}", "has no [[rates]] entry")

    discounts: list[Discount] = []
    raw_disc = data.get("discounts", [])
    if not isinstance(raw_disc, list):
        p.add("discounts", "must be an array of tables ([[discounts]])")
        raw_disc = []
    for i, d in enumerate(raw_disc):
        path = f"discounts[{i}]"
        if not isinstance(d, dict):
            p.add(path, "must be a table")
            continue
        _check_keys(p, path, d, {"name", "percent", "services", "destinations", "places", "bands"})
        discounts.append(
            Discount(
                str(d.get("name", f"discount {i + 1}")),
                _percent(p, f"{path}.percent", d.get("percent")),
                _names(p, f"{path}.services", d.get("services"), services, "service"),
                _names(p, f"{path}.destinations", d.get("destinations"), dest_names, "destination"),
                _names(p, f"{path}.places", d.get("places"), place_names, "place"),
                _names(p, f"{path}.bands", d.get("bands"), band_names, "band"),
            )
        )

    tx = _table(p, "tax", data.get("tax"))
    _check_keys(p, "tax", tx, {"rate", "inclusive", "exempt_services", "exempt_destinations"})
    inclusive = tx.get("inclusive", True)
    if not isinstance(inclusive, bool):
        p.add("tax.inclusive", "must be true (prices include tax) or false (tax is added)")
        inclusive = True
    exempt_s = _names(
        p, "tax.exempt_services", tx.get("exempt_services"), services, "service", allow_empty=True
    )
    exempt_d = _names(
        p, "tax.exempt_destinations", tx.get("exempt_destinations"), dest_names, "destination",
        allow_empty=True,
    )  # fmt: skip
    tax = Tax(
        _percent(p, "tax.rate", tx.get("rate", "0")),
        inclusive,
        exempt_s or frozenset(),
        exempt_d or frozenset(),
    )

    bundles: list[Bundle] = []
    raw_bundles = data.get("bundles", [])
    if not isinstance(raw_bundles, list):
        p.add("bundles", "must be an array of tables ([[bundles]])")
        raw_bundles = []
    for i, b in enumerate(raw_bundles):
        path = f"bundles[{i}]"
        if not isinstance(b, dict):
            p.add(path, "must be a table")
            continue
        _check_keys(p, path, b, {"id", "service", "units", "valid_days", "priority"})
        bid = b.get("id")
        if not isinstance(bid, str) or not 1 <= len(bid) <= 64:
            p.add(f"{path}.id", "must be a string of 1-64 characters")
            bid = "?"
        if b.get("service") not in services:
            p.add(f"{path}.service", f"unknown service {b.get('service')!r}")
        bundles.append(
            Bundle(
                bid,
                str(b.get("service")),
                _bounded(p, f"{path}.units", b.get("units"), 1, 10**15, None),
                _bounded(p, f"{path}.valid_days", b.get("valid_days"), 0, 3660, 0),
                _bounded(p, f"{path}.priority", b.get("priority"), 0, 1_000_000, 0),
            )
        )

    thresholds = _thresholds(p, "thresholds", data.get("thresholds", []))

    p.raise_if_any()
    return PlanVersion(
        name=str(name),
        version=version,
        effective_from=effective_from,
        currency=str(currency),
        timezone=str(tz),
        description=description,
        rounding=rounding,
        tax=tax,
        numbering=numbering,
        destinations=table,
        destination_names=dest_names,
        places=places,
        calendar=calendar,
        services=services,
        rates=tuple(rates),
        discounts=tuple(discounts),
        free_destinations=free_dest or frozenset(),
        bundles=tuple(bundles),
        thresholds=thresholds,
        denominator=lcm(*pers),
        source=source,
    )


def _thresholds(p: _Problems, path: str, raw: object) -> tuple[Threshold, ...]:
    if not isinstance(raw, list):
        p.add(path, "must be an array of tables ([[thresholds]])")
        return ()
    out: list[Threshold] = []
    for i, t in enumerate(raw):
        at = f"{path}[{i}]"
        if not isinstance(t, dict):
            p.add(at, "must be a table")
            continue
        _check_keys(p, at, t, {"below", "action", "lift"})
        below = _money(p, f"{at}.below", t.get("below"), signed=True)
        lift = below
        if t.get("lift") is not None:
            lift = _money(p, f"{at}.lift", t.get("lift"), signed=True)
            if lift < below:
                p.add(f"{at}.lift", "must be at least `below` (the bar lifts at or above it)")
        action = t.get("action")
        if action not in THRESHOLD_ACTIONS:
            p.add(f"{at}.action", f"must be one of {', '.join(THRESHOLD_ACTIONS)}")
            action = "notify"
        if any(o.below == below for o in out):
            p.add(f"{at}.below", "two thresholds at the same balance")
        out.append(Threshold(below, str(action), lift))
    if len(out) > 16:
        p.add(path, "at most 16 thresholds")
    return tuple(sorted(out, key=lambda t: -t.below))


def parse_thresholds(raw: object, source: str = "thresholds") -> tuple[Threshold, ...]:
    """Validate a list of thresholds given as data (an account's override, from JSON):
    ``[{"below": "-5.00", "action": "bar-outgoing", "lift": "0.00"}, ...]``. PlanFileError
    lists every problem."""
    p = _Problems(source, "")
    out = _thresholds(p, source, raw)
    p.raise_if_any()
    return out


def load_plan_file(path: str | Path) -> PlanVersion:
    """Read and validate one plan file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"{p}: cannot read: {getattr(exc, 'strerror', None) or exc}"
        raise PlanFileError(msg, problems=(msg,)) from None
    return parse_plan(text, str(p))
