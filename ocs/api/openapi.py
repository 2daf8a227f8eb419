"""The OpenAPI 3.1 contract of the HTTP API, generated from the route table.

Every declared route of the app (:data:`ocs.api.routes.ROUTES`: the core API, provisioning,
authentication, billing, the dashboard and whatever a subsystem adds) becomes an operation:
its path parameters from the template, its request body from the :class:`~ocs.api.schema.Body`
the handler reads its fields by (so the schema is the validation's own declaration), its query
parameters from the :class:`~ocs.api.schema.Param` declarations :func:`ocs.api.request.query`
reads them by, its success answer (JSON Schema, media type, or none), the bearer-token
requirement unless the route is public, and the problem document (RFC 9457) every error
answer is. The tests check every answer they receive against this document
(tests/contract.py).

Served at ``GET /openapi.json``; ``GET /docs`` is a small self-contained page listing the
operations (no script from a CDN).
"""

from __future__ import annotations

import html
import re
from typing import Final

from aiohttp import web

from ocs.api.routes import ROUTES, Route
from ocs.api.schema import JSON, Body, obj

__all__ = ["PROBLEM", "ROUTES_OF_CONTRACT", "openapi", "routes"]

#: An RFC 9457 problem document as :mod:`ocs.api.problems` writes it.
PROBLEM: Final[JSON] = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "field": {"type": "string", "description": "the first bad field (422)"},
        "errors": {
            "type": "array",
            "description": "invalid input: each bad field and what is wrong with it; an "
            "invalid tariff plan: each problem as the plan loader wrote it",
            "items": {
                "oneOf": [
                    {
                        "type": "object",
                        "properties": {"field": {"type": "string"}, "detail": {"type": "string"}},
                        "required": ["field", "detail"],
                        "additionalProperties": False,
                    },
                    {"type": "string"},
                ]
            },
        },
    },
    "required": ["type", "title", "status"],
}
_PROBLEM_REF: Final[JSON] = {
    "description": "a problem document (RFC 9457)",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}
#: "{name}" or "{name:regex}" in an aiohttp route template.
_PARAM_RE: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([^{}]*(?:\{[^{}]*\}[^{}]*)*))?\}")
_ALTERNATIVES_RE: Final = re.compile(r"[A-Za-z0-9_-]+(\|[A-Za-z0-9_-]+)+")


def _template(path: str) -> tuple[str, list[JSON]]:
    """The OpenAPI path ("{name}" without regexes) and its path parameters."""
    params: list[JSON] = []

    def one(m: re.Match[str]) -> str:
        schema: JSON = {"type": "string"}
        regex = m[2]
        if regex and _ALTERNATIVES_RE.fullmatch(regex):
            schema["enum"] = regex.split("|")
        elif regex:
            schema["pattern"] = f"^{regex}$"
        params.append({"name": m[1], "in": "path", "required": True, "schema": schema})
        return "{" + m[1] + "}"

    return _PARAM_RE.sub(one, path), params


def _operation_id(route: Route, path: str) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_")
    return f"{route.method.lower()}_{words}"


def _operation(route: Route, path: str, path_params: list[JSON], schemas: dict[str, JSON]) -> JSON:
    doc = (route.handler.__doc__ or "").strip()
    summary = doc.split("\n\n")[0].replace("\n", " ")
    op: JSON = {
        "operationId": _operation_id(route, path),
        "summary": summary[:200] or f"{route.method} {path}",
        "tags": [route.resource.split(".")[0]],
        "x-ocs-resource": route.resource,
        "x-ocs-action": route.action,
        "security": [] if route.public else [{"bearer": []}],
    }
    if len(summary) > 200 or "\n\n" in doc:
        op["description"] = doc
    params = list(path_params)
    params += [p.openapi() for p in route.params]
    if params:
        op["parameters"] = params
    if isinstance(route.body, Body):
        schemas[route.body.name] = route.body.schema()
        ref = {"$ref": f"#/components/schemas/{route.body.name}"}
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref}}}
    elif isinstance(route.body, str):
        media = {"schema": {"type": "string"}}
        op["requestBody"] = {"required": True, "content": {route.body: media}}
    elif route.request is not None:
        # A body another layer reads (a signed webhook: the signature covers the bytes).
        content = {"application/json": {"schema": dict(route.request)}}
        op["requestBody"] = {"required": True, "content": content}
    ok: JSON = {"description": "success" if route.answer or route.media else "no content"}
    content = {}
    if route.answer is not None:
        content["application/json"] = {"schema": dict(route.answer)}
    for media_type in route.media:
        content[media_type] = {"schema": {"type": "string"}}
    if content:
        ok["content"] = content
    responses: JSON = {str(status): ok for status in (route.status, *route.also)}
    op["responses"] = responses | {"4XX": _PROBLEM_REF, "5XX": _PROBLEM_REF}
    return op


def openapi(app: web.Application, *, title: str = "OCS HTTP API", version: str = "1") -> JSON:
    """The OpenAPI 3.1 document of every route declared on ``app``."""
    paths: dict[str, JSON] = {}
    schemas: dict[str, JSON] = {"Problem": PROBLEM}
    for route in routes(app):
        path, path_params = _template(route.path)
        item = paths.setdefault(path, {})
        item[route.method.lower()] = _operation(route, path, path_params, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "Money is a decimal string (at most 6 decimals, ASCII digits), never "
            "a number with a fraction; times are RFC 3339 / ISO 8601 UTC; every error is a "
            "problem document (RFC 9457). See docs/api.md.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an API key, a user's access token (POST /v1/auth/token) "
                    "or the bootstrap OCS_ADMIN_TOKEN",
                }
            },
        },
    }


def routes(app: web.Application) -> list[Route]:
    """The declared routes of ``app``, in declaration order."""
    return list(app.get(ROUTES, {}).values())


async def serve_openapi(request: web.Request) -> web.StreamResponse:
    """``GET /openapi.json``: this API's OpenAPI 3.1 contract."""
    return web.json_response(openapi(request.app))


async def serve_docs(request: web.Request) -> web.StreamResponse:
    """``GET /docs``: the contract's operations as a page (self-contained, no scripts)."""
    spec = openapi(request.app)
    rows = []
    for path, item in spec["paths"].items():  # type: ignore[attr-defined]
        for method, op in item.items():
            lock = "" if op["security"] else " (public)"
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}"
                f"</code></td><td>{html.escape(op['summary'])}{lock}</td></tr>"
            )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>OCS HTTP API</title>"
        "<style>body{font-family:sans-serif;margin:2em}td{padding:2px 8px;"
        "vertical-align:top}code{white-space:nowrap}</style></head><body>"
        "<h1>OCS HTTP API</h1><p>The full contract: <a href='/openapi.json'>/openapi.json"
        "</a> (OpenAPI 3.1). See docs/api.md.</p><table>" + "".join(rows) + "</table>"
        "</body></html>"
    )
    return web.Response(text=page, content_type="text/html")


#: The contract's own routes: public, like the probes (a client needs the contract before
#: it has a token).
_DOCUMENT: Final = obj(
    {"openapi": {"const": "3.1.0"}, "info": {"type": "object"}, "paths": {"type": "object"},
     "components": {"type": "object"}}
)  # fmt: skip
ROUTES_OF_CONTRACT: Final = (
    Route("GET", "/openapi.json", serve_openapi, "docs", "read", public=True, answer=_DOCUMENT),
    Route("GET", "/docs", serve_docs, "docs", "read", public=True, media=("text/html",)),
)
