"""The OpenAPI contract (ocs.api.openapi): a valid OpenAPI 3.1 document (judged by
openapi-spec-validator, not by us), every declared route in it, the request schemas the same
declarations the handlers validate with, and the examples of docs/api.md valid against it."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate

from ocs.api.app import create_app
from ocs.api.openapi import openapi
from ocs.api.render import ACCOUNT_SCHEMA, account_json
from ocs.api.request import Fields
from ocs.api.routes import ROUTES
from ocs.api.schema import Body
from ocs.billing.api import BillingApi
from ocs.charging.tariffs import TariffRegistry
from ocs.metrics import Metrics
from ocs.provisioning.service import Provisioning
from ocs.store.redis_client import PipelinedRedis
from ocs.store.store import Account, Store, UnitBucket
from ocs.ui.api import DashboardApi
from tariffs import load_plans
from tests.contract import Contract, ContractViolation, contract_trace

SUBS = "/v1/subscribers"
N = "46700000001"
DOCS = Path(__file__).parent.parent / "docs"
#: The pages whose examples are checked against the contract.
PAGES = ("api.md", "billing.md", "dashboard.md")


def _app() -> web.Application:
    # Built, never served against a store: the contract needs only the route table.
    store = object.__new__(Store)
    store.client = object.__new__(PipelinedRedis)
    billing = object.__new__(BillingApi)
    dashboard = object.__new__(DashboardApi)
    return create_app(
        store,
        Metrics(),
        tariffs=object.__new__(TariffRegistry),
        clock=lambda: 0,
        provisioning=object.__new__(Provisioning),
        routes=[*billing.routes(), *dashboard.routes()],
    )


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return openapi(_app())


def test_the_contract_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    assert spec["openapi"] == "3.1.0"
    validate(spec)  # raises on any error


def test_every_declared_route_is_in_the_contract(spec: dict[str, Any]) -> None:
    app = _app()
    table = app[ROUTES]
    assert any(r.resource.startswith("billing.") for r in table.values())
    assert any(r.resource == "auth" for r in table.values())
    for method, canonical in table:
        path = re.sub(r"\{(\w+):[^}]*(\{[^}]*\}[^}]*)*\}", r"{\1}", canonical)
        assert method.lower() in spec["paths"].get(path, {}), f"{method} {path}"
        op = spec["paths"][path][method.lower()]
        route = table[(method, canonical)]
        assert op["x-ocs-resource"] == route.resource
        assert (op["security"] == []) is route.public
    ops = sum(len(item) for item in spec["paths"].values())
    assert ops == len(table)


def _request_schema(spec: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    op = spec["paths"][path][method.lower()]
    ref = op["requestBody"]["content"]["application/json"]["schema"]
    schema = dict(spec["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]])
    return schema


@pytest.mark.parametrize(
    ("path", "body", "valid"),
    [
        (SUBS, {"msisdn": N, "balance": "10.00", "plan": "p"}, True),
        (SUBS, {"msisdn": N, "balance": 10.5, "plan": "p"}, False),
        (SUBS, {"msisdn": N, "balance": "1.1234567", "plan": "p"}, False),
        (SUBS, {"msisdn": N, "balance": "１０", "plan": "p"}, False),
        (SUBS, {"msisdn": "+4670", "balance": "1", "plan": "p"}, False),
        (SUBS, {"msisdn": N, "balance": "1"}, False),
        (SUBS, {"msisdn": N, "balance": "1", "plan": "p", "x": 1}, False),
        (SUBS + "/{msisdn}/topups", {"amount": "5", "reference": "T-1"}, True),
        (SUBS + "/{msisdn}/adjustments", {"amount": "-5", "reference": "T-1"}, False),
        ("/v1/rate", {"plan": "p", "service": "voice", "duration": 60}, True),
        ("/v1/rate", {"plan": "p", "service": "voice"}, False),
    ],
)  # fmt: skip
def test_request_schemas_say_what_the_handlers_accept(
    spec: dict[str, Any], path: str, body: object, valid: bool
) -> None:
    """The money rules among them: a decimal string, at most 6 decimals, ASCII digits, never
    a float (the handlers' own cases are in test_api.py: the schemas come from the same
    declarations)."""
    schema = _request_schema(spec, "POST", path)
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(body))
    assert (not errors) is valid, errors


def test_a_rendered_account_matches_its_schema() -> None:
    account = Account(
        msisdn="46700000001",
        balance=12_500_000,
        reserved=0,
        credit_limit=0,
        state="active",
        plan="basic",
        version=3,
        created_at=1_700_000_000_000,
        updated_at=0,
        buckets=(UnitBucket("b1", "data", 100, priority=1, expires_at=0),),
        engaged=(5_000_000,),
        thresholds=((5_000_000, 6_000_000, "outgoing"),),
    )
    jsonschema.validate(account_json(account), ACCOUNT_SCHEMA)


Example = tuple[str, str, dict[str, list[str]], object, object]


def _curl_examples(page: str) -> list[Example]:
    """(method, path, query, JSON body or None, the JSON answer shown after it or None) of
    every curl example in ``docs/<page>``."""
    text = (DOCS / page).read_text()
    out: list[Example] = []
    end = 0
    for m in re.finditer(r"```(\w*)\n(.*?)```", text, re.S):
        lang, block = m[1], m[2]
        # The answer of a curl example: the next JSON block, with at most a block of headers
        # and no prose between.
        between = re.sub(r"```\n[^`]*```", "", text[end : m.start()]).strip()
        end = m.end()
        if lang == "json" and out and out[-1][4] is None and not between:
            method, path, query, body, _ = out[-1]
            out[-1] = (method, path, query, body, json.loads(block))
            continue
        if lang != "sh":
            continue
        for command in re.split(r"\n(?=curl )", block.replace("\\\n", " ")):
            if not command.startswith("curl "):
                continue
            words = shlex.split(command)
            data = next((words[i + 1] for i, w in enumerate(words) if w in ("-d", "--data")), None)
            url = next((w for w in words if re.match(r"(https?://)?localhost:[0-9]+/", w)), None)
            if url is None:
                continue
            default = "GET" if data is None else "POST"
            method = next((words[i + 1] for i, w in enumerate(words) if w == "-X"), default)
            target = urlsplit("http://" + url.split("://", 1)[-1])
            body = None if data is None or data.startswith("@") else json.loads(data)
            out.append((method, target.path, parse_qs(target.query, True), body, None))
    return out


def _mentioned_routes(page: str) -> list[tuple[str, str, list[str]]]:
    """(method, path, query names) of every route the prose of ``docs/<page>`` names in
    backticks (`GET /v1/dashboard/{level}/{code}?period=&service=`)."""
    text = (DOCS / page).read_text()
    prefix = "/v1/billing" if page == "billing.md" else ""
    out = []
    for m in re.finditer(r"`((?:GET|POST|PUT|PATCH|DELETE)(?:/(?:GET|POST|PUT|PATCH|DELETE))*)"
                         r" (/[^`\s]*)`", text):  # fmt: skip
        path, _, q = m[2].partition("?")
        if not path.startswith(("/v1/", "/healthz", "/readyz", "/metrics", "/openapi", "/docs",
                                "/ui")):  # fmt: skip
            path = prefix + path
        for method in m[1].split("/"):
            out.append((method, path.rstrip("/") or "/", [n for n in re.findall(r"(\w+)=", q)]))
    return out


def _template_of(spec: dict[str, Any], method: str, path: str) -> str | None:
    for template, item in spec["paths"].items():
        regex = "^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template)) + "$"
        if method.lower() in item and re.match(regex, path):
            return str(template)
    return None


@pytest.mark.parametrize("page", PAGES)
def test_every_documented_example_validates(spec: dict[str, Any], page: str) -> None:
    """Each curl example of the page: its route is in the contract, its query parameters are
    declared and valid, its JSON body validates against the request schema, and the answer
    shown after it against the success answer's."""
    examples = _curl_examples(page)
    assert len(examples) >= (5 if page == "api.md" else 2), examples
    checked = 0
    for method, path, query, body, answer in examples:
        template = _template_of(spec, method, path)
        assert template is not None, f"docs/{page}: {method} {path} is not in the contract"
        op = spec["paths"][template][method.lower()]
        params = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "query"}
        for name, values in query.items():
            assert name in params, f"docs/{page}: {method} {path}: no query parameter {name}"
            _valid(params[name]["schema"], _typed(params[name]["schema"], values[0]), page)
        content = op.get("requestBody", {}).get("content", {})
        if body is not None and "application/json" in content:
            _valid(_resolve(spec, content["application/json"]["schema"]), body, page)
            checked += 1
        ok = next(v for k, v in op["responses"].items() if k.startswith("2"))
        if answer is not None and "problem" not in json.dumps(answer)[:40]:
            assert "application/json" in ok.get("content", {}), f"{method} {path}"
            _valid(_resolve(spec, ok["content"]["application/json"]["schema"]), answer, page)
            checked += 1
    assert checked >= (8 if page == "api.md" else 2)


@pytest.mark.parametrize("page", PAGES)
def test_every_route_the_docs_name_is_in_the_contract(spec: dict[str, Any], page: str) -> None:
    mentioned = _mentioned_routes(page)
    assert len(mentioned) >= 5
    for method, path, names in mentioned:
        template = _template_of(spec, method, path)
        assert template is not None, f"docs/{page}: `{method} {path}` is not in the contract"
        op = spec["paths"][template][method.lower()]
        declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
        assert set(names) <= declared, f"docs/{page}: `{method} {path}`: {names} ({declared})"


def _typed(schema: dict[str, Any], raw: str) -> object:
    return int(raw) if schema.get("type") == "integer" else raw


def _valid(schema: dict[str, Any], doc: object, page: str) -> None:
    errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)]
    assert not errors, f"docs/{page}: {doc}: {errors}"


def _examples(node: object, where: str = "") -> list[tuple[str, dict[str, Any], object]]:
    """(where, schema, example) of every ``examples`` entry in the document."""
    out: list[tuple[str, dict[str, Any], object]] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "examples" and isinstance(v, list) and "properties" not in where[-12:]:
                out += [(where, node, e) for e in v]
            else:
                out += _examples(v, f"{where}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _examples(v, f"{where}/{i}")
    return out


def test_every_example_in_the_contract_validates(spec: dict[str, Any]) -> None:
    """The ``examples`` of the schemas (request bodies, money, percentages) are valid
    against the schema they sit in."""
    found = _examples(spec)
    assert {w.split("/")[3] for w, _, _ in found if w.startswith("/components")} >= {
        "BillRun", "BillingAccount", "Contract", "FixedService", "Login", "Note", "TaxProfile"
    }  # fmt: skip
    for where, schema, example in found:
        root = {**schema, "components": spec["components"]}
        errors = [e.message for e in jsonschema.Draft202012Validator(root).iter_errors(example)]
        assert not errors, f"{where}: {example}: {errors}"


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return dict(spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]])
    return schema


async def test_the_contract_and_its_page_are_served_without_a_token() -> None:
    async with TestClient(TestServer(_app()), trace_configs=[contract_trace()]) as client:
        resp = await client.get("/openapi.json")
        assert resp.status == 200
        served = await resp.json()
        validate(served)
        page = await client.get("/docs")
        assert page.status == 200 and page.content_type == "text/html"
        text = await page.text()
        assert "/v1/subscribers/{msisdn}/topups" in text and "<script" not in text


#: Writes that take no body (the path says it all).
BODILESS = {
    ("POST", "/v1/provisioning/reconcile"),
    ("POST", "/v1/provisioning/dead-letters/{id}/replay"),
    ("POST", "/v1/billing/exports/{period}"),
}


def test_every_route_declares_its_answer_and_body() -> None:
    """Each route says what a success answers (a JSON Schema, a media type, or no body for a
    204 or a redirect), and each write says what it takes, by declaration."""
    for route in _app()[ROUTES].values():
        what = f"{route.method} {route.path}"
        if route.answer is None and not route.media:
            assert route.status in (204, 302), f"{what}: no answer declared"
        if route.method in ("POST", "PUT", "PATCH") and (route.method, route.path) not in {
            (m, p) for m, p in BODILESS
        }:
            assert route.body is not None or route.request is not None, f"{what}: no body"


def test_body_examples_pass_the_rules_they_document() -> None:
    """A declared example is accepted by the declaration's own reading (ocs.api.request.Fields),
    not only by its schema: the two say the same."""
    checked = 0
    shipped = {p.name for p in load_plans()}
    for route in _app()[ROUTES].values():
        if not isinstance(route.body, Body):
            continue
        for example in route.body.examples:
            f = Fields(example, route.body, now=0, plans=shipped)
            f.values()
            assert not f.errors, (route.body.name, example, f.errors)
            checked += 1
    assert checked >= 7


def test_the_contract_check_catches_a_drifting_answer() -> None:
    """The hook the API tests run every answer through (tests/contract.py) fails on an
    answer its route does not declare: a missing member, a float for money, an undeclared
    status or media type, an error that is not a problem, a problem without its members."""
    contract = Contract(openapi(_app()))
    path = f"{SUBS}/{N}/topups"
    good = {"msisdn": N, "amount": "5.00", "reference": "T-1", "balance": "15.00"}
    contract.check("POST", path, 201, "application/json", json.dumps(good).encode())
    for status, media, doc in [
        (201, "application/json", {**good, "balance": 15.0}),
        (201, "application/json", {k: v for k, v in good.items() if k != "balance"}),
        (201, "application/json", {**good, "extra": "member"}),
        (200, "application/json", good),
        (201, "text/plain", good),
        (422, "application/json", {"field": "amount"}),
        (422, "application/problem+json", {"title": "x", "status": 422}),
        (404, "application/problem+json", {"type": "about:blank", "title": "x", "status": 400}),
    ]:
        with pytest.raises(ContractViolation):
            contract.check("POST", path, status, media, json.dumps(doc).encode())
    # A route the contract does not know: only its problems are checked.
    contract.check("GET", "/nowhere", 404, "application/problem+json",
                   b'{"type": "about:blank", "title": "Not Found", "status": 404}')  # fmt: skip
