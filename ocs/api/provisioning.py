"""``/v1/provisioning``: callbacks of the provisioning system, dead letters, reconciliation."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Final

from aiohttp import web

from ocs.api.context import PROVISIONING
from ocs.api.problems import (
    FieldError,
    InvalidInput,
    problem,
)
from ocs.api.render import iso_time
from ocs.api.request import (
    STREAM_ID_RE,
    before_id,
    page_size,
    path_msisdn,
    query,
    read_body,
    unknown_subscriber,
)
from ocs.api.routes import Route
from ocs.api.schema import obj
from ocs.provisioning.service import ProvisioningError


def _provisioning_problem(exc: ProvisioningError) -> web.Response:
    return problem(exc.status, exc.title, exc.detail)


def _iso(ms: object) -> str | None:
    """The provisioning system keeps Unix ms; the API shows ISO 8601 UTC, as everywhere."""
    try:
        return iso_time(int(str(ms)))
    except ValueError:
        return None


def _view_json(view: dict[str, Any]) -> dict[str, Any]:
    hlr = dict(view["hlr"])
    hlr["updated"] = _iso(hlr.get("updated", 0))
    history = [{**line, "at": _iso(line.get("at", 0))} for line in view["history"]]
    return {**view, "hlr": hlr, "history": history}


def _job_json(job: dict[str, Any]) -> dict[str, Any]:
    return {**job, **{k: _iso(job.get(k, 0)) for k in ("started_at", "updated_at", "finished_at")}}


def _dead_letter_json(item: dict[str, Any]) -> dict[str, Any]:
    # When it failed for good: the stream entry's id is "<Unix ms>-<seq>".
    return {**item, "at": _iso(str(item["id"]).partition("-")[0])}


async def provisioning_callback(request: web.Request) -> web.StreamResponse:
    """``POST /v1/provisioning/callbacks``: a signed confirmation or rejection of a command
    the provisioning system accepted (202). A bad signature: 401, and nothing changes."""
    try:
        body = await read_body(request)
        result = await request.app[PROVISIONING].callback(body, request.headers)
    except ProvisioningError as exc:
        return _provisioning_problem(exc)
    return web.json_response(result)


async def subscriber_provisioning(request: web.Request) -> web.StreamResponse:
    """``GET /v1/subscribers/{msisdn}/provisioning``: desired and confirmed barring, history."""
    msisdn = path_msisdn(request)
    view = await request.app[PROVISIONING].view(msisdn)
    if view is None:
        return unknown_subscriber(msisdn)
    return web.json_response(_view_json(view))


async def list_dead_letters(request: web.Request) -> web.StreamResponse:
    """``GET /v1/provisioning/dead-letters?limit=&before=``: newest first."""
    q = query(request)
    items = await request.app[PROVISIONING].dead_letters(q["limit"], q["before"])
    return web.json_response({"dead_letters": [_dead_letter_json(i) for i in items]})


async def replay_dead_letter(request: web.Request) -> web.StreamResponse:
    """``POST /v1/provisioning/dead-letters/{id}/replay``: queue it again (202)."""
    if STREAM_ID_RE.fullmatch(request.match_info["id"]) is None:
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
    return web.json_response(
        _job_json(job), status=HTTPStatus.ACCEPTED, headers={"Location": location}
    )


async def reconcile_job(request: web.Request) -> web.StreamResponse:
    """``GET /v1/provisioning/reconcile/{id}``: a reconciliation's progress, then result."""
    job_id = request.match_info["id"]
    job = await request.app[PROVISIONING].reconcile_job(job_id)
    if job is None:
        detail = f"no reconciliation job {job_id!r} (unknown, or older than 7 days)"
        return problem(HTTPStatus.NOT_FOUND, "Unknown job", detail)
    return web.json_response(_job_json(job))


_S: Final[dict[str, object]] = {"type": "string"}
_TIME: Final[dict[str, object]] = {"type": ["string", "null"], "format": "date-time"}
_BARRING: Final[dict[str, object]] = {"type": "string", "enum": ["none", "outgoing", "all"]}
_HISTORY_LINE: Final = {
    "type": "object",
    "properties": {
        "at": _TIME,
        "command": _S,
        "barring": _BARRING,
        "seq": {"type": "integer"},
        "reason": _S,
        "result": {"type": "string", "enum": ["applied", "accepted", "error", "rejected",
                                              "dead-lettered", "confirmed"]},
        "detail": _S,
    },
    "required": ["at", "result"],
}  # fmt: skip
VIEW_SCHEMA: Final = {
    "type": "object",
    "properties": {
        "msisdn": _S,
        "desired": _BARRING,
        "state": _S,
        "barred_by_balance": _BARRING,
        "hlr": {
            "type": "object",
            "properties": {"confirmed": _BARRING, "status": _S, "command": _S, "detail": _S,
                           "updated": _TIME},
            "required": ["confirmed", "status", "command", "detail", "updated"],
            "additionalProperties": False,
        },
        "in_sync": {"type": "boolean"},
        "history": {"type": "array", "items": _HISTORY_LINE},
    },
    "required": ["msisdn", "desired", "state", "barred_by_balance", "hlr", "in_sync", "history"],
    "additionalProperties": False,
}  # fmt: skip
DEAD_LETTERS_SCHEMA: Final = {
    "type": "object",
    "properties": {
        "dead_letters": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"id": _S, "at": _TIME, "kind": _S, "sub": _S, "reason": _S,
                               "attempts": _S},
                "required": ["id", "at", "kind", "reason"],
            },
        }
    },
    "required": ["dead_letters"],
    "additionalProperties": False,
}  # fmt: skip
_COUNT: Final[dict[str, object]] = {"type": "integer", "minimum": 0}
JOB_SCHEMA: Final = {
    "type": "object",
    "properties": {
        "id": _S,
        "state": {"type": "string", "enum": ["running", "done", "failed"]},
        "started_at": _TIME, "updated_at": _TIME, "finished_at": _TIME,
        "checked": _COUNT, "resent": _COUNT, "unknown_to_hlr": _COUNT, "failures": _COUNT,
        "differing": {"type": "array", "items": {
            "type": "object", "properties": {"msisdn": _S, "desired": _BARRING, "hlr": _BARRING}}},
        "failed": {"type": "array", "items": {
            "type": "object", "properties": {"msisdn": _S, "error": _S}}},
        "detail": _S,
    },
    "required": ["id", "state", "started_at", "updated_at", "finished_at", "checked", "resent",
                 "unknown_to_hlr", "failures", "differing", "failed", "detail"],
    "additionalProperties": False,
}  # fmt: skip
_OUTCOME: Final[dict[str, object]] = {"type": "string", "enum": ["applied", "rejected"]}
#: What the provisioning system posts (signed: X-OCS-Timestamp, X-OCS-Signature over the
#: bytes; read by ocs.provisioning.service).
CALLBACK_SCHEMA: Final = obj(
    {"command_id": {"type": "string", "minLength": 1}, "status": _OUTCOME, "reason": _S,
     "detail": _S},
    optional=("reason", "detail"), closed=False,
)  # fmt: skip
_PAGE: Final = (
    page_size("limit"),
    before_id("the id to page from (the last one of the previous page)"),
)


#: Present when the OCS runs with a provisioning system.
ROUTES: Final = (
    # Signed by the provisioning system (HMAC over timestamp and body): that signature is
    # its credential (checked by the handler), not a bearer token.
    Route(
        "POST",
        "/v1/provisioning/callbacks",
        provisioning_callback,
        "provisioning.callbacks",
        "write",
        public=True,
        request=CALLBACK_SCHEMA,
        answer=obj({"command_id": _S, "status": _OUTCOME}),
    ),
    Route(
        "GET",
        "/v1/provisioning/dead-letters",
        list_dead_letters,
        "provisioning.dead-letters",
        "read",
        params=_PAGE,
        answer=DEAD_LETTERS_SCHEMA,
    ),
    Route(
        "POST",
        "/v1/provisioning/dead-letters/{id}/replay",
        replay_dead_letter,
        "provisioning.dead-letters",
        "write",
        status=HTTPStatus.ACCEPTED,
        answer=obj({"replayed": _S, "queued": _S}),
    ),
    Route(
        "POST",
        "/v1/provisioning/reconcile",
        reconcile,
        "provisioning.reconcile",
        "write",
        status=HTTPStatus.ACCEPTED,
        answer=JOB_SCHEMA,
    ),
    Route(
        "GET",
        "/v1/provisioning/reconcile/{id}",
        reconcile_job,
        "provisioning.reconcile",
        "read",
        answer=JOB_SCHEMA,
    ),
    Route(
        "GET",
        "/v1/subscribers/{msisdn}/provisioning",
        subscriber_provisioning,
        "subscribers.provisioning",
        "read",
        answer=VIEW_SCHEMA,
    ),
)
