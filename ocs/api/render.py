"""How the API shows the store's objects: money as decimal strings, times as ISO 8601 UTC."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Final

from ocs.api.schema import INT, MONEY_OUT, STRING, TIME_OUT, obj
from ocs.money import format_money
from ocs.store.store import Account, Event

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
MS: Final = timedelta(milliseconds=1)


def iso_time(ms: int) -> str | None:
    """Unix ms as ISO 8601 UTC with milliseconds ("2024-05-01T12:00:00.000Z"); 0 is None."""
    if ms <= 0:
        return None
    return (EPOCH + ms * MS).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def account_json(a: Account) -> dict[str, object]:
    """An account as the API shows it: money as decimal strings, times as ISO 8601 UTC."""
    return {
        "msisdn": a.msisdn,
        "balance": format_money(a.balance),
        "reserved": format_money(a.reserved),
        "available": format_money(a.available),
        "credit_limit": format_money(a.credit_limit),
        "state": a.state,
        "plan": a.plan,
        "version": a.version,
        "created_at": iso_time(a.created_at),
        "updated_at": iso_time(a.updated_at),
        "barring": {
            # What the network should bar (state and balance thresholds together), what the
            # balance thresholds alone impose, and which thresholds are engaged.
            "network": a.barring,
            "by_balance": a.barred_by_balance,
            "engaged": [format_money(x) for x in a.engaged],
            "thresholds": None if a.thresholds is None else thresholds_json(a.thresholds),
        },
        "buckets": [
            {
                "id": b.id,
                "service": b.service,
                "units": b.units,
                "reserved": b.reserved,
                "priority": b.priority,
                "expires_at": iso_time(b.expires_at),
            }
            for b in a.buckets
        ],
        "sessions": [
            {
                "session_id": s.session_id,
                "service": s.service,
                "plan": s.plan,
                "granted": s.granted,
                "held_money": format_money(s.held_money),
                "held_units": s.held_units,
                "used": s.used,
                "charged": format_money(s.charged),
                "started_at": iso_time(s.started_at),
                "expires_at": iso_time(s.expires_at),
                "destination": s.destination,
                "location": s.location,
            }
            for s in a.sessions
        ],
    }


def thresholds_json(items: Collection[tuple[int, int, str]]) -> list[dict[str, str]]:
    return [
        {"below": format_money(b), "action": action, "lift": format_money(lift)}
        for b, lift, action in items
    ]


def event_json(e: Event) -> dict[str, object]:
    f = e.fields
    out: dict[str, object] = {"id": e.id, "type": e.kind, "at": iso_time(_int_or_zero(f.get("ts")))}
    if "amt" in f:
        out["amount"] = _money_field(f["amt"])
    if "bal" in f:
        out["balance"] = _money_field(f["bal"])
    out["fields"] = dict(f)
    return out


def _int_or_zero(v: str | None) -> int:
    try:
        return int(v) if v else 0
    except ValueError:
        return 0


def _money_field(v: str) -> str | None:
    try:
        return format_money(int(v))
    except ValueError:
        return None


# -- the shapes above, as JSON Schema (the contract's answers; a test renders objects and
# validates them against these) --------------------------------------------------------------

_MONEY: Final = MONEY_OUT
_TIME: Final = TIME_OUT
_INT: Final = INT
_TEXT: Final = STRING


def _object(props: dict[str, object], *, nullable: tuple[str, ...] = ()) -> dict[str, object]:
    for name in nullable:
        props[name] = {"anyOf": [props[name], {"type": "null"}]}
    return obj(props)  # type: ignore[arg-type]


THRESHOLD_SCHEMA: Final = _object({"below": _MONEY, "action": _TEXT, "lift": _MONEY})
ACCOUNT_SCHEMA: Final = _object(
    {
        "msisdn": _TEXT,
        "balance": _MONEY,
        "reserved": _MONEY,
        "available": _MONEY,
        "credit_limit": _MONEY,
        "state": _TEXT,
        "plan": _TEXT,
        "version": _INT,
        "created_at": _TIME,
        "updated_at": _TIME,
        "barring": _object(
            {
                "network": _TEXT,
                "by_balance": _TEXT,
                "engaged": {"type": "array", "items": _MONEY},
                "thresholds": {"type": "array", "items": THRESHOLD_SCHEMA},
            },
            nullable=("network", "by_balance", "thresholds"),
        ),
        "buckets": {
            "type": "array",
            "items": _object(
                {
                    "id": _TEXT,
                    "service": _TEXT,
                    "units": _INT,
                    "reserved": _INT,
                    "priority": _INT,
                    "expires_at": _TIME,
                }
            ),
        },
        "sessions": {
            "type": "array",
            "items": _object(
                {
                    "session_id": _TEXT,
                    "service": _TEXT,
                    "plan": _TEXT,
                    "granted": _INT,
                    "held_money": _MONEY,
                    "held_units": _INT,
                    "used": _INT,
                    "charged": _MONEY,
                    "started_at": _TIME,
                    "expires_at": _TIME,
                    "destination": _TEXT,
                    "location": _TEXT,
                }
            ),
        },
    }
)
EVENT_SCHEMA: Final = {
    "type": "object",
    "properties": {
        "id": _TEXT,
        "type": _TEXT,
        "at": _TIME,
        "amount": {"anyOf": [_MONEY, {"type": "null"}]},
        "balance": {"anyOf": [_MONEY, {"type": "null"}]},
        "fields": {"type": "object", "additionalProperties": _TEXT},
    },
    "required": ["id", "type", "at", "fields"],
    "additionalProperties": False,
}
