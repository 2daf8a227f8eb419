"""The outbox's events as the scripts store them, and as every reader takes them.

An event is the fields ``t`` (its kind), ``sub``, ``ts``, ``bal``, ``rsv`` and ``ver`` (the
account after the script), then its kind's own fields (docs/architecture.md, Invariants).
The scripts store the kinds with a fixed list of fields (:data:`LAYOUTS`: the session
requests, the lazy expiries, debits and credits) compactly, as one stream field
(:data:`EVENT_FIELD`) whose value is the values in that order joined by :data:`SEPARATOR`
(issue 17: one XADD argument instead of 12-16, and no field names in the stream's memory or
the AOF); the other kinds (``create``, ``update``, ``threshold``), an event whose value
would hold the separator, and every event stored before this format, keep one stream field
per field. A request key that starts with the session id (the agents' ``<session>/<n>``) is
written as the rest of it, and the kind followed by :data:`RELATIVE` says so.
:func:`expand` turns either into the same named fields, so a reader sees what it
always saw; a value it cannot read is returned as stored (never an exception).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = ["EVENT_FIELD", "HEAD", "LAYOUTS", "RELATIVE", "SEPARATOR", "expand"]

#: The one stream field of a compact event (ocs/store/scripts/lib.lua, ``emit``).
EVENT_FIELD: Final = "e"
#: Between the values of a compact event (ASCII unit separator).
SEPARATOR: Final = "\x1f"
#: After the kind: the request key is written without the session id it starts with.
RELATIVE: Final = "~"
#: The fields every event starts with.
HEAD: Final = ("t", "sub", "ts", "bal", "rsv", "ver")
#: Each compact kind's fields, in the order the scripts write their values (the ``emit``
#: calls of ocs/store/scripts/*.lua; tests/test_script_equivalence.py holds them equal).
LAYOUTS: Final[Mapping[str, tuple[str, ...]]] = {
    "reserve": (*HEAD, "sid", "svc", "rk", "g", "gb", "hm"),
    "commit": (*HEAD, "sid", "svc", "rk", "u", "ub", "amt", "g", "gb", "hm", "dst"),
    "release": (*HEAD, "sid", "svc", "rk", "u", "ub", "amt", "rel", "tu", "mc", "dst"),
    "expire": (*HEAD, "sid", "svc", "rel", "u", "mc"),
    "debit": (*HEAD, "svc", "rk", "u", "ub", "amt", "forced", "dst"),
    "topup": (*HEAD, "rk", "amt", "note"),
    "refund": (*HEAD, "rk", "amt", "note"),
    "adjust": (*HEAD, "rk", "amt", "note"),
}

#: The kinds whose request key may be written after their session id.
_RELATIVE: Final = frozenset(k for k, names in LAYOUTS.items() if {"sid", "rk"} <= set(names))


def expand(fields: Mapping[str, str]) -> dict[str, str]:
    """The event's named fields, from either way of storing it (a new dict)."""
    if len(fields) != 1 or EVENT_FIELD not in fields:
        return dict(fields)
    values = fields[EVENT_FIELD].split(SEPARATOR)
    kind = values[0]
    relative = kind.endswith(RELATIVE)
    if relative:
        kind = values[0] = kind[:-1]
    names = LAYOUTS.get(kind)
    if names is None or len(names) != len(values) or (relative and kind not in _RELATIVE):
        return dict(fields)  # (not a layout this version knows: as stored)
    event = dict(zip(names, values, strict=True))
    if relative:
        event["rk"] = event["sid"] + event["rk"]
    return event
