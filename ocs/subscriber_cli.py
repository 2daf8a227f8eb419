"""``ocs subscriber ...`` and ``ocs events``: clients of the admin API's subscriber routes
(docs/api.md). Amounts are decimal strings in the one money format ("33.64")."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from ocs.clikit import CliError, api_url, print_json, request, run
from ocs.money import MoneyFormatError, format_money, parse_money
from tariffs.digits import ascii_int

#: The outbox's short field names (ocs/store/scripts/*.lua) and the names ``ocs events``
#: prints; money fields are integers of micro-units there.
EVENT_FIELDS: Mapping[str, str] = {
    "t": "type",
    "sub": "subscriber",
    "ts": "at",
    "amt": "amount",
    "bal": "balance",
    "rsv": "reserved",
    "ver": "version",
    "rk": "request",
    "note": "note",
    "sid": "session",
    "svc": "service",
    "dst": "destination",
    "u": "units_used",
    "ub": "units_from_buckets",
    "g": "units_granted",
    "gb": "units_held_from_buckets",
    "hm": "money_held",
    "rel": "money_released",
    "tu": "session_units",
    "mc": "session_charged",
    "forced": "forced",
    "plan": "plan",
    "lim": "credit_limit",
    "st": "state",
    "thresholds": "thresholds",
    "buckets": "buckets_added",
    "down": "thresholds_crossed_down",
    "up": "thresholds_crossed_up",
    "nb": "threshold_barring",
}
#: Fields that hold money (micro-units in the outbox).
MONEY_FIELDS = frozenset({"amt", "bal", "rsv", "hm", "rel", "mc", "lim"})
#: Fields the line already shows in its own columns.
_SHOWN = frozenset({"t", "sub", "ts", "amt", "bal"})


def readable_event(event: Mapping[str, Any]) -> dict[str, str]:
    """An event of ``GET /v1/subscribers/{msisdn}/events`` with readable field names and
    money as decimal strings; unknown fields keep their name."""
    out: dict[str, str] = {"id": str(event.get("id", "")), "type": str(event.get("type", "")),
                           "at": str(event.get("at", ""))}  # fmt: skip
    fields: Mapping[str, Any] = event.get("fields") or {}
    for key, value in fields.items():
        text = str(value)
        if key in MONEY_FIELDS and text.lstrip("-").isdigit():
            text = format_money(int(text))
        if key not in ("t", "ts"):
            out[EVENT_FIELDS.get(key, key)] = text
    return out


def _event_line(event: Mapping[str, Any]) -> str:
    fields: Mapping[str, Any] = event.get("fields") or {}
    readable = readable_event(event)
    amount = readable.pop("amount", "")
    balance = readable.pop("balance", "")
    rest = "  ".join(
        f"{EVENT_FIELDS.get(k, k)}={readable[EVENT_FIELDS.get(k, k)]}"
        for k in fields
        if k not in _SHOWN and readable.get(EVENT_FIELDS.get(k, k), "") != ""
    )
    return (f"{readable['at']}  {readable['type']:<9} {amount:>12} {balance:>12}  "
            f"{rest}").rstrip()  # fmt: skip


def _money(name: str, text: str, *, negative: bool) -> str:
    """Check an amount here, so a typo is refused before anything is sent."""
    try:
        parse_money(text, allow_negative=negative)
    except MoneyFormatError as exc:
        raise CliError(f"{name} {exc}") from None
    return text


def _list(base: str, args: argparse.Namespace) -> dict[str, Any]:
    """One page from ``--cursor``, or with ``--all`` every page, following the cursors."""
    cursor = args.cursor or "0"
    seen: dict[str, None] = {}
    while True:
        params = {"cursor": cursor, "count": str(args.count)}
        page: dict[str, Any] = run(request("GET", base, params=params))
        if not args.all:
            return page
        seen.update(dict.fromkeys(page["subscribers"]))  # a scan may return one twice
        if not page["cursor"]:
            return {"subscribers": list(seen), "cursor": None}
        cursor = page["cursor"]


def cmd_subscriber(args: argparse.Namespace) -> int:
    base = f"{api_url(args)}/v1/subscribers"
    if args.action == "add":
        body: dict[str, Any] = {
            "msisdn": args.msisdn,
            "balance": _money("--balance", args.balance, negative=True),
            "plan": args.plan,
            "credit_limit": _money("--credit-limit", args.credit_limit, negative=False),
        }
        if args.state:
            body["state"] = args.state
        print_json(run(request("POST", base, body)))
    elif args.action == "show":
        print_json(run(request("GET", f"{base}/{args.msisdn}")))
    elif args.action in ("topup", "refund", "adjust"):
        body = {"amount": _money("amount", args.amount, negative=args.action == "adjust"),
                "reference": args.reference}  # fmt: skip
        if args.action == "adjust":
            body["reason"] = args.reason
        elif args.note:
            body["note"] = args.note
        path = {"topup": "topups", "refund": "refunds", "adjust": "adjustments"}[args.action]
        print_json(run(request("POST", f"{base}/{args.msisdn}/{path}", body)))
    elif args.action == "update":
        body = {}
        if args.plan:
            body["plan"] = args.plan
        if args.credit_limit is not None:
            body["credit_limit"] = _money("--credit-limit", args.credit_limit, negative=False)
        if args.state:
            body["state"] = args.state
        if not body:
            raise CliError("update: give at least one of --plan, --credit-limit, --state")
        if args.reference:
            body["reference"] = args.reference
        print_json(run(request("PATCH", f"{base}/{args.msisdn}", body)))
    elif args.action == "list":
        page = _list(base, args)
        if args.json:
            print_json(page)
        else:
            for msisdn in page["subscribers"]:
                print(msisdn)
            if page["cursor"]:
                print(f"more: --cursor {page['cursor']} (or --all)")
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    params = {"limit": str(args.limit)}
    if args.before:
        params["before"] = args.before
    url = f"{api_url(args)}/v1/subscribers/{args.msisdn}/events"
    answer: dict[str, Any] = run(request("GET", url, params=params))
    if args.json:
        print_json(answer)
        return 0
    if args.fields:
        print_json({"events": [readable_event(e) for e in answer["events"]],
                    "next": answer["next"]})  # fmt: skip
        return 0
    print(f"{'at':<24}  {'type':<9} {'amount':>12} {'balance':>12}  details")
    for event in answer["events"]:
        print(_event_line(event))
    if answer["next"]:
        print(f"more: --before {answer['next']}")
    return 0


_API_HELP = "admin API URL (or OCS_API_URL; default http://127.0.0.1:8080)"
_STATES = "active | barred-outgoing | barred-all | suspended"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``ocs subscriber`` and ``ocs events`` to the command line."""
    p = sub.add_parser("subscriber", help="add, show, top up, adjust, refund, update or list "
                       "subscribers (admin API)")  # fmt: skip
    p.add_argument("--api", help=_API_HELP)
    acts = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = acts.add_parser("add", help="create a subscriber")
    a.add_argument("msisdn")
    a.add_argument("--balance", required=True, help='opening balance, e.g. "10.00"')
    a.add_argument("--plan", required=True, help="tariff plan name")
    a.add_argument("--credit-limit", default="0", help="how far below zero it may go")
    a.add_argument("--state", help=_STATES)
    a = acts.add_parser("show", help="balance, buckets and open sessions")
    a.add_argument("msisdn")
    for name, what in (("topup", "add money"), ("refund", "give money back"),
                       ("adjust", "correct the balance by a signed amount")):  # fmt: skip
        a = acts.add_parser(name, help=f"{what}, idempotent by reference")
        a.add_argument("msisdn")
        a.add_argument("amount", help='e.g. "5.00"' + (' or "-2.50"' if name == "adjust" else ""))
        a.add_argument("--reference", required=True,
                       help="idempotency reference (voucher, receipt, case number)")  # fmt: skip
        if name == "adjust":
            a.add_argument("--reason", required=True, help="why (kept in the event)")
        else:
            a.add_argument("--note", help="a note kept in the event")
    a = acts.add_parser("update", help="change plan, credit limit or state")
    a.add_argument("msisdn")
    a.add_argument("--plan", help="tariff plan name")
    a.add_argument("--credit-limit", help='how far below zero it may go, e.g. "5.00"')
    a.add_argument("--state", help=_STATES)
    a.add_argument("--reference", help="idempotency reference (a replay changes nothing)")
    a = acts.add_parser("list", help="list subscribers, a page at a time (or --all)")
    a.add_argument("--count", type=ascii_int, default=100, help="page size hint (default 100)")
    a.add_argument("--cursor", help="the cursor a previous page printed")
    a.add_argument("--all", action="store_true", help="follow the cursors: every subscriber")
    a.add_argument("--json", action="store_true", help="print the JSON answer")
    p.set_defaults(func=cmd_subscriber)

    p = sub.add_parser("events", help="a subscriber's ledger, newest first (admin API)")
    p.add_argument("msisdn")
    p.add_argument("--limit", type=ascii_int, default=20)
    p.add_argument("--before", help="the event id a previous page printed (more: --before ID)")
    p.add_argument("--fields", action="store_true",
                   help="print JSON with readable field names and money as decimals")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the API's JSON answer as it is")
    p.add_argument("--api", help=_API_HELP)
    p.set_defaults(func=cmd_events)
