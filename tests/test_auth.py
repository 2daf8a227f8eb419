"""Authentication and authorisation of the HTTP API (ocs.auth), through a real aiohttp server
on the test session's Redis: the route table walked for every role, API keys, user logins and
JWTs, the failure budget, role limits, fuzzed headers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import hypothesis.strategies as st
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings

from ocs.api.app import create_app
from ocs.api.routes import ROUTES, Route
from ocs.auth.credentials import AuthConfig, new_api_key, new_user
from ocs.auth.http import SECURITY
from ocs.auth.policy import ROLES, PolicyError, load_policy, parse_policy
from ocs.charging.tariffs import TariffRegistry
from ocs.metrics import Metrics
from ocs.provisioning.service import Provisioning
from ocs.store.cluster import hot_client
from ocs.store.notify import NotifyStore
from ocs.store.store import Store
from tariffs import PlanBook, TariffRater, load_plans
from tests.contract import contract_trace

Client = TestClient[web.Request, web.Application]
ADMIN = "test-admin-token"
T0 = 1_714_564_800_000
POLICY = load_policy()
#: Values for the path parameters of the route table.
PARAMS = {"msisdn": "46700000001", "name": "gov-payu", "id": "1714564800000-0"}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[Store]:
    async with hot_client(redis_url) as client:
        yield Store(client, session_ttl_ms=900_000, reference_ttl_ms=86_400_000)


async def _serve(
    store: Store, redis_url: str, clock: Clock, **auth: Any
) -> AsyncIterator[tuple[Client, NotifyStore]]:
    plans = load_plans()
    registry = TariffRegistry(store, TariffRater(PlanBook(plans)), plans)
    await registry.refresh()
    notify = NotifyStore(redis_url)
    provisioning = Provisioning(notify, store, callback_secret="s" * 32)
    config = AuthConfig(admin_token=ADMIN, secret_key="k" * 64, **auth)
    app = create_app(store, Metrics(), tariffs=registry, clock=clock, provisioning=provisioning,
                     auth=config)  # fmt: skip
    client: Client = TestClient(TestServer(app), trace_configs=[contract_trace()])
    await client.start_server()
    try:
        yield client, notify
    finally:
        await client.close()
        await notify.close()


@pytest.fixture
async def api(store: Store, redis_url: str, clock: Clock) -> AsyncIterator[Client]:
    async for client, _ in _serve(store, redis_url, clock, fail_limit=10**6):
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def make_key(api: Client, role: str, agency: str | None = None, **kw: Any) -> str:
    token, record = new_api_key(role, agency, now=T0, **kw)
    await api.app[SECURITY].store.add_api_key(record)
    return token


async def make_subscriber(api: Client, msisdn: str = "46700000001") -> None:
    resp = await api.post(
        "/v1/subscribers", json={"msisdn": msisdn, "balance": "10", "plan": "gov-payu"},
        headers=bearer(ADMIN),
    )  # fmt: skip
    assert resp.status == 201, await resp.text()


def _path(route: Route) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PARAMS[m.group(1)], route.path)


def _protected(api: Client) -> list[Route]:
    return [r for r in api.app[ROUTES].values() if not r.public]


def test_every_declared_route_has_a_policy_entry(api: Client) -> None:
    """A new route must be named by a rule of the policy (not only by admin's and auditor's
    catch-all "*"), or this fails."""
    for route in _protected(api):
        named = [
            rule for rule in POLICY.rules
            if route.action in rule.actions
            and any(p != "*" and rule.matches(route.resource) for p in rule.resources)
        ]  # fmt: skip
        assert named, f"{route.method} {route.path}: no policy rule names {route.resource}"
        assert "admin" in POLICY.roles_for(route.resource, route.action)


async def test_every_route_refuses_without_a_credential(api: Client) -> None:
    for route in _protected(api):
        resp = await api.request(route.method, _path(route), json={})
        assert resp.status == 401, (route.path, await resp.text())
        assert resp.content_type == "application/problem+json"
        assert resp.headers["WWW-Authenticate"] == 'Bearer realm="ocs"'
        assert (await resp.json())["type"] == "urn:ocs:problem:unauthenticated"


async def test_every_route_for_every_role(api: Client) -> None:
    """Right role: the handler answers (not 401/403); wrong role: 403 problem."""
    await make_subscriber(api)
    keys = {role: await make_key(api, role, "moh" if role == "agency-viewer" else None)
            for role in ROLES}  # fmt: skip
    checked = 0
    for route in _protected(api):
        for role, token in keys.items():
            allowed = POLICY.decide(role, "moh" if role == "agency-viewer" else None,
                                    route.resource, route.action)  # fmt: skip
            resp = await api.request(route.method, _path(route), json={}, headers=bearer(token))
            text = await resp.text()
            if allowed:
                assert resp.status not in (401, 403, 500), (role, route.path, text)
            else:
                assert resp.status == 403, (role, route.path, text)
                assert (await resp.json())["type"] == "urn:ocs:problem:forbidden"
            checked += 1
    assert checked >= 7 * 15


async def test_roles_as_documented(api: Client) -> None:
    d = POLICY.decide
    assert d("operator", None, "subscribers.topups", "write")
    assert not d("operator", None, "subscribers.adjustments", "write")
    assert d("finance", None, "subscribers.adjustments", "write")
    assert d("finance", None, "billing.invoices", "write")
    assert d("tariff-manager", None, "tariffs", "write")
    assert not d("tariff-manager", None, "subscribers", "read")
    assert d("auditor", None, "subscribers", "read") and d("auditor", None, "audit", "read")
    assert not any(d("auditor", None, r.resource, "write") for r in _protected(api))
    assert not any(d("network-element", None, r.resource, r.action) for r in _protected(api))
    # agency-viewer: its agency's billing only, and only when limited to an agency.
    assert d("agency-viewer", "moh", "billing.invoices", "read")
    assert not d("agency-viewer", None, "billing.invoices", "read")
    assert not d("agency-viewer", "moh", "subscribers", "read")


def test_a_bad_policy_file_is_named() -> None:
    with pytest.raises(PolicyError, match=r"p\.toml: rule\[0\]\.roles: 'root' is not a role"):
        parse_policy('[[rule]]\nroles=["root"]\nresources=["*"]\nactions=["read"]', "p.toml")
    with pytest.raises(PolicyError, match="actions: 'delete'"):
        parse_policy('[[rule]]\nroles=["admin"]\nresources=["*"]\nactions=["delete"]', "p")
    text = '[roles.operator.limits]\n"subscribers.topups"=1.5\n'
    text += '[[rule]]\nroles=["admin"]\nresources=["*"]\nactions=["read"]'
    with pytest.raises(PolicyError, match=r"limits\.subscribers\.topups"):
        parse_policy(text, "p")


async def test_api_keys_revoked_and_expired(api: Client, clock: Clock) -> None:
    sec = api.app[SECURITY].store
    token = await make_key(api, "operator", expires_at=T0 + 60_000)
    resp = await api.get("/v1/subscribers", headers=bearer(token))
    assert resp.status == 200
    key_id = token.split("_")[1]
    record = await sec.api_key(key_id)
    assert record is not None and record.last_used_at == T0
    assert record.digest not in token  # only a hash is kept
    # A wrong secret for a known id.
    assert (await api.get("/v1/subscribers", headers=bearer(token[:-2] + "xx"))).status == 401
    clock.now = T0 + 60_000
    resp = await api.get("/v1/subscribers", headers=bearer(token))
    assert resp.status == 401
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    assert "expired" in (await resp.json())["detail"]
    clock.now = T0
    assert await sec.revoke_api_key(key_id, T0)
    resp = await api.get("/v1/subscribers", headers=bearer(token))
    assert resp.status == 401 and "revoked" in (await resp.json())["detail"]


async def _login(api: Client, name: str, password: str) -> dict[str, Any]:
    resp = await api.post("/v1/auth/token", json={"username": name, "password": password})
    assert resp.status == 200, await resp.text()
    assert resp.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = await resp.json()
    return body


async def test_user_login_jwt_and_refresh(api: Client, clock: Clock) -> None:
    sec = api.app[SECURITY].store
    await sec.put_user(new_user("ana", "correct horse", "operator", None, T0))
    resp = await api.post("/v1/auth/token", json={"username": "ana", "password": "wrong one"})
    assert resp.status == 401
    resp = await api.post("/v1/auth/token", json={"username": "nobody", "password": "x" * 9})
    assert resp.status == 401
    assert (await api.post("/v1/auth/token", json={"username": "ana"})).status == 422
    # The body is read by its declaration (ocs.auth.http.LOGIN): each bad member named.
    resp = await api.post("/v1/auth/token", json={"username": 5, "password": None, "otp": "1"})
    assert resp.status == 422
    assert {e["field"] for e in (await resp.json())["errors"]} == {"username", "password", "otp"}
    resp = await api.post("/v1/auth/refresh", json={})
    assert resp.status == 422 and (await resp.json())["field"] == "refresh_token"
    pair = await _login(api, "ana", "correct horse")
    assert pair["role"] == "operator" and pair["expires_in"] == 900
    access = pair["access_token"]
    assert (await api.get("/v1/subscribers", headers=bearer(access))).status == 200
    assert (await api.post("/v1/tariffs", headers=bearer(access))).status == 403
    # Tampered: the payload changed (role admin), the signature kept.
    head, payload, sig = access.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["role"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    resp = await api.get("/v1/subscribers", headers=bearer(f"{head}.{forged}.{sig}"))
    assert resp.status == 401
    # Signed with another key, and unsigned (alg none).
    other = jwt.encode(claims, "another key of at least 32 bytes!", algorithm="HS256")
    assert (await api.get("/v1/subscribers", headers=bearer(other))).status == 401
    unsigned = jwt.encode(claims, None, algorithm="none")
    assert (await api.get("/v1/subscribers", headers=bearer(unsigned))).status == 401
    # Expired.
    clock.now = T0 + 900_000
    resp = await api.get("/v1/subscribers", headers=bearer(access))
    assert resp.status == 401 and "expired" in (await resp.json())["detail"]
    # A refresh token works once.
    resp = await api.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert resp.status == 200
    fresh = (await resp.json())["access_token"]
    assert (await api.get("/v1/subscribers", headers=bearer(fresh))).status == 200
    resp = await api.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert resp.status == 401
    # A disabled user's tokens stop at once.
    assert await sec.set_user_field("ana", "disabled", 1)
    assert (await api.get("/v1/subscribers", headers=bearer(fresh))).status == 401
    resp = await api.post("/v1/auth/token", json={"username": "ana", "password": "correct horse"})
    assert resp.status == 401


async def test_operator_top_up_limit(api: Client) -> None:
    await make_subscriber(api)
    token = await make_key(api, "operator")
    url = "/v1/subscribers/46700000001/topups"
    resp = await api.post(url, json={"amount": "500.01", "reference": "r1"}, headers=bearer(token))
    assert resp.status == 403
    assert (await resp.json())["type"] == "urn:ocs:problem:over-role-limit"
    resp = await api.post(url, json={"amount": "500.00", "reference": "r2"}, headers=bearer(token))
    assert resp.status == 201
    resp = await api.post(url, json={"amount": "900", "reference": "r3"}, headers=bearer(ADMIN))
    assert resp.status == 201


async def test_repeated_failures_are_rate_limited(
    store: Store, redis_url: str, clock: Clock
) -> None:
    async for api, _ in _serve(store, redis_url, clock, fail_limit=3, fail_window=60):
        for _ in range(3):
            assert (await api.get("/v1/subscribers", headers=bearer("nope"))).status == 401
        resp = await api.get("/v1/subscribers", headers=bearer(ADMIN))
        assert resp.status == 429
        assert resp.content_type == "application/problem+json"
        assert 1 <= int(resp.headers["Retry-After"]) <= 60
        resp = await api.post("/v1/auth/token", json={"username": "a", "password": "b" * 8})
        assert resp.status == 429
        assert (await api.get("/healthz")).status == 200
        text = api.app[SECURITY].metrics.render().decode()
        assert 'ocs_auth_failures_total{interface="http",reason="malformed"} 3.0' in text
        assert 'ocs_auth_failures_total{interface="http",reason="limited"} 2.0' in text


async def test_the_failure_budget_is_shared_by_processes(
    store: Store, redis_url: str, clock: Clock
) -> None:
    """Two apps on one Redis stand for two OCS processes: failures at either count against
    one budget, and each refuses the client once the shared count reaches the limit."""
    one = _serve(store, redis_url, clock, fail_limit=3, fail_window=60)
    two = _serve(store, redis_url, clock, fail_limit=3, fail_window=60)
    (a, _), (b, _) = await anext(one), await anext(two)
    try:
        assert (await a.get("/v1/subscribers", headers=bearer("nope"))).status == 401
        assert (await b.get("/v1/subscribers", headers=bearer("nope"))).status == 401
        assert (await a.get("/v1/subscribers", headers=bearer(ADMIN))).status == 200
        assert (await b.get("/v1/subscribers", headers=bearer("nope"))).status == 401  # the 3rd
        # b counted the third: it refuses at once, whatever the credential.
        resp = await b.get("/v1/subscribers", headers=bearer(ADMIN))
        assert resp.status == 429 and 1 <= int(resp.headers["Retry-After"]) <= 60
        # a saw two; the next failure there finds the shared count past the limit.
        assert (await a.get("/v1/subscribers", headers=bearer("nope"))).status == 401
        resp = await a.get("/v1/subscribers", headers=bearer(ADMIN))
        assert resp.status == 429 and 1 <= int(resp.headers["Retry-After"]) <= 60
    finally:
        for gen in (one, two):
            with contextlib.suppress(StopAsyncIteration):
                await anext(gen)


async def test_failures_and_changes_are_audited(api: Client, clock: Clock) -> None:
    await make_subscriber(api)
    operator = await make_key(api, "operator")
    resp = await api.post("/v1/subscribers/46700000001/topups",
                          json={"amount": "2.5", "reference": "r"},
                          headers={**bearer(operator), "X-Request-Id": "req-42"})  # fmt: skip
    assert resp.status == 201 and resp.headers["X-Request-Id"] == "req-42"
    await api.get("/v1/subscribers", headers=bearer("wrong"))
    assert (await api.get("/v1/audit", headers=bearer(operator))).status == 403
    auditor = await make_key(api, "auditor")
    resp = await api.get("/v1/audit", headers=bearer(auditor))
    assert resp.status == 200
    records = (await resp.json())["records"]
    kinds = [r["action"] for r in records]  # newest first
    assert kinds[:3] == ["auth.forbidden", "auth.failure", "POST /v1/subscribers/{msisdn}/topups"]
    topup = records[2]
    assert topup["who"] == f"key:{operator.split('_')[1]}" and topup["role"] == "operator"
    assert topup["request_id"] == "req-42" and topup["from"] == "127.0.0.1"
    assert json.loads(topup["before"])["balance"] == "10.00"
    assert json.loads(topup["after"])["balance"] == "12.50"
    assert topup["ts"] == str(T0)
    resp = await api.get("/v1/audit?action=auth.&limit=1", headers=bearer(auditor))
    page = await resp.json()
    assert [r["action"] for r in page["records"]] == ["auth.forbidden"] and page["next"]
    resp = await api.get(f"/v1/audit?action=auth.&before={page['next']}", headers=bearer(auditor))
    assert [r["action"] for r in (await resp.json())["records"]] == ["auth.failure"]
    resp = await api.get("/v1/audit?who=bootstrap", headers=bearer(auditor))
    assert [r["action"] for r in (await resp.json())["records"]] == ["POST /v1/subscribers"]
    assert (await api.get("/v1/audit?limit=0", headers=bearer(auditor))).status == 422


async def _raw(api: Client, request: bytes) -> int:
    """Send ``request`` as raw bytes (the client library would refuse some): the status."""
    reader, writer = await asyncio.open_connection(api.host, api.port)
    try:
        writer.write(request)
        await writer.drain()
        line = await reader.readline()
        await reader.read()  # Connection: close
    finally:
        writer.close()
        await writer.wait_closed()
    return int(line.split()[1])


_HEADER_BYTES = st.binary(max_size=200).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    value=st.one_of(
        _HEADER_BYTES,
        _HEADER_BYTES.map(lambda b: b"Bearer " + b),
        st.from_regex(rb"\ABearer ocsk_[0-9a-f]{0,14}_?[A-Za-z0-9_-]{0,50}\Z"),
        st.from_regex(
            rb"\A[Bb]earer +[A-Za-z0-9_=-]{0,40}\.[A-Za-z0-9_=-]{0,80}\.[A-Za-z0-9_=-]{0,40}\Z"
        ),
    ),
    request_id=_HEADER_BYTES,
)
async def test_fuzzed_credentials_never_give_a_500(
    api: Client, value: bytes, request_id: bytes
) -> None:
    for path in (b"/v1/subscribers", b"/v1/audit"):
        status = await _raw(api, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close"
                            b"\r\nAuthorization: " + value + b"\r\nX-Request-Id: " + request_id
                            + b"\r\n\r\n")  # fmt: skip
        assert status in (200, 400, 401), (path, value)
    body = b'{"refresh_token": "' + value + b'"}'
    status = await _raw(api, b"POST /v1/auth/refresh HTTP/1.1\r\nHost: x\r\nConnection: close"
                        b"\r\nContent-Type: application/json\r\nContent-Length: "
                        + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip
    assert status in (400, 401, 422), value


def test_the_roles_in_docs_api_md_are_the_policys(api: Client) -> None:
    """docs/api.md's table says, for every endpoint, the roles the shipped policy allows."""
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "api.md").read_text()
    rows = re.findall(r"^\| `(\w+) (/[^`?]*)[^`]*` \| [^|]* \| ([^|]*) \|$", text, re.M)
    documented = {(m, p): roles.strip() for m, p, roles in rows}
    for route in api.app[ROUTES].values():
        if route.resource.startswith("billing."):
            continue  # documented with enterprise billing
        roles = documented.get((route.method, route.path))
        assert roles is not None, f"{route.method} {route.path} is not in docs/api.md's table"
        if route.public:
            assert roles.startswith("none"), (route.path, roles)
        else:
            assert roles == ", ".join(POLICY.roles_for(route.resource, route.action)), route.path


async def test_the_operator_limit_is_a_setting_too(
    store: Store, redis_url: str, clock: Clock
) -> None:
    from ocs.config import load_settings
    from ocs.service import auth_config

    config = auth_config(load_settings({"OCS_OPERATOR_MAX_TOPUP": "1.00"}))
    assert config.operator_max_topup == 1_000_000
    async for api, _ in _serve(store, redis_url, clock, operator_max_topup=1_000_000):
        await make_subscriber(api)
        token = await make_key(api, "operator")
        url = "/v1/subscribers/46700000001/topups"
        body = {"amount": "1.01", "reference": "r1"}
        assert (await api.post(url, json=body, headers=bearer(token))).status == 403
        body = {"amount": "1.00", "reference": "r2"}
        assert (await api.post(url, json=body, headers=bearer(token))).status == 201
