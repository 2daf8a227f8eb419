"""The route table: every HTTP endpoint declared once, with what it needs.

Each :class:`Route` names its handler and the *resource* and *action* it touches (the
vocabulary of the access policy: ``subscribers``/``read``, ``subscribers.topups``/``write``,
...). Subsystems (provisioning, billing, ...) contribute their own lists; ``create_app``
registers them all through :func:`add_routes`, and :func:`route_of` finds the declaration of
the route a request matched, so a middleware can decide what the caller may do without a
second table that could drift from this one.

``public`` routes need no credential (health probes); every other route declares the resource
and action it needs, and a test walks the table to keep it that way.

Who is calling: the authentication middleware puts a :class:`Caller` on the request
(:func:`caller_of`); a handler whose objects belong to an agency filters by ``caller.agency``
(an agency-scoped caller gets a 404 for another agency's objects, never a 403 that reveals
them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from aiohttp import web
from aiohttp.typedefs import Handler

if TYPE_CHECKING:
    from ocs.api.schema import Body, Param

__all__ = ["CALLER", "ROUTES", "Action", "Caller", "Route", "add_routes", "caller_of", "route_of"]

#: What a request does to its resource: ``read`` changes nothing; ``write`` creates, changes
#: or deletes.
Action = Literal["read", "write"]


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint: ``method`` and ``path`` (an aiohttp template) served by ``handler``."""

    method: str
    path: str
    handler: Handler
    #: The policy's resource, dotted from general to specific ("subscribers.topups").
    resource: str
    action: Action
    #: No credential needed (liveness and readiness probes).
    public: bool = False
    #: For the contract (ocs.api.openapi): the JSON body the handler reads by declaration
    #: (ocs.api.schema.Body), or the media type of a body it reads otherwise.
    body: Body | str | None = None
    #: For a JSON body read by another layer (a signed webhook), its JSON Schema.
    request: Mapping[str, object] | None = None
    #: The query parameters it takes: read by these declarations (ocs.api.request.query),
    #: any other is refused.
    params: tuple[Param, ...] = ()
    #: The status and JSON Schema of the success answer (the contract; the tests check every
    #: answer against it).
    status: int = 200
    answer: Mapping[str, object] | None = None
    #: The media types of a success answer that is not JSON ("text/csv"); with neither
    #: ``answer`` nor ``media`` the success answer has no body (204, a redirect).
    media: tuple[str, ...] = ()
    #: Other success statuses with the same answer (a webhook's replay: 200 beside 202).
    also: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated principal of a request."""

    #: Who: "user:<name>", "key:<id>", "bootstrap" (the OCS_ADMIN_TOKEN).
    subject: str
    role: str
    #: The agency code the caller is limited to; None: every agency.
    agency: str | None = None


#: The request key under which the authentication middleware stores the :class:`Caller`.
CALLER: Final = web.RequestKey("ocs.caller", Caller)


#: The app's declarations by (method, route template), as aiohttp canonicalises them.
ROUTES: Final = web.AppKey("ocs.routes", dict[tuple[str, str], Route])


def add_routes(app: web.Application, routes: Iterable[Route]) -> None:
    """Register ``routes`` on ``app`` and remember each declaration for :func:`route_of`."""
    table = app.setdefault(ROUTES, {})
    for route in routes:
        declared = {(r.method, r.path) for r in table.values()}
        if (route.method, route.path) in declared:
            raise ValueError(f"route declared twice: {route.method} {route.path}")
        if route.method == "GET":  # and HEAD, as aiohttp's add_get does
            registered = app.router.add_get(route.path, route.handler)
        else:
            registered = app.router.add_route(route.method, route.path, route.handler)
        resource = registered.resource
        assert resource is not None
        table[(route.method, resource.canonical)] = route


def route_of(request: web.Request) -> Route | None:
    """The declaration of the route ``request`` matched; None when it matched none (404/405)
    or the route was added to the router without a declaration."""
    match = request.match_info.route
    resource = match.resource
    if resource is None:
        return None
    method = "GET" if request.method == "HEAD" else request.method
    return request.app.get(ROUTES, {}).get((method, resource.canonical))


def caller_of(request: web.Request) -> Caller | None:
    """The authenticated caller of ``request``; None where no authentication ran."""
    caller = request.get(CALLER)
    return caller if isinstance(caller, Caller) else None
