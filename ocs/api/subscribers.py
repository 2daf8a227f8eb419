"""``/v1/subscribers``: accounts, their balances (top-ups, adjustments, refunds) and events.

Idempotency keys: the API scopes every ``reference`` by operation before it becomes the
store's request key (``topup:<ref>``, ``refund:<ref>``, ``adjust:<ref>``, ``create:<ref>``,
``update:<ref>``), so one ticket number may be used for, say, a create and a top-up without the
second replaying the first's answer.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

from ocs.api.context import CLOCK, STORE, TARIFFS
from ocs.api.problems import (
    TYPE_SUBSCRIBER_EXISTS,
    FieldError,
    InvalidInput,
    invalid_input,
    problem,
    reference_conflict,
)
from ocs.api.render import account_json, event_json
from ocs.api.request import (
    CURSOR_RE,
    DEFAULT_PAGE,
    MAX_NOTE,
    MAX_PAGE,
    MAX_REFERENCE,
    MSISDN_RE,
    STREAM_ID_RE,
    U64,
    Fields,
    Sign,
    json_body,
    path_msisdn,
    query_int,
    unknown_subscriber,
)
from ocs.api.routes import Route
from ocs.auth.http import over_limit
from ocs.charging.tariffs import bundle_buckets
from ocs.constants import STATE_ACTIVE, STATES
from ocs.money import format_money
from ocs.store.errors import StoreError
from ocs.store.store import PLAN_THRESHOLDS, ScriptAnswer, Store
from tariffs import (
    PlanFileError,
    parse_thresholds,
)

_CREATE_FIELDS: Final = frozenset(
    {"msisdn", "balance", "plan", "credit_limit", "state", "buckets", "reference"}
)
_PATCH_FIELDS: Final = frozenset(
    {"plan", "credit_limit", "state", "add_buckets", "thresholds", "reference"}
)


def _location(msisdn: str) -> str:
    return f"/v1/subscribers/{msisdn}"


def _expect(answer: ScriptAnswer, *expected: str) -> None:
    if answer.status not in expected:
        raise StoreError(f"unexpected script status {answer.status!r}")


async def _account_response(
    store: Store, msisdn: str, status: int = 200, *, refresh_at: int | None = None
) -> web.Response:
    account = await store.get_account(msisdn, refresh_at=refresh_at)
    if account is None:
        return unknown_subscriber(msisdn)
    headers = {"Location": _location(msisdn)} if status == HTTPStatus.CREATED else None
    return web.json_response(account_json(account), status=status, headers=headers)


# -- handlers ---------------------------------------------------------------------------------


def _known_plans(app: web.Application) -> list[str]:
    # Asked each time: the registry replaces the book when plans are (re)loaded.
    return app[TARIFFS].rater.book.names()


async def create_subscriber(request: web.Request) -> web.StreamResponse:
    """``POST /v1/subscribers``: 201 with the account, 409 if it exists. Without ``buckets``
    the account gets its plan's bundles."""
    app = request.app
    now = app[CLOCK]()
    f = Fields(await json_body(request), _CREATE_FIELDS)
    msisdn = f.required_text(
        "msisdn",
        max_len=15,
        pattern=MSISDN_RE,
        pattern_detail="must be 3 to 15 digits (E.164 without the '+')",
    )
    balance = f.money("balance", "non-negative")
    plan = f.plan("plan", _known_plans(app), required=True) or ""
    credit_limit = f.money("credit_limit", "non-negative", default=0)
    state = f.choice("state", STATES, what="state") or STATE_ACTIVE
    buckets = f.buckets("buckets", now=now)
    reference = f.text("reference", required=False, max_len=MAX_REFERENCE)
    f.check()
    if not f.has("buckets"):
        buckets = bundle_buckets(app[TARIFFS].rater.book, plan, now)
    store = app[STORE]
    answer = await store.create_subscriber(
        msisdn,
        plan=plan,
        balance=balance,
        credit_limit=credit_limit,
        state=state,
        buckets=buckets,
        now=now,
        request_key=None if reference is None else f"create:{reference}",
    )
    if answer.conflict:
        return reference_conflict("create", str(reference))
    if answer.status == "EXISTS":
        return problem(
            HTTPStatus.CONFLICT,
            "Subscriber exists",
            f"subscriber {msisdn} already exists",
            type_=TYPE_SUBSCRIBER_EXISTS,
            headers={"Location": _location(msisdn)},
        )
    _expect(answer, "OK")
    return await _account_response(store, msisdn, HTTPStatus.CREATED)


async def list_subscribers(request: web.Request) -> web.StreamResponse:
    """``GET /v1/subscribers?cursor=&count=``: one page of msisdns and the next cursor."""
    raw = request.query.get("cursor", "0")
    if not CURSOR_RE.fullmatch(raw) or int(raw) >= U64:
        raise InvalidInput([FieldError("cursor", "must be a cursor returned by this API")])
    count = query_int(request, "count", default=DEFAULT_PAGE, maximum=MAX_PAGE)
    nxt, msisdns = await request.app[STORE].list_subscribers(int(raw), count)
    return web.json_response({"subscribers": msisdns, "cursor": str(nxt) if nxt else None})


async def get_subscriber(request: web.Request) -> web.StreamResponse:
    """``GET /v1/subscribers/{msisdn}``: the account, its buckets and open sessions (brought
    up to date first: due expiries, newly published thresholds)."""
    app = request.app
    return await _account_response(app[STORE], path_msisdn(request), refresh_at=app[CLOCK]())


async def update_subscriber(request: web.Request) -> web.StreamResponse:
    """``PATCH /v1/subscribers/{msisdn}``: plan, credit limit, state, more unit buckets."""
    app = request.app
    msisdn = path_msisdn(request)
    now = app[CLOCK]()
    f = Fields(await json_body(request), _PATCH_FIELDS)
    plan = f.plan("plan", _known_plans(app), required=False)
    credit_limit = f.money("credit_limit", "non-negative") if f.has("credit_limit") else None
    state = f.choice("state", STATES, what="state")
    add_buckets = f.buckets("add_buckets", now=now)
    thresholds = _thresholds_field(f)
    reference = f.text("reference", required=False, max_len=MAX_REFERENCE)
    if isinstance(f.data, dict) and not f.errors and not (set(f.data) - {"reference"}):
        f.errors.append(
            FieldError(
                "body",
                "must change at least one of plan, credit_limit, state, add_buckets, thresholds",
            )
        )
    f.check()
    store = app[STORE]
    answer = await store.update_subscriber(
        msisdn,
        plan=plan,
        credit_limit=credit_limit,
        state=state,
        add_buckets=add_buckets,
        thresholds=thresholds,
        now=now,
        request_key=None if reference is None else f"update:{reference}",
    )
    if answer.conflict:
        return reference_conflict("update", str(reference))
    if answer.status == "NOSUB":
        return unknown_subscriber(msisdn)
    _expect(answer, "OK")
    return await _account_response(store, msisdn)


def _thresholds_field(f: Fields) -> list[tuple[int, int, str]] | str | None:
    """``thresholds``: a list replaces the plan's for this account; null goes back to the
    plan's; absent changes nothing."""
    if not f.has("thresholds"):
        return None
    raw = f.data["thresholds"]
    if raw is None:
        return PLAN_THRESHOLDS
    try:
        parsed = parse_thresholds(raw, "thresholds")
    except PlanFileError as exc:
        for line in exc.problems:
            path, _, detail = line.partition(": ")
            field_path, _, msg = detail.partition(": ")
            f.errors.append(FieldError(field_path or path, msg or detail))
        return None
    return [(t.below, t.lift, t.action) for t in parsed]


def _credit_handler(kind: str, sign: Sign, note_field: str, *, note_required: bool) -> Handler:
    allowed = frozenset({"amount", "reference", note_field})

    async def handler(request: web.Request) -> web.StreamResponse:
        msisdn = path_msisdn(request)
        f = Fields(await json_body(request), allowed)
        amount = f.money("amount", sign)
        reference = f.required_text("reference", max_len=MAX_REFERENCE)
        note = f.text(note_field, required=note_required, max_len=MAX_NOTE) or ""
        f.check()
        refused = over_limit(request, amount)
        if refused is not None:
            return refused
        answer = await request.app[STORE].credit(
            msisdn,
            kind=kind,
            amount=amount,
            reference=f"{kind}:{reference}",
            note=note,
            now=request.app[CLOCK](),
        )
        if answer.conflict:
            return reference_conflict(kind, reference)
        if answer.status == "NOSUB":
            return unknown_subscriber(msisdn)
        if answer.status == "TOOBIG":
            return invalid_input([FieldError("amount", "would take the balance out of range")])
        _expect(answer, "OK")
        # A replay of the same request is answered as the first was (the amount applied and
        # the balance then: 201 both), with a header saying it is a replay.
        body = {
            "msisdn": msisdn,
            "amount": format_money(answer.charged),
            "reference": reference,
            "balance": format_money(answer.balance),
        }
        headers = {"Idempotent-Replayed": "true"} if answer.replay else None
        return web.json_response(body, status=HTTPStatus.CREATED, headers=headers)

    handler.__doc__ = f"``POST /v1/subscribers/{{msisdn}}/...``: a {kind}, idempotent by reference."
    return handler


async def list_events(request: web.Request) -> web.StreamResponse:
    """``GET /v1/subscribers/{msisdn}/events?limit=&before=``: newest first, paged by id."""
    msisdn = path_msisdn(request)
    limit = query_int(request, "limit", default=DEFAULT_PAGE, maximum=MAX_PAGE)
    before = request.query.get("before")
    m = None if before is None else STREAM_ID_RE.fullmatch(before)
    if before is not None and (m is None or max(int(x) for x in m.groups()) >= U64):
        raise InvalidInput([FieldError("before", "must be an event id such as 1714564800000-0")])
    store = request.app[STORE]
    if await store.get_account(msisdn) is None:
        return unknown_subscriber(msisdn)
    # One more than asked tells whether there is a next page.
    events = await store.events(msisdn, limit=limit + 1, before=before)
    page = events[:limit]
    nxt = page[-1].id if len(events) > limit else None
    return web.json_response({"events": [event_json(e) for e in page], "next": nxt})


# -- rating and tariffs -------------------------------------------------------------------------


async def subscriber_snapshot(request: web.Request) -> dict[str, object] | None:
    """The audit's before/after of a subscriber write: what a change can touch."""
    msisdn = request.match_info.get("msisdn")
    if msisdn is None or not MSISDN_RE.fullmatch(msisdn):
        return None
    a = await request.app[STORE].get_account(msisdn)
    if a is None:
        return None
    return {
        "balance": format_money(a.balance),
        "credit_limit": format_money(a.credit_limit),
        "state": a.state,
        "plan": a.plan,
        "version": a.version,
    }


#: Every endpoint of the core API with the resource and action it needs (ocs.api.routes).
ROUTES: Final = (
    Route("POST", "/v1/subscribers", create_subscriber, "subscribers", "write"),
    Route("GET", "/v1/subscribers", list_subscribers, "subscribers", "read"),
    Route("GET", "/v1/subscribers/{msisdn}", get_subscriber, "subscribers", "read"),
    Route("PATCH", "/v1/subscribers/{msisdn}", update_subscriber, "subscribers", "write"),
    Route(
        "POST",
        "/v1/subscribers/{msisdn}/topups",
        _credit_handler("topup", "positive", "note", note_required=False),
        "subscribers.topups",
        "write",
    ),
    Route(
        "POST",
        "/v1/subscribers/{msisdn}/adjustments",
        _credit_handler("adjust", "non-zero", "reason", note_required=True),
        "subscribers.adjustments",
        "write",
    ),
    Route(
        "POST",
        "/v1/subscribers/{msisdn}/refunds",
        _credit_handler("refund", "positive", "note", note_required=False),
        "subscribers.refunds",
        "write",
    ),
    Route("GET", "/v1/subscribers/{msisdn}/events", list_events, "subscribers.events", "read"),
)
