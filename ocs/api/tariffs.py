"""``/v1/tariffs``: the plans of the :class:`~ocs.charging.tariffs.TariffRegistry` (asked on each
request: a plan loaded by another process is known here once the registry has picked it up),
and loading a plan version.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Final

from aiohttp import web

from ocs.api.context import CLOCK, TARIFFS
from ocs.api.problems import (
    TYPE_UNKNOWN_PLAN,
    invalid_plan,
    problem,
)
from ocs.api.render import iso_time
from ocs.api.request import (
    MAX_SOURCE,
    query,
    read_body,
)
from ocs.api.routes import Route
from ocs.api.schema import BOOL, INT, MONEY_OUT, STRING, TIME_OUT, Param, array, nullable, obj
from ocs.money import format_money
from tariffs import (
    PlanBook,
    PlanFileError,
    PlanVersion,
    UnitKind,
    UnknownPlan,
)

#: Content types a plan file may be sent as.
PLAN_CONTENT_TYPES: Final = frozenset({"application/toml", "text/plain"})


def _percent(basis: int) -> str:
    """Basis points of a percent as a decimal string: 1900 -> "19", 1250 -> "12.5"."""
    whole, frac = divmod(basis, 100)
    return f"{whole}.{frac:02d}".rstrip("0").rstrip(".")


def _version_summary(v: PlanVersion, current: PlanVersion | None) -> dict[str, object]:
    return {
        "version": v.version,
        "effective_from": iso_time(v.effective_from),
        "in_force": v is current,
        "description": v.description,
        "currency": v.currency,
        "services": sorted(v.services),
        "source": v.source,
    }


def _version_detail(v: PlanVersion, current: PlanVersion | None) -> dict[str, object]:
    out = _version_summary(v, current)
    out.update(
        {
            "timezone": v.timezone,
            "rounding": {"method": v.rounding.method, "decimals": v.rounding.decimals},
            "tax": {"rate": _percent(v.tax.percent), "inclusive": v.tax.inclusive},
            "services": {
                name: {
                    "unit": s.unit.value,
                    "default_quota": s.default_quota,
                    "direction": s.direction,
                    "session_cap": None if s.session_cap is None else format_money(s.session_cap),
                    "description": s.description,
                }
                for name, s in sorted(v.services.items())
            },
            "destinations": sorted(v.destination_names),
            "free_destinations": sorted(v.free_destinations),
            "bands": list(v.calendar.names),
            "bundles": [
                {
                    "id": b.id,
                    "service": b.service,
                    "units": b.units,
                    "valid_days": b.valid_days,
                    "priority": b.priority,
                }
                for b in v.bundles
            ],
        }
    )
    return out


def _in_force(book: PlanBook, name: str, now: int) -> PlanVersion | None:
    try:
        return book.at(name, now)
    except UnknownPlan:
        return None


async def list_tariffs(request: web.Request) -> web.StreamResponse:
    """``GET /v1/tariffs``: every plan and its versions, oldest first."""
    book = request.app[TARIFFS].rater.book
    now = request.app[CLOCK]()
    plans = []
    for name in book.names():
        current = _in_force(book, name, now)
        versions = [_version_summary(v, current) for v in book.versions(name)]
        plans.append({"name": name, "versions": versions})
    return web.json_response({"plans": plans})


async def get_tariff(request: web.Request) -> web.StreamResponse:
    """``GET /v1/tariffs/{name}``: the plan's versions in detail."""
    name = request.match_info["name"]
    book = request.app[TARIFFS].rater.book
    versions = book.versions(name)
    if not versions:
        return problem(
            HTTPStatus.NOT_FOUND, "Unknown plan", f"no plan named {name!r}", type_=TYPE_UNKNOWN_PLAN
        )
    current = _in_force(book, name, request.app[CLOCK]())
    return web.json_response(
        {"name": name, "versions": [_version_detail(v, current) for v in versions]}
    )


async def load_tariff(request: web.Request) -> web.StreamResponse:
    """``POST /v1/tariffs?source=NAME``: a TOML plan version; 201 when it is live everywhere,
    422 listing every problem when it is not valid (then nothing changes)."""
    if request.content_type not in PLAN_CONTENT_TYPES:
        return problem(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            detail="send the plan file as TOML text with Content-Type application/toml "
            f"(or text/plain), not {request.content_type}",
        )
    source: str = query(request)["source"]
    raw = await read_body(request)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return invalid_plan([f"{source}: not UTF-8 text (byte {exc.start})"])
    try:
        version = await request.app[TARIFFS].load(text, source)
    except PlanFileError as exc:
        return invalid_plan(exc.problems)
    body = {
        "name": version.name,
        "version": version.version,
        "effective_from": iso_time(version.effective_from),
    }
    return web.json_response(
        body, status=HTTPStatus.CREATED, headers={"Location": f"/v1/tariffs/{version.name}"}
    )


_TEXTS: Final = array(STRING)
_SUMMARY: Final = {
    "version": INT,
    "effective_from": TIME_OUT,
    "in_force": BOOL,
    "description": STRING,
    "currency": STRING,
    "services": _TEXTS,
    "source": STRING,
}
_SERVICE: Final = obj(
    {
        "unit": {"type": "string", "enum": [u.value for u in UnitKind]},
        "default_quota": INT,
        "direction": STRING,
        "session_cap": nullable(MONEY_OUT),
        "description": STRING,
    }
)
_DETAIL: Final = obj(
    {
        **_SUMMARY,
        "timezone": STRING,
        "rounding": obj({"method": STRING, "decimals": INT}),
        "tax": obj({"rate": STRING, "inclusive": BOOL}),
        "services": {"type": "object", "additionalProperties": _SERVICE},
        "destinations": _TEXTS,
        "free_destinations": _TEXTS,
        "bands": _TEXTS,
        "bundles": array(
            obj({"id": STRING, "service": STRING, "units": INT, "valid_days": INT, "priority": INT})
        ),
    }
)
LIST_SCHEMA: Final = obj({"plans": array(obj({"name": STRING, "versions": array(obj(_SUMMARY))}))})
PLAN_SCHEMA: Final = obj({"name": STRING, "versions": array(_DETAIL)})
LOADED_SCHEMA: Final = obj({"name": STRING, "version": INT, "effective_from": TIME_OUT})

ROUTES: Final = (
    Route("GET", "/v1/tariffs", list_tariffs, "tariffs", "read", answer=LIST_SCHEMA),
    Route(
        "POST",
        "/v1/tariffs",
        load_tariff,
        "tariffs",
        "write",
        body="application/toml",
        params=(
            Param(
                "source",
                "query",
                {"type": "string", "minLength": 1, "maxLength": MAX_SOURCE},
                "where the plan file came from (shown with the version)",
                default="request",
            ),
        ),
        status=HTTPStatus.CREATED,
        answer=LOADED_SCHEMA,
    ),
    Route("GET", "/v1/tariffs/{name}", get_tariff, "tariffs", "read", answer=PLAN_SCHEMA),
)
