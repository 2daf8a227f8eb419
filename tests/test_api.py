"""The HTTP API through a real aiohttp server, with a real Store on the test session's Redis."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ocs.api.app import create_app
from ocs.auth.credentials import AuthConfig
from ocs.charging.tariffs import TariffRegistry
from ocs.constants import IDEMPOTENCY_TTL_REFERENCE, IDEMPOTENCY_TTL_SESSION
from ocs.metrics import Metrics
from ocs.redis_server import EmbeddedRedis
from ocs.store.cluster import hot_client
from ocs.store.redis_client import PipelinedRedis
from ocs.store.store import Store
from tariffs import PlanBook, TariffRater, load_plans
from tests.contract import contract_trace

PLANS = load_plans()
#: 2024-05-01T12:00:00Z
T0 = 1_714_564_800_000

Client = TestClient[web.Request, web.Application]
#: The bootstrap admin token of these tests (ocs.auth; docs/security.md).
ADMIN = "test-admin-token"


class FakeClock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def make_store(client: PipelinedRedis) -> Store:
    return Store(
        client,
        session_ttl_ms=IDEMPOTENCY_TTL_SESSION * 1000,
        reference_ttl_ms=IDEMPOTENCY_TTL_REFERENCE * 1000,
    )


async def serve(store: Store, metrics: Metrics, clock: FakeClock) -> Client:
    registry = TariffRegistry(store, TariffRater(PlanBook(PLANS)), PLANS)
    await registry.refresh()
    app = create_app(store, metrics, tariffs=registry, clock=clock,
                     auth=AuthConfig(admin_token=ADMIN))  # fmt: skip
    client: Client = TestClient(
        TestServer(app),
        headers={"Authorization": f"Bearer {ADMIN}"},
        trace_configs=[contract_trace()],
    )
    await client.start_server()
    return client


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[Store]:
    async with hot_client(redis_url) as client:
        yield make_store(client)


@pytest.fixture
async def api(store: Store, metrics: Metrics, clock: FakeClock) -> AsyncIterator[Client]:
    client = await serve(store, metrics, clock)
    try:
        yield client
    finally:
        await client.close()


async def create(api: Client, msisdn: str = "46700000001", **extra: Any) -> dict[str, Any]:
    body = {"msisdn": msisdn, "balance": "10.00", "plan": "prepaid-basic", **extra}
    resp = await api.post("/v1/subscribers", json=body)
    assert resp.status == 201, await resp.text()
    data: dict[str, Any] = await resp.json()
    return data


async def get(api: Client, msisdn: str = "46700000001") -> dict[str, Any]:
    resp = await api.get(f"/v1/subscribers/{msisdn}")
    assert resp.status == 200, await resp.text()
    data: dict[str, Any] = await resp.json()
    return data


async def snapshot(store: Store) -> dict[bytes, Any]:
    """Every key and its dump: "changes nothing" means this is the same before and after."""
    keys = await store.client.execute("KEYS", "*")
    return {k: await store.client.execute("DUMP", k) for k in sorted(keys)}


# -- subscribers --------------------------------------------------------------------------------


async def test_create_and_get(api: Client, clock: FakeClock) -> None:
    resp = await api.post(
        "/v1/subscribers",
        json={
            "msisdn": "46700000001",
            "balance": "12.50",
            "plan": "prepaid-basic",
            "credit_limit": "5",
            "buckets": [
                {"id": "free-min", "service": "voice", "units": 600, "priority": 1},
                {
                    "id": "data-1",
                    "service": "data",
                    "units": 10**9,
                    "expires_at": "2030-01-31T00:00:00+01:00",
                },
            ],
        },
    )
    assert resp.status == 201
    assert resp.headers["Location"] == "/v1/subscribers/46700000001"
    created = await resp.json()
    assert created == await get(api)
    assert created == {
        "msisdn": "46700000001",
        "balance": "12.50",
        "reserved": "0.00",
        "available": "17.50",
        "credit_limit": "5.00",
        "state": "active",
        "plan": "prepaid-basic",
        "version": 1,
        "created_at": "2024-05-01T12:00:00.000Z",
        "updated_at": "2024-05-01T12:00:00.000Z",
        "barring": {"network": "none", "by_balance": "none", "engaged": [], "thresholds": None},
        "buckets": [
            {
                "id": "free-min",
                "service": "voice",
                "units": 600,
                "reserved": 0,
                "priority": 1,
                "expires_at": None,
            },
            {
                "id": "data-1",
                "service": "data",
                "units": 10**9,
                "reserved": 0,
                "priority": 0,
                "expires_at": "2030-01-30T23:00:00.000Z",
            },
        ],
        "sessions": [],
    }


async def test_create_twice_is_a_conflict(api: Client, store: Store) -> None:
    await create(api)
    before = await snapshot(store)
    resp = await api.post(
        "/v1/subscribers",
        json={"msisdn": "46700000001", "balance": "99", "plan": "gov-payu"},
    )
    assert resp.status == 409
    assert resp.content_type == "application/problem+json"
    body = await resp.json()
    assert body["status"] == 409
    assert body["type"] == "urn:ocs:problem:subscriber-exists"
    assert await snapshot(store) == before


async def test_create_with_a_reference_is_idempotent(api: Client) -> None:
    first = await create(api, reference="ticket-1", balance="3")
    again = await create(api, reference="ticket-1", balance="3")
    assert again == first
    assert first["balance"] == "3.00"
    resp = await api.post(
        "/v1/subscribers",
        json={
            "msisdn": "46700000001",
            "plan": "prepaid-basic",
            "balance": "4",
            "reference": "ticket-1",
        },
    )
    assert resp.status == 409
    assert (await resp.json())["type"] == "urn:ocs:problem:reference-conflict"


async def test_create_with_state(api: Client) -> None:
    created = await create(api, state="barred-outgoing", balance="0")
    assert created["state"] == "barred-outgoing"
    assert created["balance"] == "0.00"


async def test_patch(api: Client, clock: FakeClock) -> None:
    await create(api, buckets=[{"id": "b1", "service": "sms", "units": 10}])
    clock.now += 1000
    resp = await api.patch(
        "/v1/subscribers/46700000001",
        json={
            "plan": "gov-payu",
            "credit_limit": "20.5",
            "state": "suspended",
            "add_buckets": [
                {"id": "b1", "service": "sms", "units": 5},
                {"id": "b2", "service": "voice", "units": 60},
            ],
        },
    )
    assert resp.status == 200, await resp.text()
    acct = await resp.json()
    assert acct == await get(api)
    assert acct["plan"] == "gov-payu"
    assert acct["credit_limit"] == "20.50"
    assert acct["available"] == "30.50"
    assert acct["state"] == "suspended"
    assert acct["updated_at"] == "2024-05-01T12:00:01.000Z"
    assert [(b["id"], b["units"]) for b in acct["buckets"]] == [("b1", 15), ("b2", 60)]
    resp = await api.patch("/v1/subscribers/46700000001", json={"credit_limit": "0"})
    assert (await resp.json())["credit_limit"] == "0.00"


async def test_patch_needs_a_change(api: Client, store: Store) -> None:
    await create(api)
    before = await snapshot(store)
    for body in ({}, {"reference": "r1"}):
        resp = await api.patch("/v1/subscribers/46700000001", json=body)
        assert resp.status == 422
        assert (await resp.json())["field"] == "body"
    assert await snapshot(store) == before


async def test_patch_unknown_subscriber(api: Client) -> None:
    resp = await api.patch("/v1/subscribers/46700000009", json={"state": "active"})
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"


async def test_list(api: Client) -> None:
    numbers = {f"4670000{i:04d}" for i in range(25)}
    for n in numbers:
        await create(api, n)
    seen: list[str] = []
    cursor: str | None = "0"
    while cursor is not None:
        resp = await api.get("/v1/subscribers", params={"cursor": cursor, "count": "10"})
        assert resp.status == 200
        page = await resp.json()
        seen += page["subscribers"]
        cursor = page["cursor"]
    assert sorted(set(seen)) == sorted(numbers)
    resp = await api.get("/v1/subscribers", params={"count": "0"})
    assert resp.status == 422
    assert (await resp.json())["field"] == "count"
    for cursor in ("x", "-1", str(2**64)):
        resp = await api.get("/v1/subscribers", params={"cursor": cursor})
        assert resp.status == 422
        assert (await resp.json())["field"] == "cursor"


N1 = "46700000001"


@pytest.mark.parametrize(
    ("method", "url", "field", "detail"),
    [
        ("GET", "/v1/subscribers?page=2", "page", "is not a query parameter of this route"),
        ("GET", "/v1/subscribers?count=ten", "count", "must be an integer from 1 to 1000"),
        ("GET", "/v1/subscribers?count=1&count=2", "count", "is given more than once"),
        ("GET", f"/v1/subscribers/{N1}/events?limit=1001", "limit", "must be an integer"),
        ("GET", f"/v1/subscribers/{N1}/events?before=12", "before", "must be an id such as"),
        ("GET", f"/v1/subscribers/{N1}?fields=balance", "fields", "is not a query parameter"),
        ("GET", "/v1/tariffs?plan=basic", "plan", "is not a query parameter"),
        ("GET", "/v1/audit?since=2026-11-01T00:00:00", "since", "must carry a time zone"),
        ("GET", "/v1/audit?until=yesterday", "until", "must be an RFC 3339 time"),
        ("POST", "/v1/subscribers?dry_run=1", "dry_run", "is not a query parameter"),
        ("POST", f"/v1/subscribers/{N1}/topups?amount=5", "amount", "is not a query parameter"),
        ("GET", "/healthz?verbose=1", "verbose", "is not a query parameter"),
    ],
)
async def test_query_parameters_are_read_by_their_declarations(
    api: Client, store: Store, method: str, url: str, field: str, detail: str
) -> None:
    """One code path for every route (ocs.api.request.query, run by the error middleware
    before any handler): an undeclared, repeated or ill-typed parameter is a 422 naming it,
    and nothing changes."""
    await create(api, N1, balance="10.00")
    before = await store.get_account(N1)
    body: dict[str, str] = {"msisdn": "46700000002", "balance": "1", "plan": "prepaid-basic"}
    if "topups" in url:
        body = {"amount": "5", "reference": "T-1"}
    resp = await api.request(method, url, json=body if method == "POST" else None)
    assert resp.status == 422, await resp.text()
    problem = await resp.json()
    assert problem["type"] == "urn:ocs:problem:invalid-input"
    assert problem["field"] == field
    assert detail in problem["errors"][0]["detail"]
    assert await store.get_account(N1) == before
    assert await store.get_account("46700000002") is None


async def test_declared_defaults_and_types_reach_the_handler(api: Client) -> None:
    """What the handlers get is what the declarations say: absent is the default page, an
    integer is an int (the subscribers' cursor, up to 2**64 - 1)."""
    await create(api, N1)
    resp = await api.get("/v1/subscribers", params={"cursor": str(2**64 - 1), "count": "1"})
    assert resp.status == 200, await resp.text()
    resp = await api.get(f"/v1/subscribers/{N1}/events")
    assert resp.status == 200
    assert len((await resp.json())["events"]) == 1  # the create event; page size 100


@pytest.mark.parametrize(
    "path",
    [
        "/v1/subscribers/46700000009",
        "/v1/subscribers/not-a-number",
        "/v1/subscribers/46700000009/events",
    ],
)
async def test_unknown_subscriber_is_a_404_problem(api: Client, path: str) -> None:
    resp = await api.get(path)
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"
    body = await resp.json()
    assert body["status"] == 404
    assert body["type"] == "urn:ocs:problem:unknown-subscriber"


async def test_credit_to_unknown_subscriber(api: Client, store: Store) -> None:
    before = await snapshot(store)  # (the plans' thresholds, published by the registry)
    assert not any(b":acct:" in k for k in before)
    for what in ("topups", "refunds"):
        resp = await api.post(
            f"/v1/subscribers/46700000009/{what}", json={"amount": "1", "reference": "r"}
        )
        assert resp.status == 404
        assert resp.content_type == "application/problem+json"
    assert await snapshot(store) == before


async def test_unknown_route_and_method_are_problems(api: Client) -> None:
    resp = await api.get("/v1/nothing-here")
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"
    resp = await api.delete("/v1/subscribers/46700000001")
    assert resp.status == 405
    assert resp.content_type == "application/problem+json"
    assert "PATCH" in resp.headers["Allow"]


# -- money in -----------------------------------------------------------------------------------


async def test_topup_is_idempotent_by_reference(api: Client, store: Store) -> None:
    await create(api)
    url = "/v1/subscribers/46700000001/topups"
    resp = await api.post(url, json={"amount": "5.25", "reference": "T-1", "note": "shop 12"})
    assert resp.status == 201
    first = await resp.json()
    assert first == {
        "msisdn": "46700000001",
        "amount": "5.25",
        "reference": "T-1",
        "balance": "15.25",
    }
    before = await snapshot(store)
    assert "Idempotent-Replayed" not in resp.headers
    resp = await api.post(url, json={"amount": "5.25", "reference": "T-1", "note": "shop 12"})
    assert resp.status == 201 and resp.headers["Idempotent-Replayed"] == "true"
    assert await resp.json() == first
    # Same reference, another amount: a client error naming the reference; nothing changes.
    for kind, body in (
        ("topups", {"amount": "100", "reference": "T-1"}),
        ("refunds", {"amount": "1", "reference": "T-1"}),
        ("adjustments", {"amount": "1", "reference": "T-1", "reason": "x"}),
    ):
        resp = await api.post(f"/v1/subscribers/46700000001/{kind}", json=body)
        if kind != "topups":  # (the first use of the reference for that kind)
            assert resp.status == 201
            before = await snapshot(store)
            resp = await api.post(f"/v1/subscribers/46700000001/{kind}",
                                  json={**body, "amount": "2"})  # fmt: skip
        assert resp.status == 409 and resp.content_type == "application/problem+json"
        problem = await resp.json()
        assert problem["type"] == "urn:ocs:problem:reference-conflict"
        assert problem["reference"] == "T-1" and "'T-1'" in problem["detail"]
        assert await snapshot(store) == before
    assert (await get(api))["balance"] == "17.25"  # (the refund's and adjustment's first use)
    # A new reference is a new top-up.
    resp = await api.post(url, json={"amount": 2, "reference": "T-2"})
    assert (await resp.json())["balance"] == "19.25"


async def test_adjustments_and_refunds(api: Client) -> None:
    await create(api)
    base = "/v1/subscribers/46700000001"
    resp = await api.post(
        f"{base}/adjustments", json={"amount": "-12.000001", "reference": "A-1", "reason": "fix"}
    )
    assert resp.status == 201
    assert await resp.json() == {
        "msisdn": "46700000001",
        "amount": "-12.000001",
        "reference": "A-1",
        "balance": "-2.000001",
    }
    resp = await api.post(f"{base}/refunds", json={"amount": "0.000001", "reference": "A-1"})
    assert resp.status == 201  # the same reference for another kind is another operation
    assert (await resp.json())["balance"] == "-2.00"
    acct = await get(api)
    assert (acct["balance"], acct["available"]) == ("-2.00", "-2.00")
    resp = await api.post(
        f"{base}/adjustments", json={"amount": "0", "reference": "A-2", "reason": "x"}
    )
    assert resp.status == 422
    assert (await resp.json())["field"] == "amount"
    resp = await api.post(f"{base}/adjustments", json={"amount": "1", "reference": "A-2"})
    assert resp.status == 422
    assert (await resp.json())["field"] == "reason"
    resp = await api.post(f"{base}/refunds", json={"amount": "-1", "reference": "R-2"})
    assert resp.status == 422
    assert (await resp.json())["field"] == "amount"


# -- events -------------------------------------------------------------------------------------


async def test_events_newest_first_with_paging(api: Client, clock: FakeClock) -> None:
    await create(api)
    await create(api, "46700000002")  # maybe the same outbox: must not show up
    for i in range(5):
        clock.now += 1000
        resp = await api.post(
            "/v1/subscribers/46700000001/topups",
            json={"amount": f"{i + 1}", "reference": f"T-{i}"},
        )
        assert resp.status == 201
    url = "/v1/subscribers/46700000001/events"
    resp = await api.get(url, params={"limit": "4"})
    assert resp.status == 200
    page = await resp.json()
    events = page["events"]
    assert [e["type"] for e in events] == ["topup"] * 4
    assert [e["amount"] for e in events] == ["5.00", "4.00", "3.00", "2.00"]
    assert [e["balance"] for e in events] == ["25.00", "20.00", "16.00", "13.00"]
    assert events[0]["at"] == "2024-05-01T12:00:05.000Z"
    assert events[0]["fields"]["rk"] == "topup:T-4"
    assert events[0]["fields"]["amt"] == "5000000"
    assert page["next"] == events[-1]["id"]
    resp = await api.get(url, params={"limit": "4", "before": page["next"]})
    rest = await resp.json()
    assert [e["type"] for e in rest["events"]] == ["topup", "create"]
    assert "amount" not in rest["events"][1]
    assert rest["events"][1]["balance"] == "10.00"
    assert rest["next"] is None
    all_ids = [e["id"] for e in events + rest["events"]]
    assert all_ids == sorted(all_ids, key=lambda i: tuple(map(int, i.split("-"))), reverse=True)
    resp = await api.get(url, params={"limit": "6"})
    assert (await resp.json())["next"] is None
    for before in ("yesterday", f"{2**64}-0", "1-"):
        resp = await api.get(url, params={"before": before})
        assert resp.status == 422
        assert (await resp.json())["field"] == "before"
    for limit in ("0", "1001", "two", "²"):
        resp = await api.get(url, params={"limit": limit})
        assert resp.status == 422
        assert (await resp.json())["field"] == "limit"


# -- bad input ------------------------------------------------------------------------------------

GOOD = {"msisdn": "46700000001", "balance": "10.00", "plan": "prepaid-basic"}


def with_(**changes: Any) -> dict[str, Any]:
    body = dict(GOOD)
    for k, v in changes.items():
        if v is ...:
            del body[k]
        else:
            body[k] = v
    return body


BAD_CREATES = [
    pytest.param(with_(msisdn=...), "msisdn", id="missing-msisdn"),
    pytest.param(with_(msisdn="4670abc"), "msisdn", id="msisdn-letters"),
    pytest.param(with_(msisdn="+46700000001"), "msisdn", id="msisdn-plus"),
    pytest.param(with_(msisdn="12"), "msisdn", id="msisdn-short"),
    pytest.param(with_(msisdn="1234567890123456"), "msisdn", id="msisdn-long"),
    pytest.param(with_(msisdn=46700000001), "msisdn", id="msisdn-number"),
    pytest.param(with_(balance=...), "balance", id="missing-balance"),
    pytest.param(with_(balance=12.5), "balance", id="balance-float"),
    pytest.param(with_(balance="1.0000001"), "balance", id="balance-7-decimals"),
    pytest.param(with_(balance="abc"), "balance", id="balance-abc"),
    pytest.param(with_(balance=True), "balance", id="balance-bool"),
    pytest.param(with_(balance=None), "balance", id="balance-null"),
    pytest.param(with_(balance="1000000000.000001"), "balance", id="balance-over-max"),
    pytest.param(with_(balance=10**30), "balance", id="balance-huge-int"),
    pytest.param(with_(balance="-1"), "balance", id="balance-negative"),
    pytest.param(with_(credit_limit="-5"), "credit_limit", id="negative-credit-limit"),
    pytest.param(with_(credit_limit=5.0), "credit_limit", id="credit-limit-float"),
    pytest.param(with_(plan="gold"), "plan", id="unknown-plan"),
    pytest.param(with_(plan=...), "plan", id="missing-plan"),
    pytest.param(with_(state="deleted"), "state", id="unknown-state"),
    pytest.param(
        with_(buckets=[{"id": "b", "service": "voice", "units": -1}]),
        "buckets[0].units",
        id="bucket-units-negative",
    ),
    pytest.param(
        with_(buckets=[{"id": "b", "service": "voice", "units": 1.5}]),
        "buckets[0].units",
        id="bucket-units-float",
    ),
    pytest.param(
        with_(buckets=[{"id": "b", "service": "voice", "units": 10**16}]),
        "buckets[0].units",
        id="bucket-units-over-max",
    ),
    pytest.param(
        with_(buckets=[{"id": "", "service": "voice", "units": 1}]),
        "buckets[0].id",
        id="bucket-id-empty",
    ),
    pytest.param(
        with_(buckets=[{"id": "b", "service": "voice", "units": 1, "expires_at": "tomorrow"}]),
        "buckets[0].expires_at",
        id="bucket-expiry-garbage",
    ),
    pytest.param(
        with_(
            buckets=[{"id": "b", "service": "voice", "units": 1, "expires_at": "2030-01-01T00:00"}]
        ),
        "buckets[0].expires_at",
        id="bucket-expiry-no-zone",
    ),
    pytest.param(
        with_(
            buckets=[{"id": "b", "service": "voice", "units": 1, "expires_at": "2020-01-01T00:00Z"}]
        ),
        "buckets[0].expires_at",
        id="bucket-expiry-past",
    ),
    pytest.param(
        with_(
            buckets=[
                {"id": "b", "service": "voice", "units": 1},
                {"id": "b", "service": "voice", "units": 2},
            ]
        ),
        "buckets[1].id",
        id="bucket-id-twice",
    ),
    pytest.param(
        with_(buckets=[{"id": "b", "service": "vocie", "units": 1}]),
        "buckets[0].service",
        id="bucket-service-not-of-the-plan",
    ),
    pytest.param(with_(buckets={"id": "b"}), "buckets", id="buckets-not-a-list"),
    pytest.param(with_(buckets=["b"]), "buckets[0]", id="bucket-not-an-object"),
    pytest.param(
        with_(buckets=[{"id": "b", "service": "voice", "units": 1, "colour": "red"}]),
        "buckets[0].colour",
        id="bucket-unknown-field",
    ),
    pytest.param(with_(balance={"amount": "10.00"}), "balance", id="nested-balance"),
    pytest.param(with_(msisdn=["46700000001"]), "msisdn", id="nested-msisdn"),
    pytest.param(with_(plan={"name": "prepaid-basic"}), "plan", id="nested-plan"),
    pytest.param(with_(credit_limt="5"), "credit_limt", id="unknown-field"),
    pytest.param(with_(reference="x" * 129), "reference", id="reference-too-long"),
    pytest.param(["46700000001", "10.00"], "body", id="json-array"),
    pytest.param("46700000001", "body", id="json-string"),
]


@pytest.mark.parametrize(("body", "field"), BAD_CREATES)
async def test_bad_create_is_422_naming_the_field(
    api: Client, store: Store, body: object, field: str
) -> None:
    await create(api, "46700000002")
    before = await snapshot(store)
    resp = await api.post("/v1/subscribers", data=json.dumps(body))
    assert resp.status == 422
    assert resp.content_type == "application/problem+json"
    problem = await resp.json()
    assert problem["status"] == 422
    assert problem["title"] == "Unprocessable Content"
    assert problem["field"] == field, problem
    assert field in problem["detail"]
    assert problem["errors"][0]["field"] == field
    assert await snapshot(store) == before


async def test_float_money_says_decimal_string(api: Client) -> None:
    resp = await api.post("/v1/subscribers", json=with_(balance=12.5))
    assert "must be a decimal string" in (await resp.json())["detail"]


async def test_every_bad_field_is_listed(api: Client) -> None:
    resp = await api.post(
        "/v1/subscribers", json={"msisdn": "x", "balance": 1.5, "plan": "gold", "state": "?"}
    )
    assert resp.status == 422
    fields = [e["field"] for e in (await resp.json())["errors"]]
    assert fields == ["msisdn", "balance", "plan", "state"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("topups", {"amount": 12.5, "reference": "r"}, "amount"),
        ("topups", {"amount": "0", "reference": "r"}, "amount"),
        ("topups", {"amount": "-1", "reference": "r"}, "amount"),
        ("topups", {"amount": "1.0000001", "reference": "r"}, "amount"),
        ("topups", {"amount": "2000000000", "reference": "r"}, "amount"),
        ("topups", {"amount": "1"}, "reference"),
        ("topups", {"amount": "1", "reference": ""}, "reference"),
        ("topups", {"amount": "1", "reference": "r" * 129}, "reference"),
        ("topups", {"amount": "1", "reference": {"id": "r"}}, "reference"),
        ("topups", {"amount": "1", "reference": "r", "note": 5}, "note"),
        ("topups", {"amount": "1", "reference": "r", "reason": "x"}, "reason"),
        ("adjustments", {"amount": "1", "reference": "r", "reason": ""}, "reason"),
        ("refunds", {"amount": "abc", "reference": "r"}, "amount"),
        ("topups", [1], "body"),
    ],
)
async def test_bad_credit_is_422_naming_the_field(
    api: Client, store: Store, path: str, body: object, field: str
) -> None:
    await create(api)
    before = await snapshot(store)
    resp = await api.post(f"/v1/subscribers/46700000001/{path}", json=body)
    assert resp.status == 422
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["field"] == field
    assert await snapshot(store) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"plan": "gold"}, "plan"),
        ({"credit_limit": "-1"}, "credit_limit"),
        ({"credit_limit": None}, "credit_limit"),
        ({"state": "gone"}, "state"),
        ({"add_buckets": [{"id": "b", "service": "sms", "units": 0}]}, "add_buckets[0].units"),
        ({"add_buckets": [{"id": "b", "units": 1}]}, "add_buckets[0].service"),
        # A service the account's plan does not have (its bucket would never be used).
        ({"add_buckets": [{"id": "b", "service": "fax", "units": 1}]}, "add_buckets[0].service"),
        (
            {"plan": "bundle-10", "add_buckets": [{"id": "b", "service": "vocie", "units": 1}]},
            "add_buckets[0].service",
        ),
        ({"balance": "5"}, "balance"),
    ],
)
async def test_bad_patch_is_422_naming_the_field(
    api: Client, store: Store, body: object, field: str
) -> None:
    await create(api)
    before = await snapshot(store)
    resp = await api.patch("/v1/subscribers/46700000001", json=body)
    assert resp.status == 422
    assert (await resp.json())["field"] == field
    assert await snapshot(store) == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/subscribers"),
        ("PATCH", "/v1/subscribers/46700000001"),
        ("POST", "/v1/subscribers/46700000001/topups"),
    ],
)
@pytest.mark.parametrize(
    "data", [b"{not json", b"", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000, b"NaN1"]
)
async def test_non_json_body_is_400(
    api: Client, store: Store, method: str, path: str, data: bytes
) -> None:
    await create(api)
    before = await snapshot(store)
    resp = await api.request(method, path, data=data)
    assert resp.status == 400
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["type"] == "urn:ocs:problem:malformed-json"
    assert await snapshot(store) == before


# -- health, readiness, metrics -------------------------------------------------------------------


async def test_healthz_and_readyz(api: Client) -> None:
    resp = await api.get("/healthz")
    assert (resp.status, await resp.json()) == (200, {"status": "ok"})
    resp = await api.get("/readyz")
    assert (resp.status, await resp.json()) == (200, {"status": "ready"})


async def test_redis_down(tmp_path: Path, metrics: Metrics, clock: FakeClock) -> None:
    async with EmbeddedRedis(tmp_path / "redis", appendonly=False) as server:
        redis = PipelinedRedis.from_url(server.url)
        await redis.connect()
        api = await serve(make_store(redis), metrics, clock)
        try:
            assert (await api.get("/readyz")).status == 200
            await create(api)
            server.stop()
            resp = await api.get("/readyz")
            assert resp.status == 503
            assert resp.content_type == "application/problem+json"
            assert (await resp.json())["type"] == "urn:ocs:problem:store-unavailable"
            resp = await api.get("/v1/subscribers/46700000001")
            assert resp.status == 503
            assert resp.content_type == "application/problem+json"
            assert "Traceback" not in await resp.text()
            resp = await api.get("/healthz")
            assert resp.status == 200
            text = (await (await api.get("/metrics")).read()).decode()
            assert "ocs_redis_errors_total 2.0" in text
            assert (
                'ocs_http_requests_total{code="503",method="GET",'
                'route="/v1/subscribers/{msisdn}"} 1.0'
            ) in text
        finally:
            await api.close()
            await redis.close()


async def test_unexpected_error_is_a_500_without_trace(
    api: Client, store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom(msisdn: str, **kw: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(store, "get_account", boom)
    resp = await api.get("/v1/subscribers/46700000001")
    assert resp.status == 500
    assert resp.content_type == "application/problem+json"
    text = await resp.text()
    assert "secret" not in text
    assert "Traceback" not in text
    assert "secret internals" in caplog.text


async def test_metrics(api: Client) -> None:
    await create(api)
    await get(api)
    await get(api)
    await api.get("/v1/subscribers/46700000009")
    await api.get("/healthz")
    resp = await api.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = (await resp.read()).decode()
    for line in [
        'ocs_http_requests_total{code="201",method="POST",route="/v1/subscribers"} 1.0',
        'ocs_http_requests_total{code="200",method="GET",route="/v1/subscribers/{msisdn}"} 2.0',
        'ocs_http_requests_total{code="404",method="GET",route="/v1/subscribers/{msisdn}"} 1.0',
        'ocs_http_request_seconds_count{method="GET",route="/v1/subscribers/{msisdn}"} 3.0',
        'ocs_http_request_seconds_bucket{le="0.0001",method="POST",route="/v1/subscribers"}',
        "ocs_redis_errors_total 0.0",
        'ocs_build_info{python="',
        "process_cpu_seconds_total",
        "ocs_workers 1.0",
    ]:
        assert line in text, line
    assert "/healthz" not in text


async def test_metrics_families_and_probes() -> None:
    m = Metrics()
    m.probes.append(lambda m: m.set("ocs_open_connections", ("native",), 1))

    def broken(m: Metrics) -> None:
        raise RuntimeError("a probe that fails leaves the scrape working")

    m.cluster_probes.append(broken)
    m.observe("native", "reserve", "success", 0.0002)
    m.observe("native", "reserve", "success", 0.0003)
    m.observe_client("hlr", "bar", "applied", 0.01)
    m.charged(1_500_000)
    text = (await m.render_now()).decode()
    assert 'ocs_open_connections{protocol="native"} 1.0' in text
    assert 'ocs_requests_total{outcome="success",protocol="native",verb="reserve"} 2.0' in text
    assert 'ocs_request_seconds_bucket{le="0.0005",protocol="native",verb="reserve"} 2.0' in text
    assert 'ocs_client_requests_total{action="bar",outcome="applied",service="hlr"} 1.0' in text
    assert "ocs_charged_micros_total 1.5e+06" in text


def test_workers_sum_counters_and_drop_dead_workers_gauges(tmp_path: Path) -> None:
    # Two workers as two Metrics on one directory; a third file from a worker that died.
    a, b = Metrics(tmp_path, worker="a"), Metrics(tmp_path, worker="b")
    a.observe("native", "debit", "success", 0.001)
    b.observe("native", "debit", "success", 0.002)
    b.set("ocs_open_connections", ("native",), 3)
    a.set("ocs_outbox_length", ("0",), 7)  # cluster-wide: served as the scraper read it
    b.flush()
    dead = b.snapshot()
    dead["pid"] = 2**22 + 12345  # above pid_max on Linux: never alive
    (tmp_path / "dead.json").write_text(json.dumps(dead), encoding="utf-8")
    text = a.render().decode()
    assert 'ocs_requests_total{outcome="success",protocol="native",verb="debit"} 3.0' in text
    assert 'ocs_request_seconds_count{protocol="native",verb="debit"} 3.0' in text
    # b is alive (this process), the dead copy's 3 connections are not counted.
    assert 'ocs_open_connections{protocol="native"} 3.0' in text
    assert 'ocs_outbox_length{bucket="0"} 7.0' in text
    assert "ocs_workers 2.0" in text


def test_a_counter_over_workers_is_this_ones_now_plus_the_others_last_written(
    tmp_path: Path,
) -> None:
    """What the dashboard's requests/s reads (Metrics.counter_sum)."""
    ok, refused = ("native", "debit", "success"), ("native", "debit", "credit-limit")
    alone = Metrics()
    alone.observe(*ok, 0.001)
    assert alone.counter_sum("ocs_requests") == {ok: 1}
    a, b = Metrics(tmp_path, worker="a"), Metrics(tmp_path, worker="b")
    a.observe(*ok, 0.001)
    a.flush()
    a.observe(*ok, 0.001)  # a's own file is one behind: its counts now are used instead
    b.observe(*refused, 0.001)
    assert a.counter_sum("ocs_requests") == {ok: 2}  # b has not written its counts yet
    b.flush()
    assert a.counter_sum("ocs_requests") == {ok: 2, refused: 1}
    assert b.counter_sum("ocs_requests") == {ok: 1, refused: 1}  # a's as last written
