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

from ocs.api.context import CLOCK, METRICS, STORE, TARIFFS
from ocs.api.problems import (
    TYPE_SUBSCRIBER_EXISTS,
    FieldError,
    invalid_input,
    problem,
    reference_conflict,
)
from ocs.api.render import ACCOUNT_SCHEMA, EVENT_SCHEMA, account_json, event_json
from ocs.api.request import (
    MAX_BUCKET_ID,
    MAX_NOTE,
    MAX_PRIORITY,
    MAX_REFERENCE,
    MAX_SERVICE,
    MSISDN_RE,
    U64,
    Fields,
    before_id,
    json_body,
    page_size,
    path_msisdn,
    query,
    unknown_subscriber,
)
from ocs.api.routes import Route
from ocs.api.schema import (
    MONEY_OUT,
    STRING,
    Body,
    Buckets,
    Choice,
    Integer,
    Money,
    Param,
    Plan,
    Sign,
    Text,
    Thresholds,
    Timestamp,
    array,
    nullable,
    obj,
)
from ocs.auth.http import over_limit
from ocs.charging.tariffs import bundle_buckets
from ocs.constants import MAX_UNITS, STATE_ACTIVE, STATES
from ocs.money import format_money
from ocs.store.errors import StoreError
from ocs.store.store import PLAN_THRESHOLDS, ScriptAnswer, Store, UnitBucket
from tariffs import (
    PlanFileError,
    parse_thresholds,
)

_REFERENCE: Final = Text(
    MAX_REFERENCE,
    description="the caller's idempotency key (a ticket number): a retry with "
    "the same reference is answered as the first was and changes nothing",
)
BUCKET: Final = Body(
    "UnitBucket",
    {
        "id": Text(MAX_BUCKET_ID, required=True),
        "service": Text(MAX_SERVICE, required=True, description="the service it pays for"),
        "units": Integer(1, MAX_UNITS, required=True),
        "priority": Integer(0, MAX_PRIORITY, description="lower is used first"),
        "expires_at": Timestamp(description="RFC 3339 with offset, in the future; null: never"),
    },
)
_PLAN: Final = Plan(MAX_SERVICE, description="a plan the tariffs know")
_STATE: Final = Choice(STATES, "state")
CREATE: Final = Body(
    "CreateSubscriber",
    {
        "msisdn": Text(
            15,
            required=True,
            pattern=MSISDN_RE,
            pattern_detail="must be 3 to 15 digits (E.164 without the '+')",
        ),
        "balance": Money("non-negative", required=True),
        "plan": Plan(MAX_SERVICE, required=True, description="a plan the tariffs know"),
        "credit_limit": Money("non-negative", default=0),
        "state": _STATE,
        "buckets": Buckets(BUCKET, description="absent: the plan's bundles"),
        "reference": _REFERENCE,
    },
    examples=({"msisdn": "46700000001", "balance": "10.00", "plan": "prepaid-basic",
               "credit_limit": "5.00", "reference": "CRM-1001"},),
)  # fmt: skip
PATCH: Final = Body(
    "UpdateSubscriber",
    {
        "plan": _PLAN,
        "credit_limit": Money("non-negative"),
        "state": _STATE,
        "add_buckets": Buckets(BUCKET),
        "thresholds": Thresholds(
            description="replaces the plan's for this account; null: back to the plan's"
        ),
        "reference": _REFERENCE,
    },
    description="at least one of plan, credit_limit, state, add_buckets, thresholds",
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


def _bucket_services(
    app: web.Application, f: Fields, field: str, buckets: list[UnitBucket], plan: str
) -> None:
    """Each bucket pays for a service of ``plan`` (of any of its versions): a bucket of
    another service would never be used (a typo such as ``vocie`` would pass unnoticed)."""
    services = {s for v in app[TARIFFS].rater.book.versions(plan) for s in v.services}
    for i, b in enumerate(buckets):
        if b.service not in services:
            f.error(f"{field}[{i}].service", f"is not a service of plan {plan} (known: "
                    f"{', '.join(sorted(services))})")  # fmt: skip


async def create_subscriber(request: web.Request) -> web.StreamResponse:
    """``POST /v1/subscribers``: 201 with the account, 409 if it exists. Without ``buckets``
    the account gets its plan's bundles."""
    app = request.app
    now = app[CLOCK]()
    f = Fields(await json_body(request), CREATE, now=now, plans=_known_plans(app))
    msisdn: str = f.value("msisdn")
    balance: int = f.value("balance")
    plan: str = f.value("plan") or ""
    credit_limit: int = f.value("credit_limit")
    state: str = f.value("state") or STATE_ACTIVE
    buckets: list[UnitBucket] = f.value("buckets")
    reference: str | None = f.value("reference")
    f.check()
    _bucket_services(app, f, "buckets", buckets, plan)
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
    q = query(request)
    nxt, msisdns = await request.app[STORE].list_subscribers(q["cursor"], q["count"])
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
    f = Fields(await json_body(request), PATCH, now=now, plans=_known_plans(app))
    plan: str | None = f.value("plan")
    credit_limit: int | None = f.value("credit_limit")
    state: str | None = f.value("state")
    add_buckets: list[UnitBucket] = f.value("add_buckets")
    thresholds = _thresholds_field(f)
    reference: str | None = f.value("reference")
    if isinstance(f.data, dict) and not f.errors and not (set(f.data) - {"reference"}):
        f.errors.append(
            FieldError(
                "body",
                "must change at least one of plan, credit_limit, state, add_buckets, thresholds",
            )
        )
    f.check()
    store = app[STORE]
    if add_buckets:
        # The plan the account has after this request (an unknown subscriber: the store's 404).
        after = plan
        if after is None:
            account = await store.get_account(msisdn)
            after = None if account is None else account.plan
        if after is not None:
            _bucket_services(app, f, "add_buckets", add_buckets, after)
            f.check()
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


def _credit_body(name: str, sign: Sign, note_field: str, *, note_required: bool) -> Body:
    reference = Text(MAX_REFERENCE, required=True, description=_REFERENCE.description)
    example = {"amount": "-2.50" if sign == "non-zero" else "12.50", "reference": "T-1001",
               note_field: "ticket 1001"}  # fmt: skip
    return Body(
        name,
        {
            "amount": Money(sign, required=True),
            "reference": reference,
            note_field: Text(MAX_NOTE, required=note_required),
        },
        examples=(example,),
    )


TOPUP: Final = _credit_body("Topup", "positive", "note", note_required=False)
ADJUSTMENT: Final = _credit_body("Adjustment", "non-zero", "reason", note_required=True)
REFUND: Final = _credit_body("Refund", "positive", "note", note_required=False)


def _credit_handler(kind: str, body: Body) -> Handler:
    note_field = next(n for n in body.fields if n not in ("amount", "reference"))

    async def handler(request: web.Request) -> web.StreamResponse:
        msisdn = path_msisdn(request)
        f = Fields(await json_body(request), body)
        amount: int = f.value("amount")
        reference: str = f.value("reference")
        note: str = f.value(note_field) or ""
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
        if answer.charged > 0 and not answer.replay:
            request.app[METRICS].inc("ocs_credited_micros", (kind,), answer.charged)
        # A replay of the same request is answered as the first was (the amount applied and
        # the balance then: 201 both), with a header saying it is a replay.
        out = {
            "msisdn": msisdn,
            "amount": format_money(answer.charged),
            "reference": reference,
            "balance": format_money(answer.balance),
        }
        headers = {"Idempotent-Replayed": "true"} if answer.replay else None
        return web.json_response(out, status=HTTPStatus.CREATED, headers=headers)

    handler.__doc__ = f"``POST /v1/subscribers/{{msisdn}}/...``: a {kind}, idempotent by reference."
    return handler


async def list_events(request: web.Request) -> web.StreamResponse:
    """``GET /v1/subscribers/{msisdn}/events?limit=&before=``: newest first, paged by id."""
    msisdn = path_msisdn(request)
    q = query(request)
    limit, before = q["limit"], q["before"]
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


_CREDIT_ANSWER: Final = obj(
    {"msisdn": STRING, "amount": MONEY_OUT, "reference": STRING, "balance": MONEY_OUT}
)
_LIST_ANSWER: Final = obj({"subscribers": array(STRING), "cursor": nullable(STRING)})
_EVENTS_ANSWER: Final = obj({"events": array(EVENT_SCHEMA), "next": nullable(STRING)})
_PAGE: Final = page_size("count")
_LIMIT: Final = page_size("limit")
_BEFORE: Final = before_id("the event id to page from (the previous page's next)")
_CURSOR: Final = Param(
    "cursor", "query", {"type": "integer", "minimum": 0, "maximum": U64 - 1},
    "the cursor a previous page returned", default=0,
    detail="must be a cursor returned by this API",
)  # fmt: skip


def _credit_route(path: str, kind: str, body: Body, resource: str) -> Route:
    return Route(
        "POST",
        path,
        _credit_handler(kind, body),
        resource,
        "write",
        body=body,
        status=HTTPStatus.CREATED,
        answer=_CREDIT_ANSWER,
    )


#: Every endpoint of the core API with the resource and action it needs (ocs.api.routes).
ROUTES: Final = (
    Route("POST", "/v1/subscribers", create_subscriber, "subscribers", "write",
          body=CREATE, status=HTTPStatus.CREATED, answer=ACCOUNT_SCHEMA),
    Route("GET", "/v1/subscribers", list_subscribers, "subscribers", "read",
          params=(_CURSOR, _PAGE), answer=_LIST_ANSWER),
    Route("GET", "/v1/subscribers/{msisdn}", get_subscriber, "subscribers", "read",
          answer=ACCOUNT_SCHEMA),
    Route("PATCH", "/v1/subscribers/{msisdn}", update_subscriber, "subscribers", "write",
          body=PATCH, answer=ACCOUNT_SCHEMA),
    _credit_route("/v1/subscribers/{msisdn}/topups", "topup", TOPUP, "subscribers.topups"),
    _credit_route(
        "/v1/subscribers/{msisdn}/adjustments", "adjust", ADJUSTMENT, "subscribers.adjustments"
    ),
    _credit_route("/v1/subscribers/{msisdn}/refunds", "refund", REFUND, "subscribers.refunds"),
    Route("GET", "/v1/subscribers/{msisdn}/events", list_events, "subscribers.events", "read",
          params=(_LIMIT, _BEFORE), answer=_EVENTS_ANSWER),
)  # fmt: skip
