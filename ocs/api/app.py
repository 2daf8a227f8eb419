"""The operators' HTTP API: subscribers, their balances and events, tariff plans and what-if
prices, health and metrics.

Every route is a thin translation: parse and check the request (each bad field is named in a
422 problem, nothing reaches the store), call one :class:`~ocs.store.store.Store` method with
the injected clock's ``now``, and render the answer. Money leaves as decimal strings
("12.50", see :func:`ocs.money.format_money`), never as numbers. Errors are RFC 9457 problem
documents (:mod:`ocs.api.problems`). See docs/api.md for the contract.

Idempotency keys: the API scopes every ``reference`` by operation before it becomes the
store's request key (``topup:<ref>``, ``refund:<ref>``, ``adjust:<ref>``, ``create:<ref>``,
``update:<ref>``), so one ticket number may be used for, say, a create and a top-up without the
second replaying the first's answer.

Tariffs: the plans come from the :class:`~ocs.charging.tariffs.TariffRegistry`, asked on each
request (a plan loaded by another process is known here once the registry has picked it up).
``POST /v1/rate`` prices usage with the same rating engine as charging, on the plans of the
moment, without touching any account.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Final, Literal

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestPayloadError

from ocs.api.problems import (
    TYPE_MALFORMED_JSON,
    TYPE_STORE_UNAVAILABLE,
    TYPE_SUBSCRIBER_EXISTS,
    TYPE_UNKNOWN_PLAN,
    TYPE_UNKNOWN_SUBSCRIBER,
    FieldError,
    InvalidInput,
    invalid_input,
    invalid_plan,
    problem,
    reference_conflict,
)
from ocs.api.routes import Route, add_routes
from ocs.api.server import parser_problem
from ocs.auth.credentials import AuthConfig
from ocs.auth.http import SECURITY, Security, over_limit
from ocs.charging.tariffs import TariffRegistry, bundle_buckets
from ocs.constants import HTTP_BODY_TIMEOUT, MAX_UNITS, STATE_ACTIVE, STATES
from ocs.logs import redis_lost
from ocs.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ocs.metrics import Metrics
from ocs.money import MoneyFormatError, format_money, parse_money
from ocs.provisioning.service import Provisioning, ProvisioningError
from ocs.store.errors import StoreError, StoreUnavailable
from ocs.store.security import SecurityStore
from ocs.store.store import PLAN_THRESHOLDS, Account, Event, ScriptAnswer, Store, UnitBucket
from tariffs import (
    PlanBook,
    PlanFileError,
    PlanVersion,
    RatingError,
    TariffRater,
    UnitKind,
    UnknownPlan,
    UsageContext,
    parse_thresholds,
)

__all__ = [
    "CLOCK",
    "METRICS",
    "STORE",
    "TARIFFS",
    "account_json",
    "create_app",
    "iso_time",
    "rating_answer",
]

log = logging.getLogger(__name__)

#: Unix milliseconds now; injected so that tests and replays control time.
Clock = Callable[[], int]

STORE: Final = web.AppKey("ocs.store", Store)
METRICS: Final = web.AppKey("ocs.metrics", Metrics)
CLOCK: Final = web.AppKey[Clock]("ocs.clock")
TARIFFS: Final = web.AppKey("ocs.tariffs", TariffRegistry)
PROVISIONING: Final = web.AppKey("ocs.provisioning", Provisioning)
#: Seconds a request body may take to arrive.
BODY_TIMEOUT: Final = web.AppKey("ocs.body_timeout", float)

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
#: Rating times: from 1970 up to (not including) 2200.
_LATEST: Final = (datetime(2200, 1, 1, tzinfo=UTC) - _EPOCH) // _MS

#: nginx's "client closed request": the client went away before its answer.
CLIENT_CLOSED_REQUEST: Final = 499
MAX_REFERENCE: Final = 128
MAX_NOTE: Final = 256
MAX_BUCKET_ID: Final = 64
MAX_SERVICE: Final = 64
#: Bucket priorities are compared in Lua (doubles): keep them small integers.
MAX_PRIORITY: Final = 1_000_000
DEFAULT_PAGE: Final = 100
MAX_PAGE: Final = 1000
#: Request bodies (JSON, plan files): larger ones are refused with 413.
MAX_BODY: Final = 1024 * 1024
MAX_NUMBER: Final = 32
MAX_LOCATION: Final = 64
MAX_SOURCE: Final = 256
#: Seconds rated in one query (used + units), about 3 years: time is cut into bands day by
#: day, so this bounds the work of one request.
MAX_RATED_SECONDS: Final = 10**8
#: Content types a plan file may be sent as.
PLAN_CONTENT_TYPES: Final = frozenset({"application/toml", "text/plain"})

_CREATE_FIELDS: Final = frozenset(
    {"msisdn", "balance", "plan", "credit_limit", "state", "buckets", "reference"}
)
_PATCH_FIELDS: Final = frozenset(
    {"plan", "credit_limit", "state", "add_buckets", "thresholds", "reference"}
)
_BUCKET_FIELDS: Final = frozenset({"id", "service", "units", "priority", "expires_at"})
_RATE_FIELDS: Final = frozenset(
    {"plan", "service", "units", "duration", "to", "at", "location", "used", "money"}
)

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

    def instant(self, name: str, *, default: int) -> int:
        """An RFC 3339 time with its offset (1970 to 2199), as Unix ms; absent is ``default``."""
        v = self._get(name, required=False)
        if v is _MISSING:
            return default
        detail = "must be an RFC 3339 time such as 2026-11-23T08:59:30+01:00"
        if not isinstance(v, str):
            self.error(name, detail)
            return default
        try:
            t = datetime.fromisoformat(v)
        except ValueError:
            self.error(name, detail)
            return default
        if t.tzinfo is None:
            self.error(name, "must carry a time zone offset (Z or +hh:mm)")
            return default
        try:
            ms = (t - _EPOCH) // _MS
        except OverflowError:
            ms = -1
        if not 0 <= ms < _LATEST:
            self.error(name, "must be from 1970 up to 2199")
            return default
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


async def _read_body(request: web.Request) -> bytes:
    """The request body, within ``BODY_TIMEOUT`` seconds (408 otherwise: a client that stalls
    mid-body must not hold the connection); a body the parser cannot read is a 400."""
    try:
        async with asyncio.timeout(request.app[BODY_TIMEOUT]):
            return await request.read()
    except TimeoutError:
        answer = problem(HTTPStatus.REQUEST_TIMEOUT, detail="the body did not arrive in time")
        answer.force_close()
        raise _Answer(answer) from None
    except RequestPayloadError as exc:
        answer = parser_problem(exc.__cause__ or exc, HTTPStatus.BAD_REQUEST)
        answer.force_close()
        raise _Answer(answer) from None


async def _json_body(request: web.Request) -> object:
    raw = await _read_body(request)
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


async def _account_response(
    store: Store, msisdn: str, status: int = 200, *, refresh_at: int | None = None
) -> web.Response:
    account = await store.get_account(msisdn, refresh_at=refresh_at)
    if account is None:
        return _unknown_subscriber(msisdn)
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
    f = _Fields(await _json_body(request), _CREATE_FIELDS)
    msisdn = f.required_text(
        "msisdn",
        max_len=15,
        pattern=_MSISDN_RE,
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
    if not _CURSOR_RE.fullmatch(raw) or int(raw) >= _U64:
        raise InvalidInput([FieldError("cursor", "must be a cursor returned by this API")])
    count = _query_int(request, "count", default=DEFAULT_PAGE, maximum=MAX_PAGE)
    nxt, msisdns = await request.app[STORE].list_subscribers(int(raw), count)
    return web.json_response({"subscribers": msisdns, "cursor": str(nxt) if nxt else None})


async def get_subscriber(request: web.Request) -> web.StreamResponse:
    """``GET /v1/subscribers/{msisdn}``: the account, its buckets and open sessions (brought
    up to date first: due expiries, newly published thresholds)."""
    app = request.app
    return await _account_response(app[STORE], _msisdn(request), refresh_at=app[CLOCK]())


async def update_subscriber(request: web.Request) -> web.StreamResponse:
    """``PATCH /v1/subscribers/{msisdn}``: plan, credit limit, state, more unit buckets."""
    app = request.app
    msisdn = _msisdn(request)
    now = app[CLOCK]()
    f = _Fields(await _json_body(request), _PATCH_FIELDS)
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
        return _unknown_subscriber(msisdn)
    _expect(answer, "OK")
    return await _account_response(store, msisdn)


def _thresholds_field(f: _Fields) -> list[tuple[int, int, str]] | str | None:
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
        msisdn = _msisdn(request)
        f = _Fields(await _json_body(request), allowed)
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
            return _unknown_subscriber(msisdn)
        if answer.status == "TOOBIG":
            return invalid_input([FieldError("amount", "would take the balance out of range")])
        _expect(answer, "OK")
        if answer.charged > 0 and not answer.replay:
            request.app[METRICS].inc("ocs_credited_micros", (kind,), answer.charged)
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


# -- rating and tariffs -------------------------------------------------------------------------


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
    f = _Fields(await _json_body(request), _RATE_FIELDS)
    plan = f.plan("plan", book.names(), required=True) or ""
    service = f.required_text("service", max_len=MAX_SERVICE)
    by_duration = f.has("duration") and not f.has("units")
    if f.has("duration") and f.has("units"):
        f.error("duration", "is another name for units (in seconds): give one of them")
    unit_field = "duration" if by_duration else "units"
    units = f.integer(unit_field, default=None, minimum=0, maximum=MAX_UNITS)
    to = f.text("to", required=False, max_len=MAX_NUMBER)
    at = f.instant("at", default=app[CLOCK]())
    location = f.text("location", required=False, max_len=MAX_LOCATION)
    used = f.integer("used", default=0, minimum=0, maximum=MAX_UNITS)
    money = f.money("money", "non-negative") if f.has("money") else None
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
    source = request.query.get("source", "request")
    if not 1 <= len(source) <= MAX_SOURCE or not source.isprintable():
        raise InvalidInput(
            [FieldError("source", f"must be 1 to {MAX_SOURCE} printable characters")]
        )
    raw = await _read_body(request)
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
        body=await request.app[METRICS].render_now(), headers={"Content-Type": METRICS_CONTENT_TYPE}
    )


# -- errors and metrics -------------------------------------------------------------------------


def _route(request: web.Request) -> str:
    """The route template ("/v1/subscribers/{msisdn}"), never the raw path (cardinality)."""
    resource = request.match_info.route.resource
    if resource is None:
        return "unmatched"
    return resource.canonical


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
    except ConnectionResetError as exc:
        # The client went away mid-request (typically mid-body): nobody to answer; counted
        # as 499 by the middleware, and not an error of ours.
        log.debug("%s %s: the client closed the connection: %s", request.method, request.path, exc)
        return problem(CLIENT_CLOSED_REQUEST, "Client Closed Request")
    except StoreUnavailable as exc:
        request.app[METRICS].redis_error()
        redis_lost(log, f"{request.method} {request.path}", exc)
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
    status = CLIENT_CLOSED_REQUEST
    try:
        response = await _answer(request, handler)
        status = response.status
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        request.app[METRICS].observe_http(
            request.method, _route(request), status, time.perf_counter() - start
        )
    return response


# -- the app ------------------------------------------------------------------------------------


# -- provisioning ---------------------------------------------------------------------------------


def _provisioning_problem(exc: ProvisioningError) -> web.Response:
    return problem(exc.status, exc.title, exc.detail)


async def provisioning_callback(request: web.Request) -> web.StreamResponse:
    """``POST /v1/provisioning/callbacks``: a signed confirmation or rejection of a command
    the provisioning system accepted (202). A bad signature: 401, and nothing changes."""
    try:
        body = await _read_body(request)
        result = await request.app[PROVISIONING].callback(body, request.headers)
    except ProvisioningError as exc:
        return _provisioning_problem(exc)
    return web.json_response(result)


async def subscriber_provisioning(request: web.Request) -> web.StreamResponse:
    """``GET /v1/subscribers/{msisdn}/provisioning``: desired and confirmed barring, history."""
    msisdn = _msisdn(request)
    view = await request.app[PROVISIONING].view(msisdn)
    if view is None:
        return _unknown_subscriber(msisdn)
    return web.json_response(view)


async def list_dead_letters(request: web.Request) -> web.StreamResponse:
    """``GET /v1/provisioning/dead-letters?limit=&before=``: newest first."""
    limit = _query_int(request, "limit", default=DEFAULT_PAGE, maximum=MAX_PAGE)
    before = request.query.get("before")
    if before is not None and _STREAM_ID_RE.fullmatch(before) is None:
        raise InvalidInput([FieldError("before", "must be an id such as 1714564800000-0")])
    items = await request.app[PROVISIONING].dead_letters(limit, before)
    return web.json_response({"dead_letters": items})


async def replay_dead_letter(request: web.Request) -> web.StreamResponse:
    """``POST /v1/provisioning/dead-letters/{id}/replay``: queue it again (202)."""
    if _STREAM_ID_RE.fullmatch(request.match_info["id"]) is None:
        raise InvalidInput([FieldError("id", "must be an id such as 1714564800000-0")])
    try:
        result = await request.app[PROVISIONING].replay(request.match_info["id"])
    except ProvisioningError as exc:
        return _provisioning_problem(exc)
    return web.json_response(result, status=HTTPStatus.ACCEPTED)


async def reconcile(request: web.Request) -> web.StreamResponse:
    """``POST /v1/provisioning/reconcile``: start comparing every account's barring with the
    HLR's (re-sending what differs) as a background job: 202, the job at ``Location``."""
    try:
        job = await request.app[PROVISIONING].start_reconcile()
    except ProvisioningError as exc:
        return _provisioning_problem(exc)
    location = f"/v1/provisioning/reconcile/{job['id']}"
    return web.json_response(job, status=HTTPStatus.ACCEPTED, headers={"Location": location})


async def reconcile_job(request: web.Request) -> web.StreamResponse:
    """``GET /v1/provisioning/reconcile/{id}``: a reconciliation's progress, then result."""
    job_id = request.match_info["id"]
    job = await request.app[PROVISIONING].reconcile_job(job_id)
    if job is None:
        detail = f"no reconciliation job {job_id!r} (unknown, or older than 7 days)"
        return problem(HTTPStatus.NOT_FOUND, "Unknown job", detail)
    return web.json_response(job)


async def _subscriber_snapshot(request: web.Request) -> dict[str, object] | None:
    """The audit's before/after of a subscriber write: what a change can touch."""
    msisdn = request.match_info.get("msisdn")
    if msisdn is None or not _MSISDN_RE.fullmatch(msisdn):
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
_ROUTES: Final = (
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
    Route("POST", "/v1/rate", rate, "rating", "read"),
    Route("GET", "/v1/tariffs", list_tariffs, "tariffs", "read"),
    Route("POST", "/v1/tariffs", load_tariff, "tariffs", "write"),
    Route("GET", "/v1/tariffs/{name}", get_tariff, "tariffs", "read"),
    Route("GET", "/healthz", healthz, "health", "read", public=True),
    Route("GET", "/readyz", readyz, "health", "read", public=True),
    Route("GET", "/metrics", serve_metrics, "metrics", "read"),
)

#: Present when the OCS runs with a provisioning system.
_PROVISIONING_ROUTES: Final = (
    # Signed by the provisioning system (HMAC over timestamp and body): that signature is
    # its credential (checked by the handler), not a bearer token.
    Route(
        "POST",
        "/v1/provisioning/callbacks",
        provisioning_callback,
        "provisioning.callbacks",
        "write",
        public=True,
    ),
    Route(
        "GET",
        "/v1/provisioning/dead-letters",
        list_dead_letters,
        "provisioning.dead-letters",
        "read",
    ),
    Route(
        "POST",
        "/v1/provisioning/dead-letters/{id}/replay",
        replay_dead_letter,
        "provisioning.dead-letters",
        "write",
    ),
    Route("POST", "/v1/provisioning/reconcile", reconcile, "provisioning.reconcile", "write"),
    Route(
        "GET",
        "/v1/provisioning/reconcile/{id}",
        reconcile_job,
        "provisioning.reconcile",
        "read",
    ),
    Route(
        "GET",
        "/v1/subscribers/{msisdn}/provisioning",
        subscriber_provisioning,
        "subscribers.provisioning",
        "read",
    ),
)


def create_app(
    store: Store,
    metrics: Metrics,
    *,
    tariffs: TariffRegistry,
    clock: Callable[[], int],
    provisioning: Provisioning | None = None,
    body_timeout: float = HTTP_BODY_TIMEOUT,
    routes: Iterable[Route] = (),
    auth: AuthConfig | None = None,
) -> web.Application:
    """The HTTP API over ``store``.

    Args:
        store: the balance store (its owner opens and closes its Redis client).
        metrics: where requests are counted; also served at ``/metrics``.
        tariffs: the plans (its owner keeps them in step with Redis); the known plans are
            asked of it on each request, so reloaded tariffs apply at once.
        clock: Unix milliseconds now, passed as ``now`` to every store call and the default
            time of a rating.
        body_timeout: seconds a request body may take to arrive (408 after).
        provisioning: the provisioning system; its routes exist only when it is given.
        routes: more endpoints, declared by the subsystems that serve them.
        auth: authentication settings (ocs.auth); by default no bootstrap token: only the
            API keys and users kept in the store's Redis get in.
    """
    security = Security(SecurityStore(store.client), auth or AuthConfig(), metrics, clock)
    security.snapshots["subscribers"] = _subscriber_snapshot
    # Security outermost: it sees every answer as the client will (problems included).
    app = web.Application(
        middlewares=[security.middleware, _errors_and_metrics], client_max_size=MAX_BODY
    )
    app[SECURITY] = security
    app[STORE] = store
    app[METRICS] = metrics
    app[CLOCK] = clock
    app[BODY_TIMEOUT] = body_timeout
    app[TARIFFS] = tariffs
    add_routes(app, _ROUTES)
    add_routes(app, security.routes())
    if provisioning is not None:
        app[PROVISIONING] = provisioning
        add_routes(app, _PROVISIONING_ROUTES)
    add_routes(app, routes)
    return app
