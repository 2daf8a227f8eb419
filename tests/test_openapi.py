"""The OpenAPI contract (ocs.api.openapi): a valid OpenAPI 3.1 document (judged by
openapi-spec-validator, not by us), every declared route in it, the request schemas the same
declarations the handlers validate with, and the examples of docs/api.md valid against it."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate

from ocs.api.app import create_app
from ocs.api.openapi import openapi
from ocs.api.render import ACCOUNT_SCHEMA, account_json
from ocs.api.routes import ROUTES
from ocs.billing.api import BillingApi
from ocs.charging.tariffs import TariffRegistry
from ocs.metrics import Metrics
from ocs.provisioning.service import Provisioning
from ocs.store.redis_client import PipelinedRedis
from ocs.store.store import Account, Store, UnitBucket
from tests.contract import contract_trace

SUBS = "/v1/subscribers"
N = "46700000001"
DOCS = Path(__file__).parent.parent / "docs" / "api.md"


def _app() -> web.Application:
    # Built, never served against a store: the contract needs only the route table.
    store = object.__new__(Store)
    store.client = object.__new__(PipelinedRedis)
    billing = object.__new__(BillingApi)
    return create_app(
        store,
        Metrics(),
        tariffs=object.__new__(TariffRegistry),
        clock=lambda: 0,
        provisioning=object.__new__(Provisioning),
        routes=billing.routes(),
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


def _curl_examples() -> list[tuple[str, str, object, object]]:
    """(method, path, JSON body or None, the JSON answer shown after it or None) of every
    curl example in docs/api.md."""
    text = DOCS.read_text()
    out: list[tuple[str, str, object, object]] = []
    end = 0
    for m in re.finditer(r"```(\w*)\n(.*?)```", text, re.S):
        lang, block = m[1], m[2]
        # The answer of a curl example: the next JSON block, with at most a block of headers
        # and no prose between.
        between = re.sub(r"```\n[^`]*```", "", text[end : m.start()]).strip()
        end = m.end()
        if lang == "json" and out and out[-1][3] is None and not between:
            method, path, body, _ = out[-1]
            out[-1] = (method, path, body, json.loads(block))
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
            path = "/" + url.split("localhost:", 1)[1].split("/", 1)[1].split("?")[0]
            body = None if data is None or data.startswith("@") else json.loads(data)
            out.append((method, path, body, None))
    return out


def _template_of(spec: dict[str, Any], method: str, path: str) -> str | None:
    for template, item in spec["paths"].items():
        regex = "^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template)) + "$"
        if method.lower() in item and re.match(regex, path):
            return str(template)
    return None


def test_every_documented_request_example_validates(spec: dict[str, Any]) -> None:
    examples = _curl_examples()
    assert len(examples) >= 5, examples
    checked = 0
    for method, path, body, answer in examples:
        template = _template_of(spec, method, path)
        assert template is not None, f"docs/api.md: {method} {path} is not in the contract"
        op = spec["paths"][template][method.lower()]
        content = op.get("requestBody", {}).get("content", {})
        if body is not None and "application/json" in content:
            schema = _resolve(spec, content["application/json"]["schema"])
            errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(body)]
            assert not errors, f"docs/api.md: {method} {path} {body}: {errors}"
            checked += 1
        ok = next(v for k, v in op["responses"].items() if k.startswith("2"))
        if answer is not None and "content" in ok and "problem" not in json.dumps(answer)[:40]:
            schema = _resolve(spec, ok["content"]["application/json"]["schema"])
            errors = [
                e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(answer)
            ]
            assert not errors, f"docs/api.md: the answer of {method} {path}: {errors}"
            checked += 1
    assert checked >= 8


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
