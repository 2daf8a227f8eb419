"""Every error a handler raises becomes a problem document; requests under /v1/ are counted."""

from __future__ import annotations

import logging
import time
from http import HTTPStatus
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

from ocs.api.context import METRICS
from ocs.api.problems import (
    TYPE_STORE_UNAVAILABLE,
    InvalidInput,
    invalid_input,
    problem,
)
from ocs.api.request import Answer, query
from ocs.api.routes import route_of
from ocs.logs import redis_lost
from ocs.store.errors import StoreUnavailable

log = logging.getLogger(__name__)

#: nginx's "client closed request": the client went away before its answer.
CLIENT_CLOSED_REQUEST: Final = 499


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
    """Check the query by the route's declarations, run the handler; turn every error they
    raise into a problem response."""
    try:
        if route_of(request) is not None:
            query(request)  # every route: an undeclared or ill-typed parameter is a 422
        return await handler(request)
    except Answer as answer:
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
async def errors_and_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
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
