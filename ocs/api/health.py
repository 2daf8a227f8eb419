"""Health probes and the Prometheus metrics endpoint."""

from __future__ import annotations

from http import HTTPStatus
from typing import Final

from aiohttp import web

from ocs.api.context import METRICS, STORE
from ocs.api.problems import (
    TYPE_STORE_UNAVAILABLE,
    problem,
)
from ocs.api.routes import Route
from ocs.api.schema import obj
from ocs.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ocs.store.errors import StoreError


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


ROUTES: Final = (
    Route("GET", "/healthz", healthz, "health", "read", public=True,
          answer=obj({"status": {"const": "ok"}})),
    Route("GET", "/readyz", readyz, "health", "read", public=True,
          answer=obj({"status": {"const": "ready"}})),
    Route("GET", "/metrics", serve_metrics, "metrics", "read", media=("text/plain",)),
)  # fmt: skip
