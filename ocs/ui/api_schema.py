"""What the dashboard's routes take and answer (ocs.api.schema): the query parameters they
read by, and the answers' JSON Schemas (the contract; the tests check every answer against
them). Money is a decimal string with its integer micro-units beside it under ``micro``."""

from __future__ import annotations

from typing import Final

from ocs.api.schema import (
    BOOL,
    INT,
    JSON,
    MONEY_OUT,
    STRING,
    TIME_OUT,
    Param,
    array,
    nullable,
    obj,
)
from ocs.billing.api_schema import PERIOD_RE
from ocs.ui.figures import MONEY

_MAX_SERVICE: Final = 32
SCOPE_QUERY: Final = (
    Param("period", "query", {"type": "string", "pattern": f"^{PERIOD_RE.pattern}$"},
          "the month shown; absent: this month", detail="must be a month, YYYY-MM"),
    Param("service", "query",
          {"type": "string", "pattern": f"^[a-z0-9._-]{{1,{_MAX_SERVICE}}}$"},
          "only this service's usage", detail="must be a service name such as data or voice"),
)  # fmt: skip
#: The static pages' own parameters (their router reads them: ?period=, ?next=, ...).
PAGE_QUERY: Final = (
    Param("query", "query", {"type": "object", "additionalProperties": {"type": "string"}},
          "read by the page itself"),
)  # fmt: skip
#: What the static files are served as.
PAGE_MEDIA: Final = (
    "text/html",
    "text/javascript",
    "text/css",
    "image/png",
    "text/plain",
    "application/octet-stream",
)

UNIT: Final = obj({"level": STRING, "code": STRING, "name": STRING})
HOME: Final = obj({"start": array(UNIT), "agency": nullable(STRING)})


def _money(names: tuple[str, ...]) -> dict[str, JSON]:
    """Figures as decimal strings, and the same under ``micro`` as integers."""
    return {**dict.fromkeys(names, MONEY_OUT), "micro": obj(dict.fromkeys(names, INT))}


_RATE: Final = nullable({"type": "number", "description": "per second, this process's"})
#: Money per service (the services are the data's): strings, integers under ``micro``.
_BY_SERVICE: Final = {
    "type": "object",
    "properties": {"micro": {"type": "object", "additionalProperties": INT}},
    "required": ["micro"],
    "additionalProperties": MONEY_OUT,
}
_FIGURES: Final = (*MONEY, "period_usage")
SCOPE: Final = obj(
    {
        "level": STRING,
        "code": STRING,
        "name": STRING,
        "period": STRING,
        "service": nullable(STRING),
        "currency": STRING,
        "breadcrumb": array(UNIT),
        "kpis": obj(
            {
                **_money((*_FIGURES, "held")),
                "usage_by_service": _BY_SERVICE,
                "accounts": INT,
                "active_lines": INT,
                "open_sessions": INT,
                "barred_lines": INT,
                "requests_per_s": _RATE,
                "refusals_per_s": _RATE,
            }
        ),
        "by_day": array(obj({"day": STRING, "usage": MONEY_OUT, "micro": INT})),
        "children": array(
            obj(
                {
                    "level": STRING,
                    "code": STRING,
                    "name": STRING,
                    "accounts": INT,
                    "lines": INT,
                    **_money(_FIGURES),
                    "held": INT,
                    "sessions": INT,
                    "barred": INT,
                }
            )
        ),
    }
)
_BALANCES: Final = ("balance", "reserved", "credit_limit", "available")
_LINE: Final = obj(
    {
        "msisdn": STRING,
        "known": BOOL,
        "plan": STRING,
        "state": STRING,
        "barring": STRING,
        **_money(_BALANCES),
        "sessions": array(
            obj(
                {
                    "session_id": STRING,
                    "service": STRING,
                    "held": MONEY_OUT,
                    "used": INT,
                    "started_at": TIME_OUT,
                    "expires_at": TIME_OUT,
                }
            )
        ),
        "events": array(
            {
                "type": "object",
                "properties": {"id": STRING},
                "required": ["id"],
                "additionalProperties": STRING,
                "description": "the outbox event's fields as stored",
            }
        ),
    },
    # A line of the hierarchy the balance store does not know: only msisdn and known.
    optional=("plan", "state", "barring", *_BALANCES, "micro", "sessions", "events"),
)
LINES: Final = obj({"account": STRING, "items": array(_LINE)})
