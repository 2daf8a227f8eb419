"""``POST /v1/rate``: prices usage with the same rating engine as charging, on the plans of the
moment, without touching any account.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from ocs.api.context import CLOCK, TARIFFS
from ocs.api.problems import (
    FieldError,
    InvalidInput,
)
from ocs.api.request import (
    MAX_LOCATION,
    MAX_NUMBER,
    MAX_SERVICE,
    Fields,
    json_body,
)
from ocs.api.routes import Route
from ocs.api.schema import (
    BOOL,
    INT,
    MONEY_OUT,
    STRING,
    Body,
    Instant,
    Integer,
    Money,
    Plan,
    Text,
    array,
    obj,
)
from ocs.constants import MAX_UNITS
from ocs.money import format_money
from tariffs import (
    RatingError,
    TariffRater,
    UnitKind,
    UnknownPlan,
    UsageContext,
)

#: Seconds rated in one query (used + units), about 3 years: time is cut into bands day by
#: day, so this bounds the work of one request.
MAX_RATED_SECONDS: Final = 10**8
#: ``units`` or ``duration`` (one of them, required): how much usage to price.
_UNITS: Final = Integer(0, MAX_UNITS, required=True)
RATE: Final = Body(
    "Rate",
    {
        "plan": Plan(MAX_SERVICE, required=True, description="a plan the tariffs know"),
        "service": Text(MAX_SERVICE, required=True, description="a service of that plan"),
        "units": Integer(0, MAX_UNITS, description="units to price (one of units, duration)"),
        "duration": Integer(
            0, MAX_UNITS, description="seconds, for services counted in seconds (or units)"
        ),
        "to": Text(MAX_NUMBER, description="the called number"),
        "at": Instant(description="when the usage starts (RFC 3339 with offset); absent: now"),
        "location": Text(MAX_LOCATION, description="where the subscriber is (home or roaming)"),
        "used": Integer(0, MAX_UNITS, description="units the session already used"),
        "money": Money("non-negative", description="also say how many units this pays for"),
    },
    one_of_required=(("units",), ("duration",)),
)


def rating_answer(
    rater: TariffRater,
    ctx: UsageContext,
    units: int,
    *,
    used: int = 0,
    money: int | None = None,
) -> dict[str, object]:
    """The answer of ``POST /v1/rate`` (also ``ocs rate --local --json``).

    The breakdown (:meth:`tariffs.Rating.to_json`) of the session's first ``used + units``
    units, with ``total`` their cumulative cost; ``total_used`` the cost of the first ``used``;
    ``charge`` the difference (what the ``units`` after ``used`` cost); with ``money``,
    ``affordable``: the most units after ``used`` that ``money`` pays for. RatingError when
    the context cannot be rated.
    """
    rating = rater.rate(ctx, used + units)
    before = rater.cost(ctx, used) if used else 0
    out = rating.to_json()
    out["total"] = format_money(rating.total)
    out["used"] = used
    out["total_used"] = format_money(before)
    out["charge"] = format_money(rating.total - before)
    if money is not None:
        out["money"] = format_money(money)
        out["affordable"] = rater.affordable(ctx, money, used)
    return out


async def rate(request: web.Request) -> web.StreamResponse:
    """``POST /v1/rate``: what some usage would cost, itemised; changes nothing."""
    app = request.app
    book = app[TARIFFS].rater.book  # one set of plans for the whole request
    f = Fields(await json_body(request), RATE, now=app[CLOCK](), plans=book.names())
    plan: str = f.value("plan") or ""
    service: str = f.value("service")
    by_duration = f.has("duration") and not f.has("units")
    if f.has("duration") and f.has("units"):
        f.error("duration", "is another name for units (in seconds): give one of them")
    unit_field = "duration" if by_duration else "units"
    units = _UNITS.read(f, unit_field)
    to: str | None = f.value("to")
    at: int = f.value("at")
    location: str | None = f.value("location")
    used: int = f.value("used")
    money: int | None = f.value("money")
    f.check()
    # What the plan itself can tell, each attributed to its field.
    try:
        version = book.at(plan, at)
    except UnknownPlan as exc:
        raise InvalidInput([FieldError("at", str(exc))]) from None
    svc = version.services.get(service)
    if svc is None:
        known = ", ".join(sorted(version.services))
        f.error("service", f"is not a service of plan {plan} v{version.version} (known: {known})")
    elif by_duration and svc.unit is not UnitKind.SECONDS:
        f.error("duration", f"is for services counted in seconds; {service} counts "
                f"{svc.unit.value}: give units")  # fmt: skip
    elif svc.unit is UnitKind.SECONDS and used + units > MAX_RATED_SECONDS:
        f.error(unit_field, f"plus used must not exceed {MAX_RATED_SECONDS} seconds")
    if to is not None:
        try:
            version.numbering.normalise(to)
        except RatingError as exc:
            f.error("to", str(exc))
    if location is not None and version.places.resolve(location) is None:
        f.error("location", f"is not a home network of plan {plan} and no roaming zone covers it")
    f.check()
    ctx = UsageContext(plan, service, started_at=at, destination=to or "", location=location or "")
    try:
        # A rater of its own: what-if queries do not crowd the charging engine's cache out.
        answer = rating_answer(TariffRater(book), ctx, units, used=used, money=money)
    except RatingError as exc:  # e.g. no rate entry for this destination, place and band
        raise InvalidInput([FieldError("body", str(exc))]) from None
    return web.json_response(answer)


_MAYBE: Final = {"type": ["string", "null"]}
#: An exact amount: a decimal string, or 12 decimals and "…" when it does not end.
_EXACT: Final = {"type": "string", "pattern": "^-?[0-9]+\\.[0-9]{2,}…?$"}
RATING_SCHEMA: Final = obj(
    {
        "plan": STRING, "version": INT, "currency": STRING, "service": STRING,
        "number": _MAYBE, "destination": _MAYBE, "place": _MAYBE, "band_at_start": _MAYBE,
        "started_at": {"type": "string", "format": "date-time"},
        "units": INT, "billed_units": INT,
        "lines": array(obj(
            {"kind": STRING, "text": STRING, "units": INT, "amount": _EXACT,
             "exact": STRING, "counted": BOOL},
            optional=("units", "exact", "counted"),
        )),
        "rounding": STRING, "total": MONEY_OUT, "used": INT, "total_used": MONEY_OUT,
        "charge": MONEY_OUT, "money": MONEY_OUT, "affordable": INT,
    },
    optional=("money", "affordable"),
)  # fmt: skip

ROUTES: Final = (
    Route("POST", "/v1/rate", rate, "rating", "read", body=RATE, answer=RATING_SCHEMA),
)
