"""The operators' HTTP API: subscribers, their balances and events, health and metrics.

Every route is a thin translation: parse and check the request (each bad field is named in a
422 problem, nothing reaches the store), call one :class:`~ocs.store.store.Store` method with
the injected clock's ``now``, and render the answer. Money leaves as decimal strings
("12.50", see :func:`ocs.money.format_money`), never as numbers. Errors are RFC 9457 problem
documents (:mod:`ocs.api.problems`). See docs/api.md for the contract.

Idempotency keys: the API scopes every ``reference`` by operation before it becomes the
store's request key (``topup:<ref>``, ``refund:<ref>``, ``adjust:<ref>``, ``create:<ref>``,
``update:<ref>``), so one ticket number may be used for, say, a create and a top-up without the
second replaying the first's answer.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Final, Literal

from aiohttp import web
from aiohttp.typedefs import Handler

from ocs.api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ocs.api.metrics import Metrics
from ocs.api.problems import (
    TYPE_MALFORMED_JSON,
    TYPE_STORE_UNAVAILABLE,
    TYPE_SUBSCRIBER_EXISTS,
    TYPE_UNKNOWN_SUBSCRIBER,
    FieldError,
    InvalidInput,
    invalid_input,
    problem,
)
from ocs.constants import MAX_UNITS, STATE_ACTIVE, STATES
from ocs.money import MoneyFormatError, format_money, parse_money
from ocs.store.errors import StoreError, StoreUnavailable
from ocs.store.store import Account, Event, ScriptAnswer, Store, UnitBucket

__all__ = [
    "CLOCK",
    "KNOWN_PLANS",
    "METRICS",
    "STORE",
    "account_json",
    "create_app",
    "iso_time",
]

log = logging.getLogger(__name__)

#: Unix milliseconds now; injected so that tests and replays control time.
Clock = Callable[[], int]
KnownPlans = Callable[[], Collection[str]]

STORE: Final = web.AppKey("ocs.store", Store)
METRICS: Final = web.AppKey("ocs.metrics", Metrics)
CLOCK: Final = web.AppKey[Clock]("ocs.clock")
KNOWN_PLANS: Final = web.AppKey[KnownPlans]("ocs.known_plans")

#: E.164 without the leading '+': up to 15 digits; 3 allows short test and service numbers.
_MSISDN_RE: Final = re.compile(r"[0-9]{3,15}")
#: A Redis stream entry id, "<ms>-<seq>".
_STREAM_ID_RE: Final = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_CURSOR_RE: Final = re.compile(r"[0-9]{1,20}")
_COUNT_RE: Final = re.compile(r"[0-9]{1,7}")
#: Redis cursors and both halves of a stream id are unsigned 64-bit integers.
_U64: Final = 2**64
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)

MAX_REFERENCE: Final = 128
MAX_NOTE: Final = 256
MAX_BUCKET_ID: Final = 64
MAX_SERVICE: Final = 64
#: Bucket priorities are compared in Lua (doubles): keep them small integers.
MAX_PRIORITY: Final = 1_000_000
DEFAULT_PAGE: Final = 100
MAX_PAGE: Final = 1000

_CREATE_FIELDS: Final = frozenset(
    {"msisdn", "balance", "plan", "credit_limit", "state", "buckets", "reference"}
)
_PATCH_FIELDS: Final = frozenset({"plan", "credit_limit", "state", "add_buckets", "reference"})
_BUCKET_FIELDS: Final = frozenset({"id", "service", "units", "priority", "expires_at"})

Sign = Literal["positive", "non-negative", "non-zero"]


# -- rendering --------------------------------------------------------------------------------


def iso_time(ms: int) -> str | None:
    """Unix ms as ISO 8601 UTC with milliseconds ("2024-05-01T12:00:00.000Z"); 0 is None."""
    if ms <= 0:
        return None
    return (_EPOCH + ms * _MS).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


def _event_json(e: Event) -> dict[str, object]:
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


# -- request parsing --------------------------------------------------------------------------

_MISSING: Final = object()


class _Fields:
    """Typed members of one JSON object, collecting every error instead of stopping at one.

    Getters of required members return a placeholder on error; :meth:`check` raises before any
    placeholder can be used.
    """

    def __init__(
        self,
        data: object,
        allowed: Collection[str],
        *,
        where: str = "",
        errors: list[FieldError] | None = None,
    ) -> None:
        self.errors: list[FieldError] = [] if errors is None else errors
        self.where = where
        self.data: Mapping[str, object] = {}
        if not isinstance(data, dict):
            self.errors.append(FieldError(where or "body", "must be a JSON object"))
            return
        self.data = data
        for name in data:
            if name not in allowed:
                self.error(name, "is not a known field")

    def path(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def error(self, name: str, detail: str) -> None:
        self.errors.append(FieldError(self.path(name), detail))

    def has(self, name: str) -> bool:
        return name in self.data

    def check(self) -> None:
        if self.errors:
            raise InvalidInput(self.errors)

    def _get(self, name: str, required: bool) -> object:
        v = self.data.get(name, _MISSING)
        if v is _MISSING:
            if required:
                self.error(name, "is required")
        elif v is None:
            self.error(name, "must not be null")
            return _MISSING
        return v

    def money(self, name: str, sign: Sign, *, default: int | None = None) -> int:
        v = self._get(name, required=default is None)
        if v is _MISSING:
            return 0 if default is None else default
        try:
            micro = parse_money(v)
        except MoneyFormatError as exc:
            self.error(name, str(exc))
            return 0
        if sign == "positive" and micro <= 0:
            self.error(name, "must be greater than 0")
        elif sign == "non-negative" and micro < 0:
            self.error(name, "must not be negative")
        elif sign == "non-zero" and micro == 0:
            self.error(name, "must not be 0")
        return micro

    def text(
        self,
        name: str,
        *,
        required: bool,
        max_len: int,
        pattern: re.Pattern[str] | None = None,
        pattern_detail: str = "",
    ) -> str | None:
        v = self._get(name, required)
        if v is _MISSING:
            return None
        if not isinstance(v, str):
            self.error(name, "must be a string")
            return None
        if not 1 <= len(v) <= max_len:
            self.error(name, f"must be 1 to {max_len} characters long")
            return None
        if not v.isprintable():
            self.error(name, "must not contain control characters")
            return None
        if pattern is not None and not pattern.fullmatch(v):
            self.error(name, pattern_detail)
            return None
        return v

    def required_text(
        self,
        name: str,
        *,
        max_len: int,
        pattern: re.Pattern[str] | None = None,
        pattern_detail: str = "",
    ) -> str:
        text = self.text(
            name, required=True, max_len=max_len, pattern=pattern, pattern_detail=pattern_detail
        )
        return text or ""

    def choice(self, name: str, options: Collection[str], *, what: str) -> str | None:
        v = self._get(name, required=False)
        if v is _MISSING:
            return None
        if not isinstance(v, str) or v not in options:
            self.error(name, f"must be a known {what}: one of {', '.join(sorted(options))}")
            return None
        return v

    def integer(self, name: str, *, default: int | None, minimum: int, maximum: int) -> int:
        v = self._get(name, required=default is None)
        if v is _MISSING:
            return minimum if default is None else default
        if isinstance(v, bool) or not isinstance(v, int):
            self.error(name, "must be an integer")
            return minimum
        if not minimum <= v <= maximum:
            self.error(name, f"must be between {minimum} and {maximum}")
            return minimum
        return v

    def timestamp(self, name: str, *, now: int) -> int:
        """An RFC 3339 time with its offset, as Unix ms; absent or null is 0 (never)."""
        v = self.data.get(name)
        if v is None:
            return 0
        if not isinstance(v, str):
            self.error(name, "must be an RFC 3339 time such as 2030-01-31T00:00:00Z, or null")
            return 0
        try:
            t = datetime.fromisoformat(v)
        except ValueError:
            self.error(name, "must be an RFC 3339 time such as 2030-01-31T00:00:00Z, or null")
            return 0
        if t.tzinfo is None:
            self.error(name, "must carry a time zone offset (Z or +hh:mm)")
            return 0
        ms = (t - _EPOCH) // _MS
        if ms <= now:
            self.error(name, "must be in the future")
        return ms

    def buckets(self, name: str, *, now: int) -> list[UnitBucket]:
        v = self._get(name, required=False)
        if v is _MISSING:
            return []
        if not isinstance(v, list):
            self.error(name, "must be a list of bucket objects")
            return []
        out: list[UnitBucket] = []
        seen: set[str] = set()
        for i, item in enumerate(v):
            b = _Fields(item, _BUCKET_FIELDS, where=f"{self.path(name)}[{i}]", errors=self.errors)
            if not isinstance(item, dict):
                continue
            bid = b.required_text("id", max_len=MAX_BUCKET_ID)
            if bid in seen:
                b.error("id", "is given twice in this request")
            seen.add(bid)
            out.append(
                UnitBucket(
                    id=bid,
                    service=b.required_text("service", max_len=MAX_SERVICE),
                    units=b.integer("units", default=None, minimum=1, maximum=MAX_UNITS),
                    priority=b.integer("priority", default=0, minimum=0, maximum=MAX_PRIORITY),
                    expires_at=b.timestamp("expires_at", now=now),
                )
            )
        return out

    def plan(self, name: str, known: Collection[str], *, required: bool) -> str | None:
        v = self.text(name, required=required, max_len=MAX_SERVICE)
        if v is not None and v not in known:
            self.error(name, f"is not a known plan (known: {', '.join(sorted(known))})")
            return None
        return v


class _Answer(Exception):
    """Ends a request early with a ready response (a problem)."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.reason)
        self.response = response


async def _json_body(request: web.Request) -> object:
    raw = await request.read()
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise _Answer(
            problem(
                HTTPStatus.BAD_REQUEST,
                "Malformed JSON",
                f"the request body is not JSON: {exc}",
                type_=TYPE_MALFORMED_JSON,
            )
        ) from None


def _query_int(request: web.Request, name: str, *, default: int, maximum: int) -> int:
    v = request.query.get(name)
    if v is None:
        return default
    if not _COUNT_RE.fullmatch(v) or not 1 <= int(v) <= maximum:
        raise InvalidInput([FieldError(name, f"must be an integer from 1 to {maximum}")])
    return int(v)


def _msisdn(request: web.Request) -> str:
    msisdn = request.match_info["msisdn"]
    if not _MSISDN_RE.fullmatch(msisdn):
        # Cannot exist: it could never have been created.
        raise _Answer(_unknown_subscriber(msisdn))
    return msisdn


def _unknown_subscriber(msisdn: str) -> web.Response:
    return problem(
        HTTPStatus.NOT_FOUND,
        "Unknown subscriber",
        f"no subscriber {msisdn}",
        type_=TYPE_UNKNOWN_SUBSCRIBER,
    )


def _location(msisdn: str) -> str:
    return f"/v1/subscribers/{msisdn}"


def _expect(answer: ScriptAnswer, *expected: str) -> None:
    if answer.status not in expected:
        raise StoreError(f"unexpected script status {answer.status!r}")


async def _account_response(store: Store, msisdn: str, status: int = 200) -> web.Response:
    account = await store.get_account(msisdn)
    if account is None:
        return _unknown_subscriber(msisdn)
    headers = {"Location": _location(msisdn)} if status == HTTPStatus.CREATED else None
    return web.json_response(account_json(account), status=status, headers=headers)


# -- handlers ---------------------------------------------------------------------------------


async def create_subscriber(request: web.Request) -> web.StreamResponse:
    """``POST /v1/subscribers``: 201 with the account, 409 if it exists."""
    app = request.app
    now = app[CLOCK]()
    f = _Fields(await _json_body(request), _CREATE_FIELDS)
    msisdn = f.required_text(
        "msisdn",
        max_len=15,
        pattern=_MSISDN_RE,
        pattern_detail="must be 3 to 15 digits (E.164 without the '+')",
    )
    balance = f.money("balance", "non-negative")
    plan = f.plan("plan", app[KNOWN_PLANS](), required=True) or ""
    credit_limit = f.money("credit_limit", "non-negative", default=0)
    state = f.choice("state", STATES, what="state") or STATE_ACTIVE
    buckets = f.buckets("buckets", now=now)
    reference = f.text("reference", required=False, max_len=MAX_REFERENCE)
    f.check()
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
    if not _CURSOR_RE.fullmatch(raw) or int(raw) >= _U64:
        raise InvalidInput([FieldError("cursor", "must be a cursor returned by this API")])
    count = _query_int(request, "count", default=DEFAULT_PAGE, maximum=MAX_PAGE)
    nxt, msisdns = await request.app[STORE].list_subscribers(int(raw), count)
    return web.json_response({"subscribers": msisdns, "cursor": str(nxt) if nxt else None})


async def get_subscriber(request: web.Request) -> web.StreamResponse:
    """``GET /v1/subscribers/{msisdn}``: the account, its buckets and open sessions."""
    return await _account_response(request.app[STORE], _msisdn(request))


async def update_subscriber(request: web.Request) -> web.StreamResponse:
    """``PATCH /v1/subscribers/{msisdn}``: plan, credit limit, state, more unit buckets."""
    app = request.app
    msisdn = _msisdn(request)
    now = app[CLOCK]()
    f = _Fields(await _json_body(request), _PATCH_FIELDS)
    plan = f.plan("plan", app[KNOWN_PLANS](), required=False)
    credit_limit = f.money("credit_limit", "non-negative") if f.has("credit_limit") else None
    state = f.choice("state", STATES, what="state")
    add_buckets = f.buckets("add_buckets", now=now)
    reference = f.text("reference", required=False, max_len=MAX_REFERENCE)
    if isinstance(f.data, dict) and not f.errors and not (set(f.data) - {"reference"}):
        f.errors.append(
            FieldError("body", "must change at least one of plan, credit_limit, state, add_buckets")
        )
    f.check()
    store = app[STORE]
    answer = await store.update_subscriber(
        msisdn,
        plan=plan,
        credit_limit=credit_limit,
        state=state,
        add_buckets=add_buckets,
        now=now,
        request_key=None if reference is None else f"update:{reference}",
    )
    if answer.status == "NOSUB":
        return _unknown_subscriber(msisdn)
    _expect(answer, "OK")
    return await _account_response(store, msisdn)


def _credit_handler(kind: str, sign: Sign, note_field: str, *, note_required: bool) -> Handler:
    allowed = frozenset({"amount", "reference", note_field})

    async def handler(request: web.Request) -> web.StreamResponse:
        msisdn = _msisdn(request)
        f = _Fields(await _json_body(request), allowed)
        amount = f.money("amount", sign)
        reference = f.required_text("reference", max_len=MAX_REFERENCE)
        note = f.text(note_field, required=note_required, max_len=MAX_NOTE) or ""
        f.check()
        answer = await request.app[STORE].credit(
            msisdn,
            kind=kind,
            amount=amount,
            reference=f"{kind}:{reference}",
            note=note,
            now=request.app[CLOCK](),
        )
        if answer.status == "NOSUB":
            return _unknown_subscriber(msisdn)
        if answer.status == "TOOBIG":
            return invalid_input([FieldError("amount", "would take the balance out of range")])
        _expect(answer, "OK")
        # The store answers a replay exactly as it answered the first request (the amount
        # applied and the balance then), and cannot say which it was: both are 201.
        body = {
            "msisdn": msisdn,
            "amount": format_money(answer.charged),
            "reference": reference,
            "balance": format_money(answer.balance),
        }
        return web.json_response(body, status=HTTPStatus.CREATED)

    handler.__doc__ = f"``POST /v1/subscribers/{{msisdn}}/...``: a {kind}, idempotent by reference."
    return handler


async def list_events(request: web.Request) -> web.StreamResponse:
    """``GET /v1/subscribers/{msisdn}/events?limit=&before=``: newest first, paged by id."""
    msisdn = _msisdn(request)
    limit = _query_int(request, "limit", default=DEFAULT_PAGE, maximum=MAX_PAGE)
    before = request.query.get("before")
    m = None if before is None else _STREAM_ID_RE.fullmatch(before)
    if before is not None and (m is None or max(int(x) for x in m.groups()) >= _U64):
        raise InvalidInput([FieldError("before", "must be an event id such as 1714564800000-0")])
    store = request.app[STORE]
    if await store.get_account(msisdn) is None:
        return _unknown_subscriber(msisdn)
    # One more than asked tells whether there is a next page.
    events = await store.events(msisdn, limit=limit + 1, before=before)
    page = events[:limit]
    nxt = page[-1].id if len(events) > limit else None
    return web.json_response({"events": [_event_json(e) for e in page], "next": nxt})


async def healthz(request: web.Request) -> web.StreamResponse:
    """``GET /healthz``: the process answers (liveness); says nothing about Redis."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.StreamResponse:
    """``GET /readyz``: 200 when Redis answers PING, else 503 (take me out of rotation)."""
    try:
        ready = await request.app[STORE].ping()
        detail = "Redis did not answer PING with PONG"
    except StoreError as exc:
        request.app[METRICS].redis_error()
        ready, detail = False, str(exc)
    if ready:
        return web.json_response({"status": "ready"})
    return problem(
        HTTPStatus.SERVICE_UNAVAILABLE, "Not ready", detail, type_=TYPE_STORE_UNAVAILABLE
    )


async def serve_metrics(request: web.Request) -> web.StreamResponse:
    """``GET /metrics``: Prometheus text format."""
    return web.Response(
        body=request.app[METRICS].render(), headers={"Content-Type": METRICS_CONTENT_TYPE}
    )


# -- errors and metrics -------------------------------------------------------------------------


def _verb(request: web.Request) -> str:
    """The route template ("GET /v1/subscribers/{msisdn}"), never the raw path (cardinality)."""
    resource = request.match_info.route.resource
    if resource is None:
        return "unmatched"
    return f"{request.method} {resource.canonical}"


def _http_problem(exc: web.HTTPException) -> web.StreamResponse:
    headers = {}
    if "Allow" in exc.headers:
        headers["Allow"] = exc.headers["Allow"]
    # aiohttp's default text is "<status>: <reason>": say nothing rather than repeat it.
    detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else None
    return problem(exc.status, exc.reason, detail, headers=headers or None)


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Run the handler; turn every error it raises into a problem response."""
    try:
        return await handler(request)
    except _Answer as answer:
        return answer.response
    except InvalidInput as exc:
        return invalid_input(exc.errors)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_problem(exc)
    except StoreUnavailable as exc:
        request.app[METRICS].redis_error()
        log.warning("%s %s: %s", request.method, request.path, exc)
        return problem(
            HTTPStatus.SERVICE_UNAVAILABLE,
            "Store unavailable",
            "the balance store cannot answer now; retry later",
            type_=TYPE_STORE_UNAVAILABLE,
            headers={"Retry-After": "1"},
        )
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return problem(
            HTTPStatus.INTERNAL_SERVER_ERROR, detail="the request failed; see the server log"
        )


@web.middleware
async def _errors_and_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/v1/"):
        return await _answer(request, handler)
    start = time.perf_counter()
    # 499 (nginx's "client closed request"): the handler was cancelled.
    status = 499
    try:
        response = await _answer(request, handler)
        status = response.status
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        request.app[METRICS].observe(
            "http", _verb(request), str(status), time.perf_counter() - start
        )
    return response


# -- the app ------------------------------------------------------------------------------------


def create_app(
    store: Store,
    metrics: Metrics,
    *,
    known_plans: Callable[[], Collection[str]],
    clock: Callable[[], int],
) -> web.Application:
    """The HTTP API over ``store``.

    Args:
        store: the balance store (its owner opens and closes its Redis client).
        metrics: where requests are counted; also served at ``/metrics``.
        known_plans: the plan names a subscriber may be given now (asked on each request,
            so reloaded tariffs apply at once).
        clock: Unix milliseconds now, passed as ``now`` to every store call.
    """
    app = web.Application(middlewares=[_errors_and_metrics])
    app[STORE] = store
    app[METRICS] = metrics
    app[CLOCK] = clock
    app[KNOWN_PLANS] = known_plans
    app.router.add_post("/v1/subscribers", create_subscriber)
    app.router.add_get("/v1/subscribers", list_subscribers)
    app.router.add_get("/v1/subscribers/{msisdn}", get_subscriber)
    app.router.add_patch("/v1/subscribers/{msisdn}", update_subscriber)
    app.router.add_post(
        "/v1/subscribers/{msisdn}/topups",
        _credit_handler("topup", "positive", "note", note_required=False),
    )
    app.router.add_post(
        "/v1/subscribers/{msisdn}/adjustments",
        _credit_handler("adjust", "non-zero", "reason", note_required=True),
    )
    app.router.add_post(
        "/v1/subscribers/{msisdn}/refunds",
        _credit_handler("refund", "positive", "note", note_required=False),
    )
    app.router.add_get("/v1/subscribers/{msisdn}/events", list_events)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", serve_metrics)
    return app
