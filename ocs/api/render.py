"""How the API shows the store's objects: money as decimal strings, times as ISO 8601 UTC."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Final

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
