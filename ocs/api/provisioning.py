"""``/v1/provisioning``: callbacks of the provisioning system, dead letters, reconciliation."""

from __future__ import annotations

from http import HTTPStatus
from typing import Final

from aiohttp import web

from ocs.api.context import PROVISIONING
from ocs.api.problems import (
    FieldError,
    InvalidInput,
    problem,
)
from ocs.api.request import (
    DEFAULT_PAGE,
    MAX_PAGE,
    STREAM_ID_RE,
    path_msisdn,
    query_int,
    read_body,
    unknown_subscriber,
)
from ocs.api.routes import Route
from ocs.provisioning.service import ProvisioningError


def _provisioning_problem(exc: ProvisioningError) -> web.Response:
    return problem(exc.status, exc.title, exc.detail)


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
    return web.json_response(view)


async def list_dead_letters(request: web.Request) -> web.StreamResponse:
    """``GET /v1/provisioning/dead-letters?limit=&before=``: newest first."""
    limit = query_int(request, "limit", default=DEFAULT_PAGE, maximum=MAX_PAGE)
    before = request.query.get("before")
    if before is not None and STREAM_ID_RE.fullmatch(before) is None:
        raise InvalidInput([FieldError("before", "must be an id such as 1714564800000-0")])
    items = await request.app[PROVISIONING].dead_letters(limit, before)
    return web.json_response({"dead_letters": items})


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
    return web.json_response(job, status=HTTPStatus.ACCEPTED, headers={"Location": location})


async def reconcile_job(request: web.Request) -> web.StreamResponse:
    """``GET /v1/provisioning/reconcile/{id}``: a reconciliation's progress, then result."""
    job_id = request.match_info["id"]
    job = await request.app[PROVISIONING].reconcile_job(job_id)
    if job is None:
        detail = f"no reconciliation job {job_id!r} (unknown, or older than 7 days)"
        return problem(HTTPStatus.NOT_FOUND, "Unknown job", detail)
    return web.json_response(job)


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
