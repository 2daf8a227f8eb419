"""Authentication, authorisation and audit for the HTTP API: one middleware and the auth and
audit endpoints.

For every request that matched a declared, non-public route (ocs.api.routes):

1. a client with too many recent failures gets 429 (Retry-After), before anything is checked;
2. the bearer token must name a caller (else 401 problem+json with ``WWW-Authenticate``,
   RFC 6750 §3; the failure is counted in metrics and audited);
3. the policy must allow the caller's role the route's action on its resource (else 403);
4. the :class:`~ocs.api.routes.Caller` is stored on the request; a write is audited with its
   outcome and, where a snapshot is registered for its resource, the object before and after.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Handler

from ocs.api.problems import problem
from ocs.api.request import before_id, query, read_fields
from ocs.api.routes import CALLER, Caller, Route, caller_of, route_of
from ocs.api.schema import INT, STRING, Body, Param, Text, array, nullable, obj
from ocs.auth.audit import AuditLog
from ocs.auth.credentials import MAX_NAME, AuthConfig, Authenticator, AuthFailure, dummy_hash
from ocs.auth.policy import Policy, load_policy
from ocs.logs import REQUEST_ID as LOG_REQUEST_ID
from ocs.logs import redis_lost
from ocs.metrics import Metrics
from ocs.money import format_money
from ocs.store.errors import StoreUnavailable
from ocs.store.security import SecurityStore

__all__ = ["SECURITY", "Security", "over_limit"]

log = logging.getLogger(__name__)

REQUEST_ID: Final = web.RequestKey("ocs.request_id", str)

TYPE_UNAUTHENTICATED: Final = "urn:ocs:problem:unauthenticated"
TYPE_FORBIDDEN: Final = "urn:ocs:problem:forbidden"
TYPE_TOO_MANY_FAILURES: Final = "urn:ocs:problem:too-many-failures"
TYPE_OVER_LIMIT: Final = "urn:ocs:problem:over-role-limit"

_BEARER: Final = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([\x21-\x7e]{1,4096}) *")
_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: Records scanned by one GET /v1/audit at most (filters are applied while scanning).
AUDIT_SCAN: Final = 20_000
AUDIT_PAGE: Final = 100
AUDIT_MAX_PAGE: Final = 1000
#: Longest password or refresh token read (longer: 422, before any hashing work).
MAX_SECRET: Final = 1024

#: What an object looked like, for the audit's before/after (None: there is none).
Snapshot = Callable[[web.Request], Awaitable[dict[str, Any] | None]]


def _client(request: web.Request) -> str:
    return request.remote or "unknown"


class FailureBudget:
    """Failed authentications per client in a fixed window, in this process's memory: checked
    with no Redis round trip per request, and holding while Redis is down. Every failure is
    also counted in Redis, in a window all processes share (:meth:`block` applies that
    count here), so N processes do not give a client N times the budget (docs/security.md)."""

    #: Clients remembered at most (the oldest windows are dropped first).
    MAX_CLIENTS: Final = 100_000

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        #: client -> (window start, failures in it); insertion order is age order.
        self._windows: dict[str, tuple[float, int]] = {}

    def count(self, client: str, now: float) -> None:
        start, n = self._windows.pop(client, (now, 0))
        if now - start >= self.window:
            start, n = now, 0
        self._windows[client] = (start, n + 1)
        while len(self._windows) > self.MAX_CLIENTS:
            del self._windows[next(iter(self._windows))]

    def block(self, client: str, now: float, remaining: float) -> None:
        """``client`` has used the budget (as every process counted it): refuse it here too
        for the ``remaining`` seconds of the shared window."""
        self._windows.pop(client, None)
        self._windows[client] = (now + remaining - self.window, self.limit)

    def retry_after(self, client: str, now: float) -> int | None:
        """Seconds until ``client`` may try again, or None if it may now."""
        start, n = self._windows.get(client, (now, 0))
        if n < self.limit or now - start >= self.window:
            return None
        return max(1, math.ceil(start + self.window - now))


class Security:
    """Everything the middleware needs; one per app."""

    def __init__(
        self,
        store: SecurityStore,
        config: AuthConfig,
        metrics: Metrics,
        clock: Callable[[], int],
        *,
        policy: Policy | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.policy = policy if policy is not None else load_policy(config.policy_file or None)
        if config.operator_max_topup is not None:
            self.policy = self.policy.with_limit(
                "operator", "subscribers.topups", config.operator_max_topup
            )
        self.authenticator = Authenticator(store, config)
        dummy_hash()  # made now, so the first login naming no user is not the slower one
        #: Resource prefix ("subscribers") -> how to show its object before and after a write.
        self.snapshots: dict[str, Snapshot] = {}
        self._audit: AuditLog | None = None
        self.failures = FailureBudget(config.fail_limit, config.fail_window)

    async def audit_log(self) -> AuditLog:
        if self._audit is None:
            self._audit = AuditLog(self.store, await self.authenticator.key("audit"))
        return self._audit

    async def record(self, request: web.Request, caller: Caller | None, **fields: str) -> None:
        """Append an audit record about ``request`` (never fails the request: logged)."""
        base = {"from": _client(request), "request_id": str(request.get(REQUEST_ID, ""))}
        if caller is not None:
            base.update(who=caller.subject, role=caller.role, agency=caller.agency or "")
        await self.record_event(**base, **fields)

    async def record_event(self, **fields: str) -> None:
        """Append an audit record (time added); a failure to write it is logged."""
        try:
            await (await self.audit_log()).append(ts=str(self.clock()), **fields)
        except (StoreUnavailable, RuntimeError) as exc:
            log.error("audit: record not written (%s): %s", fields.get("action"), exc)

    # -- the failure budget -------------------------------------------------------------------

    def _limited(self, request: web.Request) -> web.Response | None:
        retry = self.failures.retry_after(_client(request), time.monotonic())
        if retry is None:
            return None
        self.metrics.auth_failure("http", "limited")
        return problem(
            HTTPStatus.TOO_MANY_REQUESTS,
            "Too many failed attempts",
            "too many failed authentications from this client; try again later",
            type_=TYPE_TOO_MANY_FAILURES,
            headers={"Retry-After": str(retry)},
        )

    async def _failed(self, request: web.Request, reason: str, detail: str) -> web.Response:
        self.metrics.auth_failure("http", reason)
        client, now = _client(request), time.monotonic()
        self.failures.count(client, now)
        try:
            shared, remaining_ms = await self.store.count_failure(
                client, math.ceil(self.config.fail_window * 1000)
            )
        except StoreUnavailable:
            pass  # this process's own count still holds
        else:
            if shared >= self.failures.limit:
                self.failures.block(client, now, remaining_ms / 1000)
        await self.record(
            request, None, action="auth.failure", target=f"{request.method} {request.path}",
            status="401", detail=reason,
        )  # fmt: skip
        challenge = 'Bearer realm="ocs"'
        if reason != "missing":  # RFC 6750 §3.1: no error code when no credential was sent
            challenge += f', error="invalid_token", error_description="{detail}"'
        return problem(
            HTTPStatus.UNAUTHORIZED,
            "Unauthenticated",
            detail,
            type_=TYPE_UNAUTHENTICATED,
            headers={"WWW-Authenticate": challenge},
        )

    # -- the middleware -----------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        rid = request.headers.get("X-Request-Id", "")
        request[REQUEST_ID] = rid if _REQUEST_ID.fullmatch(rid) else uuid.uuid4().hex
        LOG_REQUEST_ID.set(request[REQUEST_ID])
        try:
            response = await self._guarded(request, handler)
        except StoreUnavailable as exc:
            self.metrics.redis_error()
            redis_lost(log, f"{request.method} {request.path}", exc)
            response = problem(
                HTTPStatus.SERVICE_UNAVAILABLE,
                "Store unavailable",
                "the credential store cannot answer now; retry later",
                headers={"Retry-After": "1"},
            )
        if not response.prepared:
            response.headers["X-Request-Id"] = request[REQUEST_ID]
        return response

    async def _guarded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = route_of(request)
        if (
            route is not None
            and route.public
            and route.action == "write"
            and (route.resource != "auth")
        ):
            # A write with its own credential (the provisioning gateway's signed callback):
            # audited like any other change, as done by that resource's signer.
            signer = Caller(f"signed:{route.resource}", "", None)
            return await self._audited(request, handler, route, signer)
        if (
            route is None
            or route.public
            or (self.config.metrics_public and route.resource == "metrics")
        ):
            return await handler(request)
        limited = self._limited(request)
        if limited is not None:
            return limited
        header = request.headers.get("Authorization")
        if header is None:
            return await self._failed(request, "missing", "this request needs a bearer token")
        m = _BEARER.fullmatch(header)
        if m is None:
            return await self._failed(request, "malformed", "send Authorization: Bearer TOKEN")
        try:
            caller = await self.authenticator.authenticate(m.group(1), self.clock())
        except AuthFailure as exc:
            return await self._failed(request, exc.reason, exc.detail)
        if not self.policy.decide(caller.role, caller.agency, route.resource, route.action):
            self.metrics.auth_failure("http", "forbidden")
            await self.record(
                request, caller, action="auth.forbidden", status="403",
                target=f"{request.method} {request.path}",
                detail=f"{route.resource}/{route.action}",
            )  # fmt: skip
            return problem(
                HTTPStatus.FORBIDDEN,
                "Forbidden",
                f"the {caller.role} role may not {route.action} {route.resource}",
                type_=TYPE_FORBIDDEN,
            )
        request[CALLER] = caller
        if route.action != "write":
            return await handler(request)
        return await self._audited(request, handler, route, caller)

    async def _audited(
        self, request: web.Request, handler: Handler, route: Route, caller: Caller
    ) -> web.StreamResponse:
        snapshot = self.snapshots.get(route.resource.split(".", 1)[0])
        before = await _snap(snapshot, request)
        status = "error"
        try:
            response = await handler(request)
            status = str(response.status)
        except web.HTTPException as exc:
            status = str(exc.status)
            raise
        finally:
            # Only what changed something: a refused write (4xx) changes nothing, not even
            # the audit log (failed authentications are recorded above), nor does a replay.
            after = await _snap(snapshot, request) if status.startswith("2") else None
            if status == "401" and caller.subject.startswith("signed:"):
                self.metrics.auth_failure("http", "bad-signature")
                await self.record(
                    request, None, action="auth.failure", status=status,
                    target=f"{request.method} {request.path}", detail="bad signature",
                )  # fmt: skip
            # An idempotent replay leaves its object as it was: nothing to record.
            if status.startswith("2") and (before is None or before != after):
                await self.record(
                    request, caller, action=f"{request.method} {route.path}",
                    target=request.path, status=status, before=_json(before),
                    after=_json(after),
                )  # fmt: skip
        return response

    # -- endpoints ------------------------------------------------------------------------------

    async def _exchange(
        self, request: web.Request, body: Body, how: Callable[..., Awaitable[Any]]
    ) -> web.StreamResponse:
        limited = self._limited(request)
        if limited is not None:
            return limited
        values = await read_fields(request, body)  # 422 naming each bad field
        try:
            pair = await how(*values.values(), self.clock())
        except AuthFailure as exc:
            return await self._failed(request, exc.reason, exc.detail)
        return web.json_response(pair, headers={"Cache-Control": "no-store"})

    async def token(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/auth/token`` {username, password}: an access token and a refresh token."""
        return await self._exchange(request, LOGIN, self.authenticator.login)

    async def refresh(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/auth/refresh`` {refresh_token}: a new pair (the old refresh is spent)."""
        return await self._exchange(request, REFRESH, self.authenticator.refresh)

    async def audit(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/audit?who=&action=&since=&until=&before=&limit=``: newest first."""
        q = query(request)
        limit: int = q["limit"]
        before: str = q["before"] or "+"
        since, until = q["since"], q["until"]
        who, action, target = q["who"], q["action"], q["target"]
        out: list[dict[str, str]] = []
        scanned, cursor, exhausted = 0, before, False
        while len(out) < limit and scanned < AUDIT_SCAN and not exhausted:
            entries = await self.store.audit_entries(after=cursor, count=500, reverse=True)
            exhausted = len(entries) < 500
            for i, e in enumerate(entries):
                scanned += 1
                cursor = e.id
                if _selected(e.fields, since, until, who, action, target):
                    out.append({"id": e.id, **e.fields})
                    if len(out) >= limit:
                        exhausted = exhausted and i == len(entries) - 1
                        break
        nxt = None if exhausted else cursor
        return web.json_response({"records": out, "next": nxt})

    def routes(self) -> Iterable[Route]:
        return (
            # The credential is in the body: these are the way to get a bearer token.
            Route("POST", "/v1/auth/token", self.token, "auth", "write", public=True,
                  body=LOGIN, answer=TOKEN_PAIR),
            Route("POST", "/v1/auth/refresh", self.refresh, "auth", "write", public=True,
                  body=REFRESH, answer=TOKEN_PAIR),
            Route("GET", "/v1/audit", self.audit, "audit", "read", params=AUDIT_PARAMS,
                  answer=AUDIT_PAGE_SCHEMA),
        )  # fmt: skip


SECURITY: Final = web.AppKey("ocs.security", Security)

LOGIN: Final = Body(
    "Login",
    {
        "username": Text(MAX_NAME * 4, required=True),
        "password": Text(MAX_SECRET, required=True),
    },
    examples=({"username": "ana", "password": "correct horse"},),
)
REFRESH: Final = Body(
    "Refresh",
    {"refresh_token": Text(MAX_SECRET, required=True, description="spent by this request")},
)
TOKEN_PAIR: Final = obj(
    {
        "access_token": STRING,
        "token_type": {"const": "Bearer"},
        "expires_in": INT,
        "refresh_token": STRING,
        "role": STRING,
        "agency": nullable(STRING),
    }
)
_TEXT: Final[dict[str, object]] = {"type": "string", "maxLength": 256}
AUDIT_PARAMS: Final = (
    Param("who", "query", _TEXT, "only records by this subject (user:NAME, key:ID)"),
    Param("action", "query", _TEXT, "only actions starting with this (PATCH, auth.)"),
    Param("target", "query", _TEXT, "only records about this path"),
    Param("since", "query", {"type": "string", "format": "date-time"}, "from this time on"),
    Param("until", "query", {"type": "string", "format": "date-time"}, "before this time"),
    before_id("the record id to page back from (the previous page's next)"),
    Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": AUDIT_MAX_PAGE},
          "page size", default=AUDIT_PAGE),
)  # fmt: skip
AUDIT_PAGE_SCHEMA: Final = obj(
    {
        "records": array({"type": "object", "properties": {"id": STRING},
                          "required": ["id"], "additionalProperties": STRING}),
        "next": nullable(STRING),
    }
)  # fmt: skip


def _selected(
    f: Mapping[str, str],
    since: int | None,
    until: int | None,
    who: str | None,
    action: str | None,
    target: str | None,
) -> bool:
    ts = int(f.get("ts", "0") or 0)
    return (
        (since is None or ts >= since)
        and (until is None or ts < until)
        and (not who or f.get("who") == who)
        and (not action or f.get("action", "").startswith(action))
        and (not target or f.get("target") == target)
    )


async def _snap(snapshot: Snapshot | None, request: web.Request) -> dict[str, Any] | None:
    if snapshot is None:
        return None
    try:
        return await snapshot(request)
    except StoreUnavailable:
        return None


def _json(value: dict[str, Any] | None) -> str:
    return "" if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))


def over_limit(request: web.Request, amount: int) -> web.Response | None:
    """A 403 problem when ``amount`` is more than the caller's role may move in one request
    to this route's resource (the policy's role limits), else None."""
    caller, route = caller_of(request), route_of(request)
    security = request.app.get(SECURITY)
    if caller is None or route is None or security is None:
        return None
    limit = security.policy.limit(caller.role, route.resource)
    if limit is None or amount <= limit:
        return None
    return problem(
        HTTPStatus.FORBIDDEN,
        "Over the role's limit",
        f"the {caller.role} role may move at most {format_money(limit)} in one request",
        type_=TYPE_OVER_LIMIT,
    )
