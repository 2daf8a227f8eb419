"""``/v1/billing/...``: the HTTP face of enterprise billing (docs/billing.md lists every route
with the resource and action it declares and the role expected to need it).

Handlers run the billing functions (blocking SQLAlchemy) in a thread. Every read and write of
an agency's objects is scoped by the caller's agency (:func:`ocs.api.routes.caller_of`): an
agency-scoped caller gets 404 for another agency's objects. Errors are problem+json.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from functools import partial
from http import HTTPStatus
from pathlib import Path
from typing import Any, Final, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from ocs.api.problems import FieldError, InvalidInput, invalid_input, problem
from ocs.api.request import Answer, checked_json, query, read_fields
from ocs.api.routes import Action, Route, caller_of
from ocs.billing import api_schema as A
from ocs.billing import exports, feeds, runs
from ocs.billing import model as M
from ocs.billing.errors import BillingError, Invalid
from ocs.billing.lineage import http_download, invoice_exported
from ocs.lineage import Lineage
from ocs.provisioning.signing import SignatureError, verify

T = TypeVar("T")
DEFAULT_PAGE: Final = 100
MAX_PAGE: Final = 1000
#: Largest feed webhook body (bytes).
MAX_FEED_BODY: Final = 4 * 1024 * 1024


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def billing_problem(exc: BillingError) -> web.Response:
    if isinstance(exc, Invalid):
        return invalid_input(exc.errors)
    return problem(exc.status, detail=str(exc), type_=exc.type_)


def billing_errors(
    fn: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """``fn`` answering billing's errors as problem+json (and a 503 when its database
    cannot answer); the handlers of the billing data (billing's own, the dashboard's)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            return await fn(request)
        except BillingError as exc:
            return billing_problem(exc)
        except InvalidInput as exc:  # a body or query that breaks its declaration
            return invalid_input(exc.errors)
        except Answer as exc:  # (malformed JSON, a body too slow)
            return exc.response
        except SQLAlchemyError:
            return problem(
                HTTPStatus.SERVICE_UNAVAILABLE,
                detail="the billing database cannot answer now; retry later",
                type_="urn:ocs:problem:billing-store-unavailable",
            )

    handler.__name__ = fn.__name__
    handler.__doc__ = fn.__doc__
    return handler


class BillingApi:
    """The billing routes over ``engine``; ``feed_secret`` signs the feeds' webhooks."""

    def __init__(
        self,
        engine: Engine,
        *,
        feed_secret: str = "",
        warehouse_dir: str | Path = ".ocs/warehouse",
        clock: Callable[[], int] = _now_ms,
        lineage: Lineage | None = None,
    ) -> None:
        self.engine = engine
        self.feed_secret = feed_secret
        self.warehouse_dir = Path(warehouse_dir)
        self.clock = clock
        #: OpenLineage records of the exports (the Parquet dataset, PDF and CSV downloads).
        self.lineage = lineage

    # -- plumbing ----------------------------------------------------------------------------

    async def _db(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        return await asyncio.to_thread(partial(fn, *args, **kw))

    async def _tx(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` in one transaction."""

        def work() -> T:
            with self.engine.begin() as conn:
                return fn(conn, *args)

        return await asyncio.to_thread(work)

    @staticmethod
    def _scope(request: web.Request) -> str | None:
        caller = caller_of(request)
        return caller.agency if caller is not None else None

    @staticmethod
    def _page(request: web.Request) -> tuple[int, int]:
        q = query(request)
        return q["offset"], q["limit"]

    def _h(
        self, fn: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        return billing_errors(fn)

    def routes(self) -> list[Route]:
        """Every billing endpoint; GET reads, every other method writes."""
        lv = "{level:national|region|agency}"
        acc = "/accounts/{code}"
        inv = "/invoices/{ref}"
        gone = HTTPStatus.NO_CONTENT
        made = HTTPStatus.CREATED

        def r(method: str, path: str, fn: Handler, resource: str, **kw: Any) -> Route:
            action: Action = "read" if method == "GET" else "write"
            return Route(method, f"/v1/billing{path}", self._h(fn), resource, action, **kw)

        return [
            r("GET", f"/hierarchy/{lv}", self.list_orgs, "billing.hierarchy",
              params=A.PAGE, answer=A.page(A.ORG_OUT)),
            r("POST", f"/hierarchy/{lv}", self.create_org, "billing.hierarchy",
              body=A.ORG, status=made, answer=A.ORG_OUT),
            r("GET", f"/hierarchy/{lv}/{{code}}", self.get_org, "billing.hierarchy",
              answer=A.ORG_OUT),
            r("PATCH", f"/hierarchy/{lv}/{{code}}", self.update_org, "billing.hierarchy",
              body=A.ORG_UPDATE, answer=A.ORG_OUT),
            r("DELETE", f"/hierarchy/{lv}/{{code}}", self.delete_org, "billing.hierarchy",
              status=gone),
            r("GET", "/accounts", self.list_accounts, "billing.hierarchy",
              params=A.ACCOUNTS_QUERY, answer=A.page(A.ACCOUNT_OUT)),
            r("POST", "/accounts", self.create_account, "billing.hierarchy",
              body=A.ACCOUNT, status=made, answer=A.ACCOUNT_OUT),
            r("GET", acc, self.get_account, "billing.hierarchy", answer=A.ACCOUNT_OUT),
            r("PATCH", acc, self.update_account, "billing.hierarchy",
              body=A.ACCOUNT_UPDATE, answer=A.ACCOUNT_OUT),
            r("DELETE", acc, self.delete_account, "billing.hierarchy", status=gone),
            r("POST", f"{acc}/lines", self.assign_line, "billing.hierarchy",
              body=A.LINE, status=made, answer=A.LINE_OUT),
            r("DELETE", f"{acc}/lines/{{msisdn}}", self.end_line, "billing.hierarchy",
              params=A.END_LINE_QUERY, status=gone),
            r("PUT", f"{acc}/services/{{service}}", self.put_service, "billing.contracts",
              body=A.SERVICE, answer=A.SERVICE_OUT),
            r("DELETE", f"{acc}/services/{{service}}", self.delete_service, "billing.contracts",
              status=gone),
            r("GET", f"{acc}/contract", self.get_contract, "billing.contracts",
              answer=A.CONTRACT_VIEW),
            r("PUT", f"{acc}/contract", self.put_contract, "billing.contracts",
              body=A.CONTRACT, answer=A.CONTRACT_OUT),
            r("GET", "/tax-profiles", self.list_tax, "billing.contracts", answer=A.TAX_LIST),
            r("PUT", "/tax-profiles/{code}", self.put_tax, "billing.contracts",
              body=A.TAX, answer=A.TAX_OUT),
            r("GET", f"{acc}/pending", self.pending, "billing.pending", answer=A.PENDING_OUT),
            r("POST", "/feeds/{feed:orders|tickets}", self.feed, "billing.feeds",
              request=A.FEED_SCHEMA, status=HTTPStatus.ACCEPTED, also=(HTTPStatus.OK,),
              answer=A.FEED_OUT),
            r("GET", "/feeds/{feed:orders|tickets}/{id}", self.feed_history, "billing.feeds",
              answer=A.FEED_HISTORY),
            r("POST", "/runs", self.run, "billing.runs", body=A.RUN, answer=A.RUN_OUT),
            r("POST", "/runs/issue", self.issue, "billing.invoices", body=A.RUN,
              answer=A.ISSUE_OUT),
            r("POST", "/exports/{period}", self.export, "billing.runs", answer=A.EXPORT_OUT),
            r("GET", "/invoices", self.list_invoices, "billing.invoices",
              params=A.INVOICES_QUERY, answer=A.INVOICE_LIST),
            r("GET", inv, self.get_invoice, "billing.invoices", answer=A.INVOICE_OUT),
            r("GET", f"{inv}/pdf", self.invoice_pdf, "billing.invoices",
              media=("application/pdf",)),
            r("GET", f"{inv}/csv", self.invoice_csv, "billing.invoices", media=("text/csv",)),
            r("GET", f"{inv}/lines/{{seq:\\d+}}/explain", self.explain, "billing.invoices",
              answer=A.EXPLAIN_OUT),
            r("POST", f"{inv}/notes", self.note, "billing.notes", body=A.NOTE, status=made,
              answer=A.INVOICE_OUT),
            r("GET", "/aggregates", self.aggregates, "billing.aggregates",
              params=A.AGGREGATES_QUERY, answer=A.page(A.AGGREGATE)),
        ]  # fmt: skip

    # -- hierarchy ---------------------------------------------------------------------------

    async def list_orgs(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/billing/hierarchy/{level}?offset=&limit=``"""
        offset, limit = self._page(request)
        items = await self._tx(
            M.list_orgs, request.match_info["level"], self._scope(request), offset, limit
        )
        return web.json_response({"items": items, "offset": offset, "limit": limit})

    async def create_org(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/billing/hierarchy/{level}`` ``{code, name, parent}`` (201)"""
        if self._scope(request) is not None:
            raise Invalid([FieldError("level", "an agency-scoped caller cannot add units")])
        body = await checked_json(request, A.ORG)
        out = await self._tx(M.create_org, request.match_info["level"], body)
        return web.json_response(out, status=HTTPStatus.CREATED)

    async def get_org(self, request: web.Request) -> web.StreamResponse:
        m = request.match_info
        return web.json_response(
            await self._tx(M.get_org, m["level"], m["code"], self._scope(request))
        )

    async def update_org(self, request: web.Request) -> web.StreamResponse:
        m = request.match_info
        body = await checked_json(request, A.ORG_UPDATE)
        return web.json_response(
            await self._tx(M.update_org, m["level"], m["code"], body, self._scope(request))
        )

    async def delete_org(self, request: web.Request) -> web.StreamResponse:
        m = request.match_info
        await self._tx(M.delete_org, m["level"], m["code"], self._scope(request))
        return web.Response(status=HTTPStatus.NO_CONTENT)

    async def list_accounts(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/billing/accounts?agency=&offset=&limit=``"""
        offset, limit = self._page(request)
        scope = self._scope(request)
        agency = query(request)["agency"]

        def work(conn: Any) -> list[dict[str, Any]]:
            found = M.accounts(conn, scope)
            if agency:
                found = [a for a in found if a.agency == agency]
            return [M.account_json(conn, a) for a in found[offset : offset + limit]]

        items = await self._tx(work)
        return web.json_response({"items": items, "offset": offset, "limit": limit})

    async def create_account(self, request: web.Request) -> web.StreamResponse:
        body = await checked_json(request, A.ACCOUNT)
        out = await self._tx(M.create_account, body, self._scope(request))
        return web.json_response(out, status=HTTPStatus.CREATED)

    async def get_account(self, request: web.Request) -> web.StreamResponse:
        code, scope = request.match_info["code"], self._scope(request)
        out = await self._tx(lambda c: M.account_json(c, M.account_info(c, code, scope)))
        return web.json_response(out)

    async def update_account(self, request: web.Request) -> web.StreamResponse:
        body = await checked_json(request, A.ACCOUNT_UPDATE)
        return web.json_response(
            await self._tx(M.update_account, request.match_info["code"], body, self._scope(request))
        )

    async def delete_account(self, request: web.Request) -> web.StreamResponse:
        await self._tx(M.delete_account, request.match_info["code"], self._scope(request))
        return web.Response(status=HTTPStatus.NO_CONTENT)

    async def assign_line(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/billing/accounts/{code}/lines`` ``{msisdn, valid_from}`` (Unix ms)"""
        body = await checked_json(request, A.LINE)
        out = await self._tx(M.assign_line, request.match_info["code"], body, self._scope(request))
        return web.json_response(out, status=HTTPStatus.CREATED)

    async def end_line(self, request: web.Request) -> web.StreamResponse:
        """``DELETE /v1/billing/accounts/{code}/lines/{msisdn}?at=`` (Unix ms; default now)"""
        at = query(request)["at"]
        at = self.clock() if at is None else at
        m = request.match_info
        await self._tx(M.end_line, m["code"], m["msisdn"], at, self._scope(request))
        return web.Response(status=HTTPStatus.NO_CONTENT)

    async def put_service(self, request: web.Request) -> web.StreamResponse:
        m = request.match_info
        body = await checked_json(request, A.SERVICE)
        return web.json_response(
            await self._tx(M.put_service, m["code"], m["service"], body, self._scope(request))
        )

    async def delete_service(self, request: web.Request) -> web.StreamResponse:
        m = request.match_info
        await self._tx(M.delete_service, m["code"], m["service"], self._scope(request))
        return web.Response(status=HTTPStatus.NO_CONTENT)

    async def get_contract(self, request: web.Request) -> web.StreamResponse:
        code, scope = request.match_info["code"], self._scope(request)
        out = await self._tx(lambda c: M.account_json(c, M.account_info(c, code, scope)))
        if out["contract"] is None:
            return problem(
                HTTPStatus.NOT_FOUND,
                detail=f"account {code!r} has no contract",
                type_="urn:ocs:problem:billing-not-found",
            )
        return web.json_response({**out["contract"], "services": out["services"]})

    async def put_contract(self, request: web.Request) -> web.StreamResponse:
        body = await checked_json(request, A.CONTRACT)
        return web.json_response(
            await self._tx(M.put_contract, request.match_info["code"], body, self._scope(request))
        )

    async def list_tax(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"items": await self._tx(M.list_tax_profiles)})

    async def put_tax(self, request: web.Request) -> web.StreamResponse:
        if self._scope(request) is not None:
            raise Invalid([FieldError("code", "an agency-scoped caller cannot set tax profiles")])
        body = await checked_json(request, A.TAX)
        return web.json_response(
            await self._tx(M.put_tax_profile, request.match_info["code"], body)
        )

    # -- feeds -------------------------------------------------------------------------------

    async def feed(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/billing/feeds/orders|tickets``: a signed record or list of records
        (``X-OCS-Timestamp``/``X-OCS-Signature``, as the provisioning callbacks). All are
        stored or none: a bad record is a 422 naming it; a replay changes nothing."""
        if not self.feed_secret:
            return problem(
                HTTPStatus.SERVICE_UNAVAILABLE,
                detail="feed webhooks are off: set OCS_BILLING_FEED_SECRET",
                type_="urn:ocs:problem:billing-feeds-off",
            )
        raw = await request.content.read(MAX_FEED_BODY + 1)
        if len(raw) > MAX_FEED_BODY:
            return problem(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, detail=f"at most {MAX_FEED_BODY} bytes"
            )
        try:
            verify(self.feed_secret, request.headers, raw)
        except SignatureError as exc:
            return problem(
                HTTPStatus.UNAUTHORIZED, detail=str(exc), type_="urn:ocs:problem:bad-signature"
            )
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise Invalid([FieldError("body", f"is not JSON: {exc}")]) from None
        records = body if isinstance(body, list) else [body]
        feed = request.match_info["feed"]
        result = await self._db(feeds.accept_batch, self.engine, feed, records, self.clock())
        return web.json_response(
            {"stored": result.stored, "replays": result.replays},
            status=HTTPStatus.ACCEPTED if result.stored else HTTPStatus.OK,
        )

    async def feed_history(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/billing/feeds/orders|tickets/{id}``: every version received."""
        m = request.match_info
        versions = await self._tx(feeds.history, m["feed"], m["id"], self._scope(request))
        if not versions:
            return problem(
                HTTPStatus.NOT_FOUND,
                detail=f"no record {m['id']!r}",
                type_="urn:ocs:problem:billing-not-found",
            )
        return web.json_response({"id": m["id"], "versions": versions})

    # -- runs and invoices -------------------------------------------------------------------

    async def _period_body(self, request: web.Request) -> tuple[str, str | None]:
        body = await read_fields(request, A.RUN)
        return body["period"], body["account"]

    async def run(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/billing/runs`` ``{period, account?}``: (re)draft the period's invoices."""
        period, account = await self._period_body(request)
        r = await self._db(
            runs.run,
            self.engine,
            period,
            account=account,
            now_ms=self.clock(),
            scope=self._scope(request),
        )
        return web.json_response(
            {"period": r.period, "drafted": r.drafted, "already_issued": r.skipped_issued}
        )

    async def issue(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/billing/runs/issue`` ``{period, account?}``: make the drafts final."""
        period, account = await self._period_body(request)
        numbers = await self._db(
            runs.issue,
            self.engine,
            period,
            account=account,
            now_ms=self.clock(),
            scope=self._scope(request),
        )
        return web.json_response({"period": period, "issued": numbers})

    async def export(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/billing/exports/{period}``: the period's dataset to the warehouse."""
        period = request.match_info["period"]
        runs.Period.of(period, "UTC")
        paths = await self._db(
            exports.export_period, self.engine, self.warehouse_dir, period, self.lineage
        )
        return web.json_response({"period": period, "files": [str(p) for p in paths]})

    async def list_invoices(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/billing/invoices?period=&account=&status=&offset=&limit=``"""
        offset, limit = self._page(request)
        q = query(request)
        items = await self._db(
            runs.list_invoices,
            self.engine,
            period=q["period"],
            account=q["account"],
            status=q["status"],
            scope=self._scope(request),
            offset=offset,
            limit=limit,
        )
        return web.json_response({"items": items, "offset": offset, "limit": limit})

    async def get_invoice(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            await self._db(
                runs.get_invoice, self.engine, request.match_info["ref"], self._scope(request)
            )
        )

    async def invoice_pdf(self, request: web.Request) -> web.StreamResponse:
        inv = await self._db(
            runs.get_invoice, self.engine, request.match_info["ref"], self._scope(request)
        )
        parties = await self._db(exports.parties, self.engine, inv)
        pdf = await self._db(exports.invoice_pdf, inv, parties)
        await self._exported(request, "pdf")
        return web.Response(body=pdf, content_type="application/pdf")

    async def _exported(self, request: web.Request, fmt: str) -> None:
        if self.lineage is not None:
            target = http_download(request.host, request.path)
            await self._db(invoice_exported, self.lineage, self.engine, fmt, target)

    async def invoice_csv(self, request: web.Request) -> web.StreamResponse:
        inv = await self._db(
            runs.get_invoice, self.engine, request.match_info["ref"], self._scope(request)
        )
        await self._exported(request, "csv")
        return web.Response(text=exports.lines_csv(inv), content_type="text/csv")

    async def explain(self, request: web.Request) -> web.StreamResponse:
        m = request.match_info
        return web.json_response(
            await self._db(runs.explain, self.engine, m["ref"], int(m["seq"]), self._scope(request))
        )

    async def note(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/billing/invoices/{ref}/notes`` ``{kind: credit|debit, reason, lines}``"""
        body = await checked_json(request, A.NOTE)
        out = await self._db(
            runs.create_note,
            self.engine,
            request.match_info["ref"],
            body,
            now_ms=self.clock(),
            scope=self._scope(request),
        )
        return web.json_response(out, status=HTTPStatus.CREATED)

    async def pending(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/billing/accounts/{code}/pending``: accrued, not yet invoiced."""
        return web.json_response(
            await self._db(
                runs.pending,
                self.engine,
                request.match_info["code"],
                now_ms=self.clock(),
                scope=self._scope(request),
            )
        )

    async def aggregates(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/billing/aggregates?level=&period=&offset=&limit=``"""
        offset, limit = self._page(request)
        q = query(request)
        level, period = q["level"], q["period"]
        runs.Period.of(period, "UTC")
        items = await self._db(
            runs.aggregates,
            self.engine,
            level,
            period,
            scope=self._scope(request),
            offset=offset,
            limit=limit,
        )
        return web.json_response({"items": items, "offset": offset, "limit": limit})
