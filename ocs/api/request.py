"""Reading requests: bodies within a deadline, JSON, typed fields that collect every error,
query integers and path parameters, and the limits they are checked against.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Final

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from ocs.api.context import BODY_TIMEOUT
from ocs.api.problems import (
    TYPE_MALFORMED_JSON,
    TYPE_UNKNOWN_SUBSCRIBER,
    FieldError,
    InvalidInput,
    problem,
)
from ocs.api.render import EPOCH, MS
from ocs.api.routes import route_of
from ocs.api.schema import Body, Param, Sign
from ocs.api.server import parser_problem
from ocs.constants import HTTP_BODY_TIMEOUT
from ocs.money import MoneyFormatError, parse_money
from ocs.store.store import UnitBucket

#: E.164 without the leading '+': up to 15 digits; 3 allows short test and service numbers.
MSISDN_RE: Final = re.compile(r"[0-9]{3,15}")
#: A Redis stream entry id, "<ms>-<seq>".
STREAM_ID_RE: Final = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
#: Redis cursors and both halves of a stream id are unsigned 64-bit integers.
U64: Final = 2**64
#: Rating times: from 1970 up to (not including) 2200.
LATEST: Final = (datetime(2200, 1, 1, tzinfo=UTC) - EPOCH) // MS

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


def page_size(name: str) -> Param:
    """The page size parameter ``name`` (1 to MAX_PAGE, DEFAULT_PAGE when absent)."""
    schema: dict[str, object] = {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}
    return Param(name, "query", schema, "page size", default=DEFAULT_PAGE)


def before_id(description: str) -> Param:
    """``before``: a Redis stream id to page back from (both halves below 2**64)."""
    schema: dict[str, object] = {"type": "string", "pattern": r"^[0-9]{1,19}-[0-9]{1,19}$"}
    return Param("before", "query", schema, description,
                 detail="must be an id such as 1714564800000-0")  # fmt: skip


#: Where :func:`query` keeps the request's parameters once read.
QUERY: Final = web.RequestKey("ocs.query", dict[str, Any])


# -- request parsing --------------------------------------------------------------------------

_MISSING: Final = object()


class Fields:
    """Typed members of one JSON object, collecting every error instead of stopping at one.

    Getters of required members return a placeholder on error; :meth:`check` raises before any
    placeholder can be used.
    """

    def __init__(
        self,
        data: object,
        body: Body,
        *,
        now: int = 0,
        plans: Collection[str] = (),
        where: str = "",
        errors: list[FieldError] | None = None,
    ) -> None:
        self.errors: list[FieldError] = [] if errors is None else errors
        self.where = where
        self.body = body
        #: Unix ms now (the default of instants; timestamps must be later).
        self.now = now
        #: The plans known now.
        self.plans = plans
        allowed = body.names
        self.data: Mapping[str, object] = {}
        #: The request gave a JSON object (else its one error is that it is not).
        self.is_object = isinstance(data, dict)
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

    def value(self, name: str) -> Any:
        """The member ``name`` read by its declaration in the body (:mod:`ocs.api.schema`)."""
        return self.body.fields[name].read(self, name)

    def values(self) -> dict[str, Any]:
        """Every declared member read by its declaration (errors collected), by name."""
        if not self.is_object:
            return {}
        return {name: self.value(name) for name in self.body.fields}

    def nested(self, name: str, data: object, body: Body) -> Fields:
        """The object ``data`` at member ``name``, read by ``body`` (errors collected here)."""
        return Fields(
            data, body, now=self.now, plans=self.plans, where=self.path(name), errors=self.errors
        )

    def value_of(self, name: str, *, required: bool) -> object:
        """The raw member, or None when absent (an error if ``required``) or null (an error)."""
        v = self._get(name, required)
        return None if v is _MISSING else v

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

    def choice(
        self, name: str, options: Collection[str], *, what: str, required: bool = False
    ) -> str | None:
        v = self._get(name, required=required)
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
        ms = (t - EPOCH) // MS
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
            ms = (t - EPOCH) // MS
        except OverflowError:
            ms = -1
        if not 0 <= ms < LATEST:
            self.error(name, "must be from 1970 up to 2199")
            return default
        return ms

    def buckets(self, name: str, item: Body) -> list[UnitBucket]:
        v = self._get(name, required=False)
        if v is _MISSING:
            return []
        if not isinstance(v, list):
            self.error(name, "must be a list of bucket objects")
            return []
        out: list[UnitBucket] = []
        seen: set[str] = set()
        for i, entry in enumerate(v):
            where = f"{self.path(name)}[{i}]"
            b = Fields(entry, item, now=self.now, where=where, errors=self.errors)
            if not isinstance(entry, dict):
                continue
            bid = b.value("id")
            if bid in seen:
                b.error("id", "is given twice in this request")
            seen.add(bid)
            out.append(
                UnitBucket(
                    id=bid,
                    service=b.value("service"),
                    units=b.value("units"),
                    priority=b.value("priority"),
                    expires_at=b.value("expires_at"),
                )
            )
        return out

    def plan(self, name: str, known: Collection[str], *, required: bool) -> str | None:
        v = self.text(name, required=required, max_len=MAX_SERVICE)
        if v is not None and v not in known:
            self.error(name, f"is not a known plan (known: {', '.join(sorted(known))})")
            return None
        return v


class Answer(Exception):
    """Ends a request early with a ready response (a problem)."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.reason)
        self.response = response


async def read_body(request: web.Request) -> bytes:
    """The request body, within ``BODY_TIMEOUT`` seconds (408 otherwise: a client that stalls
    mid-body must not hold the connection); a body the parser cannot read is a 400."""
    try:
        async with asyncio.timeout(request.app.get(BODY_TIMEOUT, HTTP_BODY_TIMEOUT)):
            return await request.read()
    except TimeoutError:
        answer = problem(HTTPStatus.REQUEST_TIMEOUT, detail="the body did not arrive in time")
        answer.force_close()
        raise Answer(answer) from None
    except RequestPayloadError as exc:
        answer = parser_problem(exc.__cause__ or exc, HTTPStatus.BAD_REQUEST)
        answer.force_close()
        raise Answer(answer) from None


async def json_body(request: web.Request) -> object:
    raw = await read_body(request)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise Answer(
            problem(
                HTTPStatus.BAD_REQUEST,
                "Malformed JSON",
                f"the request body is not JSON: {exc}",
                type_=TYPE_MALFORMED_JSON,
            )
        ) from None


async def read_fields(
    request: web.Request, body: Body, *, now: int = 0, plans: Collection[str] = ()
) -> dict[str, Any]:
    """The JSON body of ``request`` read by the declaration ``body``: every member checked
    (InvalidInput naming each bad one, 422), the values by name."""
    f = Fields(await json_body(request), body, now=now, plans=plans)
    values = f.values()
    f.check()
    return values


async def checked_json(request: web.Request, body: Body) -> dict[str, Any]:
    """The JSON body of ``request`` as the client sent it, once every member was checked by
    the declaration ``body`` (InvalidInput naming each bad one, 422): for a layer that reads
    the same object again (billing's functions, which the CLI and the demo call too)."""
    data = await json_body(request)
    f = Fields(data, body)
    f.values()
    f.check()
    assert isinstance(data, dict)  # (else f.check() raised)
    return data


def query(request: web.Request) -> Mapping[str, Any]:
    """The query parameters of ``request`` read by the declarations of the route it matched
    (``Route.params``, :class:`ocs.api.schema.Param`): each typed as its schema says, absent
    ones at their default; a parameter the route does not declare, one given twice, or one
    that breaks its schema is an InvalidInput naming it (422). The one code path for every
    route: the error middleware reads them before any handler runs."""
    cached: dict[str, Any] | None = request.get(QUERY)
    if cached is not None:
        return cached
    route = route_of(request)
    params = route.params if route is not None else ()
    declared = {p.name: p for p in params if not p.free_form}
    free = next((p for p in params if p.free_form), None)
    errors: list[FieldError] = []
    values: dict[str, Any] = {p.name: p.default for p in declared.values()}
    rest: dict[str, str] = {}
    for name in dict.fromkeys(request.query):
        given = request.query.getall(name)
        p = declared.get(name)
        if p is None:
            if free is not None:
                rest[name] = given[-1]
                continue
            known = ", ".join(declared) or "none"
            errors.append(FieldError(name, f"is not a query parameter of this route ({known})"))
        elif len(given) > 1:
            errors.append(FieldError(name, "is given more than once"))
        else:
            try:
                values[name] = p.read(given[0])
            except ValueError as exc:
                errors.append(FieldError(name, str(exc)))
    errors += [FieldError(p.name, "is required") for p in declared.values()
               if p.required and p.name not in request.query]  # fmt: skip
    if errors:
        raise InvalidInput(errors)
    if free is not None:
        values[free.name] = rest
    request[QUERY] = values
    return values


def path_msisdn(request: web.Request) -> str:
    msisdn = request.match_info["msisdn"]
    if not MSISDN_RE.fullmatch(msisdn):
        # Cannot exist: it could never have been created.
        raise Answer(unknown_subscriber(msisdn))
    return msisdn


def unknown_subscriber(msisdn: str) -> web.Response:
    return problem(
        HTTPStatus.NOT_FOUND,
        "Unknown subscriber",
        f"no subscriber {msisdn}",
        type_=TYPE_UNKNOWN_SUBSCRIBER,
    )
