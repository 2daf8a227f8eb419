"""The tests hold every HTTP answer to the contract (ocs.api.openapi) as the client sees it.

:func:`contract_trace` is an aiohttp trace: give it to any client of an OCS under test
(``TestClient(TestServer(app), trace_configs=[contract_trace()])`` or
``aiohttp.ClientSession(trace_configs=[contract_trace()])``). On the first answer from a
server it reads that server's own ``/openapi.json``; then every answer is checked:

- an answer of a declared route has a status the route declares (a success status, or an
  error range), and the media type it declares for it;
- a JSON success answer validates against the route's declared answer schema;
- every ``application/problem+json`` answer, of any route or none, validates against the
  Problem schema, and every error answer of a declared route is a problem.

A drift raises :class:`ContractViolation` (an AssertionError) in the request that met it, so
the test fails where the answer was received. HEAD requests and bodies that stream
(``text/event-stream``) are checked for status and media type only.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import aiohttp
import jsonschema

#: A file to append "METHOD template status" of every checked answer to: which routes the
#: suite holds to the contract (a measurement, not a test).
SEEN = os.environ.get("OCS_CONTRACT_SEEN", "")
PROBLEM_TYPE = "application/problem+json"
JSON_TYPE = "application/json"
#: Media types whose body is read and validated (anything else may stream, or be binary).
_READ = frozenset({JSON_TYPE, PROBLEM_TYPE})


class ContractViolation(AssertionError):
    """An answer the contract does not allow."""


@dataclass(frozen=True)
class _Operation:
    method: str
    template: str
    regex: re.Pattern[str]
    params: int
    op: Mapping[str, Any]


def _segment_regex(param: Mapping[str, Any]) -> str:
    schema = param.get("schema", {})
    if "enum" in schema:
        return "(?:" + "|".join(re.escape(str(v)) for v in schema["enum"]) + ")"
    if "pattern" in schema:
        return "(?:" + str(schema["pattern"]).removeprefix("^").removesuffix("$") + ")"
    return "[^/]+"


class Contract:
    """One server's OpenAPI document, ready to check answers against."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.spec = spec
        self.components = spec.get("components", {})
        self._ops: list[_Operation] = []
        for template, item in spec["paths"].items():
            for method, op in item.items():
                path_params = {
                    p["name"]: p for p in op.get("parameters", []) if p.get("in") == "path"
                }
                regex = ""
                for part in re.split(r"(\{\w+\})", template):
                    m = re.fullmatch(r"\{(\w+)\}", part)
                    regex += _segment_regex(path_params[m[1]]) if m else re.escape(part)
                self._ops.append(
                    _Operation(method.upper(), template, re.compile(regex), len(path_params), op)
                )
        # Literal paths before templated ones (as aiohttp's router prefers no clash here).
        self._ops.sort(key=lambda o: o.params)
        self._validators: dict[str, jsonschema.protocols.Validator] = {}

    def operation(self, method: str, path: str) -> _Operation | None:
        method = "GET" if method == "HEAD" else method
        for o in self._ops:
            if o.method == method and o.regex.fullmatch(path):
                return o
        return None

    def _validator(self, key: str, schema: Mapping[str, Any]) -> jsonschema.protocols.Validator:
        v = self._validators.get(key)
        if v is None:
            root = {**schema, "components": self.components}
            cls = jsonschema.Draft202012Validator
            v = self._validators[key] = cls(root, format_checker=cls.FORMAT_CHECKER)
        return v

    def _validate(self, key: str, schema: Mapping[str, Any], doc: object, what: str) -> None:
        errors = sorted(self._validator(key, schema).iter_errors(doc), key=lambda e: e.path)
        if errors:
            lines = [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                     for e in errors[:5]]  # fmt: skip
            raise ContractViolation(f"{what} breaks its schema:\n  " + "\n  ".join(lines))

    def check(self, method: str, path: str, status: int, media: str, body: bytes | None) -> None:
        """Raise ContractViolation unless this answer is one the contract allows. ``body``
        None: not read (HEAD, streamed or binary media)."""
        what = f"{method} {path} -> {status} {media or '(no type)'}"
        doc: object = None
        if body:
            try:
                doc = json.loads(body) if media in _READ else None
            except ValueError:
                raise ContractViolation(f"{what}: the body is not JSON") from None
        if media == PROBLEM_TYPE and doc is not None:
            problem = self.components["schemas"]["Problem"]
            self._validate("#Problem", problem, doc, what)
            if isinstance(doc, dict) and doc.get("status") != status:
                raise ContractViolation(f"{what}: the problem says status {doc.get('status')}")
        found = self.operation(method, path)
        if found is None:
            return  # not a declared route: only its problems are checked (above)
        if SEEN:  # which declared answers the suite checked (OCS_CONTRACT_SEEN=FILE)
            with open(SEEN, "a", encoding="utf-8") as out:
                out.write(f"{found.method} {found.template} {status}\n")
        responses = found.op["responses"]
        key = str(status) if str(status) in responses else f"{status // 100}XX"
        declared = responses.get(key)
        if declared is None:
            raise ContractViolation(
                f"{what}: {found.method} {found.template} declares only {sorted(responses)}"
            )
        content = declared.get("content", {})
        if status >= 400:
            if method != "HEAD" and media != PROBLEM_TYPE:
                raise ContractViolation(f"{what}: an error answer is not a problem document")
            return
        if not content:
            if body:
                raise ContractViolation(f"{what}: declared without a body, but has one")
            return
        if media not in content:
            raise ContractViolation(f"{what}: declared as {sorted(content)}")
        schema = content[media].get("schema")
        if media == JSON_TYPE and schema is not None and body is not None:
            self._validate(f"{found.method} {found.template} {key}", schema, doc, what)


def _media(resp: aiohttp.ClientResponse) -> str:
    return resp.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()


def contract_trace() -> aiohttp.TraceConfig:
    """A trace that checks every answer a client receives against its server's contract
    (read once per server from its ``/openapi.json``)."""
    contracts: dict[str, Contract] = {}
    loading: set[str] = set()

    async def on_request_end(
        session: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        resp = params.response
        origin = str(params.url.origin())
        if origin in loading:
            return  # the contract itself, being read
        contract = contracts.get(origin)
        if contract is None:
            loading.add(origin)
            try:
                async with session.get(f"{origin}/openapi.json") as r:
                    if r.status != 200:
                        raise ContractViolation(f"{origin}/openapi.json answered {r.status}")
                    contract = contracts[origin] = Contract(await r.json())
            finally:
                loading.discard(origin)
        media = _media(resp)
        body = None
        if params.method != "HEAD" and media in _READ:
            body = await resp.read()  # kept by the response: the test reads it again
        contract.check(params.method, params.url.path, resp.status, media, body)

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    return trace
