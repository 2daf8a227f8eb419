"""``/v1/dashboard/...`` and ``/ui/``: the aggregates the dashboard's pages read, its live feed
(server-sent events), and the pages themselves (docs/dashboard.md).

Every dashboard route declares the resource ``dashboard`` (read); an agency-scoped caller
sees its own agency and its accounts only, and gets 404 for anything else (the national and
regional levels included: their sums would reveal other agencies'). The pages are public
static files: everything they show comes from the API with the caller's token.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from sqlalchemy import Engine

from ocs.api.problems import problem
from ocs.api.render import iso_time
from ocs.api.request import query
from ocs.api.routes import Route, caller_of
from ocs.billing.api import billing_errors
from ocs.money import format_money
from ocs.store.store import Store
from ocs.ui import api_schema as D
from ocs.ui.figures import MONEY, AggregateCache, Unit, scope_figures
from ocs.ui.live import LiveFeed, Message

__all__ = ["STATIC", "DashboardApi"]

STATIC: Final = Path(str(resources.files("ocs.ui") / "static"))
#: Recent events shown per line on the account page.
RECENT_EVENTS: Final = 10
#: Seconds between SSE comments that keep an idle connection (and its proxies) open.
KEEPALIVE: Final = 15.0
_TYPES: Final = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".txt": "text/plain",
}


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def _unit_json(u: Unit) -> dict[str, str]:
    return {"level": u.level, "code": u.code, "name": u.name}


def _money(figures: dict[str, int]) -> dict[str, Any]:
    return {**{k: format_money(v) for k, v in figures.items()}, "micro": dict(figures)}


class DashboardApi:
    """The dashboard's routes over the billing ``engine``, the balance ``store`` and ``feed``."""

    def __init__(
        self,
        engine: Engine,
        store: Store,
        feed: LiveFeed,
        *,
        clock: Callable[[], int] = _now_ms,
        static: Path = STATIC,
    ) -> None:
        self.engine = engine
        self.store = store
        self.feed = feed
        self.clock = clock
        self.static = static.resolve()
        self.aggregates = AggregateCache(engine)

    def routes(self) -> list[Route]:
        lv = "{level:national|region|agency|account}"
        return [
            Route("GET", "/v1/dashboard", self._h(self.home), "dashboard", "read",
                  answer=D.HOME),
            Route("GET", f"/v1/dashboard/{lv}/{{code}}", self._h(self.scope), "dashboard",
                  "read", params=D.SCOPE_QUERY, answer=D.SCOPE),
            Route("GET", "/v1/dashboard/accounts/{code}/lines", self._h(self.account_lines),
                  "dashboard", "read", answer=D.LINES),
            Route("GET", "/v1/dashboard/live", self.live, "dashboard", "read",
                  media=("text/event-stream",)),
            Route("GET", "/ui", self.page_redirect, "ui", "read", public=True,
                  params=D.PAGE_QUERY, status=HTTPStatus.FOUND),
            Route("GET", "/ui/{path:.*}", self.page, "ui", "read", public=True,
                  params=D.PAGE_QUERY, media=D.PAGE_MEDIA),
        ]  # fmt: skip

    def _h(
        self, fn: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def ready_first(request: web.Request) -> web.StreamResponse:
            await self.feed.ready.wait()  # (the hierarchy is loaded)
            return await fn(request)

        ready_first.__name__, ready_first.__doc__ = fn.__name__, fn.__doc__
        return billing_errors(ready_first)

    @staticmethod
    def _agency(request: web.Request) -> str | None:
        caller = caller_of(request)
        return caller.agency if caller is not None else None

    def _period(self, request: web.Request) -> tuple[str, str | None]:
        q = query(request)
        now = datetime.fromtimestamp(self.clock() / 1000, UTC)
        return q["period"] or f"{now.year:04d}-{now.month:02d}", q["service"]

    # -- aggregates ------------------------------------------------------------------------

    async def home(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/dashboard``: where the caller's dashboard starts (the national unit, or
        the caller's agency), and the services usage is recorded under."""
        agency = self._agency(request)
        h = self.feed.hierarchy
        if agency is not None:
            start = [_unit_json(h.unit("agency", agency, agency))]
        else:
            start = [_unit_json(u) for (lv, _), u in sorted(h.units.items()) if lv == "national"]
        return web.json_response({"start": start, "agency": agency})

    async def scope(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/dashboard/{level}/{code}?period=YYYY-MM&service=``: the KPIs of the scope,
        its usage by day and its children."""
        level, code = request.match_info["level"], request.match_info["code"]
        agency = self._agency(request)
        period, service = self._period(request)
        h = self.feed.hierarchy
        u = h.unit(level, code, agency)
        out = await asyncio.to_thread(
            scope_figures,
            self.engine,
            self.aggregates,
            h,
            level,
            code,
            period,
            service=service,
            agency=agency,
        )
        live = self.feed.unit_live(level, code)
        figures = {**out["figures"], "period_usage": out["period_usage"], "held": live["held"]}
        last = self.feed.last
        tick = self.feed.tick
        body = {
            **_unit_json(u),
            "period": period,
            "service": service,
            "currency": "EUR",
            # An agency's user starts at its agency (the levels above are not its to open).
            "breadcrumb": [
                _unit_json(x) for x in h.path(u) if agency is None or x.agency == agency
            ],
            "kpis": {
                **_money(figures),
                "usage_by_service": _money(out["usage_by_service"]),
                "accounts": out["accounts"],
                "active_lines": live["lines"],
                "open_sessions": live["sessions"],
                "barred_lines": live["barred"],
                # The OCS process's own counters: per process, not per unit.
                "requests_per_s": None if agency else round(last["requests"] / tick, 1),
                "refusals_per_s": None if agency else round(last["refusals"] / tick, 1),
            },
            "by_day": [
                {"day": d["day"], "usage": format_money(d["usage"]), "micro": d["usage"]}
                for d in out["by_day"]
            ],
            "children": [
                {
                    **{k: c[k] for k in ("level", "code", "name", "accounts", "lines")},
                    **_money({m: c[m] for m in (*MONEY, "period_usage")}),
                    **{
                        k: v
                        for k, v in self.feed.unit_live(c["level"], c["code"]).items()
                        if k != "lines"
                    },
                }
                for c in out["children"]
            ],
        }
        return web.json_response(body)

    async def account_lines(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/dashboard/accounts/{code}/lines``: each line's balance, state, barring,
        open sessions and recent events, as the balance store has them now."""
        code = request.match_info["code"]
        h = self.feed.hierarchy
        h.unit("account", code, self._agency(request))
        msisdns = sorted(h.lines.get(code, []))
        accounts = await asyncio.gather(*(self.store.get_account(m) for m in msisdns))
        events = await asyncio.gather(
            *(self.store.events(m, limit=RECENT_EVENTS, scan_max=20_000) for m in msisdns)
        )
        items = []
        for m, a, evs in zip(msisdns, accounts, events, strict=True):
            if a is None:
                items.append({"msisdn": m, "known": False})
                continue
            items.append(
                {
                    "msisdn": m,
                    "known": True,
                    "plan": a.plan,
                    "state": a.state,
                    "barring": a.barring,
                    "balance": format_money(a.balance),
                    "reserved": format_money(a.reserved),
                    "credit_limit": format_money(a.credit_limit),
                    "available": format_money(a.available),
                    "micro": {"balance": a.balance, "reserved": a.reserved,
                              "credit_limit": a.credit_limit, "available": a.available},
                    "sessions": [
                        {"session_id": s.session_id, "service": s.service,
                         "held": format_money(s.held_money), "used": s.used,
                         "started_at": iso_time(s.started_at),
                         "expires_at": iso_time(s.expires_at)}
                        for s in a.sessions
                    ],
                    "events": [{"id": e.id, **e.fields} for e in evs],
                }
            )  # fmt: skip
        return web.json_response({"account": code, "items": items})

    # -- live --------------------------------------------------------------------------------

    async def live(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/dashboard/live``: server-sent events, one ``figures`` event per tick with
        the units and lines that changed (only the caller's agency's, for a scoped caller)."""
        agency = self._agency(request)
        await self.feed.ready.wait()
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        q = self.feed.listen()
        try:
            await resp.prepare(request)
            await resp.write(b": live\n\n")
            while True:
                try:
                    msg = await asyncio.wait_for(q.get(), KEEPALIVE)
                except TimeoutError:
                    await resp.write(b": keepalive\n\n")
                    continue
                text = msg.text if agency is None else self._scoped(msg, agency)
                await resp.write(b"event: figures\ndata: " + text.encode() + b"\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.feed.unlisten(q)
        return resp

    def _scoped(self, msg: Message, agency: str) -> str:
        h = self.feed.hierarchy
        accounts = h.children.get(("agency", agency), [])
        mine = {f"agency:{agency}", *(f"account:{a}" for a in accounts)}
        lines = {m for a in accounts for m in h.lines.get(a, [])}
        d = msg.data
        out = {
            "ts": d["ts"],
            "tick_ms": d["tick_ms"],
            "requests": None,
            "refusals": None,
            "units": {k: v for k, v in d["units"].items() if k in mine},
            "lines": {k: v for k, v in d["lines"].items() if k in lines},
            "bars": [b for b in d["bars"] if b["msisdn"] in lines],
        }
        return json.dumps(out, separators=(",", ":"))

    # -- the pages -----------------------------------------------------------------------------

    async def page_redirect(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/ui/")

    async def page(self, request: web.Request) -> web.StreamResponse:
        """``GET /ui/...``: the static files; any path that is not a file is the app's page
        (its router reads the path), so a bookmarked view loads."""
        rel = request.match_info["path"]
        target = (self.static / rel).resolve() if rel else self.static / "index.html"
        if not target.is_relative_to(self.static) or not target.is_file():
            if "." in rel.rsplit("/", 1)[-1]:
                return problem(HTTPStatus.NOT_FOUND, detail=f"no file {rel!r}")
            target = self.static / "index.html"
        ctype = _TYPES.get(target.suffix, "application/octet-stream")
        cache = "no-cache" if target.suffix == ".html" else "public, max-age=3600"
        return web.FileResponse(target, headers={"Content-Type": ctype, "Cache-Control": cache})
