"""Rating and tariffs through the HTTP API: what-if prices, plans listed, loaded and refused,
bundles granted at creation. A real aiohttp server, a real Store on the test session's Redis."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ocs.api.app import create_app
from ocs.auth.credentials import AuthConfig
from ocs.charging.tariffs import TariffRegistry
from ocs.constants import IDEMPOTENCY_TTL_REFERENCE, IDEMPOTENCY_TTL_SESSION
from ocs.metrics import Metrics
from ocs.store.cluster import hot_client
from ocs.store.store import Store
from tariffs import PlanBook, TariffRater, load_plans
from tests.contract import contract_trace

Client = TestClient[web.Request, web.Application]
ADMIN = "test-admin-token"


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


#: A Sunday in February 2026: every shipped plan is in force.
NOW = ms("2026-02-01T12:00:00Z")

#: Two bands in UTC: peak on weekdays 08:00-18:00 at 0.60 a minute, off-peak 0.30; the first
#: minute charged whole, then per second; half-even to the cent; no tax.
SMALL = """\
name = "small"
version = 1
effective_from = 2026-01-01T00:00:00Z
description = "Two bands, for tests"
currency = "EUR"
timezone = "UTC"

[rounding]
method = "half-even"
decimals = 2

[numbering]
country_code = "49"

[destinations]
national = ["49"]
world = ["*"]

[[bands]]
name = "peak"
days = ["weekday"]
from = "08:00"
to = "18:00"

[[bands]]
name = "offpeak"

[services.voice]
unit = "seconds"
default_quota = 60

[services.sms]
unit = "events"
default_quota = 1

[[rates]]
service = "voice"
first_increment = 60
increment = 1
price = "0.60"
per = 60

[[rates]]
service = "voice"
bands = ["offpeak"]
first_increment = 60
increment = 1
price = "0.30"
per = 60

[[rates]]
service = "sms"
price = "0.10"
"""


class FakeClock:
    def __init__(self, now: int = NOW) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[Store]:
    async with hot_client(redis_url) as client:
        yield Store(
            client,
            session_ttl_ms=IDEMPOTENCY_TTL_SESSION * 1000,
            reference_ttl_ms=IDEMPOTENCY_TTL_REFERENCE * 1000,
        )


@pytest.fixture
async def registry(store: Store) -> TariffRegistry:
    plans = load_plans()
    reg = TariffRegistry(store, TariffRater(PlanBook(plans)), plans)
    await reg.refresh()
    return reg


@pytest.fixture
async def api(store: Store, registry: TariffRegistry, clock: FakeClock) -> AsyncIterator[Client]:
    app = create_app(
        store, Metrics(), tariffs=registry, clock=clock, auth=AuthConfig(admin_token=ADMIN)
    )
    client: Client = TestClient(
        TestServer(app),
        headers={"Authorization": f"Bearer {ADMIN}"},
        trace_configs=[contract_trace()],
    )
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def small(api: Client) -> None:
    resp = await api.post("/v1/tariffs", data=SMALL, headers={"Content-Type": "application/toml"})
    assert resp.status == 201, await resp.text()


async def rate(api: Client, **body: Any) -> dict[str, Any]:
    resp = await api.post("/v1/rate", json=body)
    assert resp.status == 200, await resp.text()
    data: dict[str, Any] = await resp.json()
    return data


async def plan_names(api: Client) -> list[str]:
    resp = await api.get("/v1/tariffs")
    assert resp.status == 200
    return [p["name"] for p in (await resp.json())["plans"]]


# -- POST /v1/rate --------------------------------------------------------------------------------


#: Monday 2026-11-23, one minute before the peak band ends (18:00 UTC).
CALL = {
    "plan": "small",
    "service": "voice",
    "to": "0301234567",
    "at": "2026-11-23T17:59:00Z",
    "duration": 125,
}


async def test_a_call_across_a_band_boundary(api: Client, small: None) -> None:
    # 60 s at peak (0.60 a minute: 0.60) + 65 s off-peak (0.30 a minute: 0.325) = 0.925,
    # half-even to the cent: 0.92 (the tie goes to the even cent).
    answer = await rate(api, **CALL)
    assert answer == {
        "plan": "small",
        "version": 1,
        "currency": "EUR",
        "service": "voice",
        "number": "49301234567",
        "destination": "national",
        "place": "home",
        "band_at_start": "peak",
        "started_at": "2026-11-23T17:59:00.000Z",
        "units": 125,
        "billed_units": 125,
        "lines": [
            {"kind": "usage", "text": "peak: 60 x 0.60 per 60", "units": 60, "amount": "0.60"},
            {"kind": "usage", "text": "offpeak: 65 x 0.30 per 60", "units": 65, "amount": "0.325"},
            {"kind": "rounding", "text": "half-even to 2 decimals", "amount": "-0.005"},
        ],
        "rounding": "half-even to 2 decimals",
        "total": "0.92",
        "used": 0,
        "total_used": "0.00",
        "charge": "0.92",
    }
    # units is the same as duration for seconds; the time may carry any offset.
    body = {k: v for k, v in CALL.items() if k != "duration"}
    again = await rate(api, **body, units=125)
    assert again == answer
    again = await rate(api, **{**CALL, "at": "2026-11-23T18:59:00+01:00"})
    assert again == answer


async def test_used_and_money(api: Client, small: None) -> None:
    # The same call reported after its first minute: cost(125) - cost(60) = 0.92 - 0.60.
    body = {**CALL, "duration": 65, "used": 60, "money": "0.30"}
    answer = await rate(api, **body)
    assert (answer["units"], answer["used"]) == (125, 60)
    assert (answer["total"], answer["total_used"], answer["charge"]) == ("0.92", "0.60", "0.32")
    # 0.30 after the first minute buys 61 s: 0.60 + 61 x 0.005 = 0.905 rounds (half-even) to
    # 0.90, a difference of 0.30; 62 s would cost 0.91.
    assert (answer["money"], answer["affordable"]) == ("0.30", 61)
    # An SMS: events, no destination needed; no money left buys none.
    sms = await rate(api, plan="small", service="sms", units=3, at="2026-11-23T12:00:00Z",
                     money="0")  # fmt: skip
    assert (sms["total"], sms["charge"], sms["affordable"]) == ("0.30", "0.30", 0)


async def test_zero_units_and_default_time(api: Client, small: None, clock: FakeClock) -> None:
    clock.now = ms("2026-11-24T09:00:00Z")
    answer = await rate(api, plan="small", service="voice", units=0)
    assert (answer["total"], answer["lines"], answer["started_at"]) == (
        "0.00", [], "2026-11-24T09:00:00.000Z"
    )  # fmt: skip
    assert answer["band_at_start"] == "peak"


async def test_a_shipped_plan(api: Client) -> None:
    # docs/tariffs.md: 30 s peak at 0.09 + 95 s off-peak at 0.06 = 0.14 incl. 19 % VAT.
    answer = await rate(api, plan="prepaid-basic", service="voice", to="0049301234",
                        at="2026-11-23T18:59:30+01:00", duration=125)  # fmt: skip
    assert answer["total"] == "0.14"
    tax = [ln for ln in answer["lines"] if ln["kind"] == "tax"]
    assert tax == [{"kind": "tax", "text": "of which tax 19%", "amount": "0.022352941176…",
                    "exact": "19/850", "counted": False}]  # fmt: skip
    roaming = await rate(api, plan="prepaid-basic", service="voice", to="+4930123",
                         location="20801", at="2026-11-23T12:00:00Z", units=30)  # fmt: skip
    assert roaming["place"] == "eu"


BAD_RATES = [
    pytest.param({"plan": "gold"}, "plan", id="unknown-plan"),
    pytest.param({"plan": None}, "plan", id="null-plan"),
    pytest.param({"service": "data"}, "service", id="unknown-service"),
    pytest.param({"service": 5}, "service", id="service-number"),
    pytest.param({"at": "yesterday"}, "at", id="bad-at"),
    pytest.param({"at": "2026-11-23T17:59:00"}, "at", id="at-without-offset"),
    pytest.param({"at": 1_700_000_000}, "at", id="at-number"),
    pytest.param({"at": "2300-01-01T00:00:00Z"}, "at", id="at-too-late"),
    pytest.param({"at": "2025-06-01T00:00:00Z"}, "at", id="at-before-the-plan"),
    pytest.param({"duration": 1.5}, "duration", id="float-duration"),
    pytest.param({"duration": -1}, "duration", id="negative-duration"),
    pytest.param({"duration": "60"}, "duration", id="string-duration"),
    pytest.param({"duration": ..., "units": 12.0}, "units", id="float-units"),
    pytest.param({"duration": ..., "units": -5}, "units", id="negative-units"),
    pytest.param({"duration": ...}, "units", id="no-units"),
    pytest.param({"units": 60}, "duration", id="units-and-duration"),
    pytest.param({"duration": 10**8 + 1}, "duration", id="too-many-seconds"),
    pytest.param({"service": "sms", "duration": 1}, "duration", id="duration-for-events"),
    pytest.param({"to": "not-a-number"}, "to", id="bad-number"),
    pytest.param({"to": "0" * 40}, "to", id="number-too-long"),
    pytest.param({"location": "99901"}, "location", id="no-place"),
    pytest.param({"used": -1}, "used", id="negative-used"),
    pytest.param({"used": 2.5}, "used", id="float-used"),
    pytest.param({"money": 0.5}, "money", id="float-money"),
    pytest.param({"money": "-1"}, "money", id="negative-money"),
    pytest.param({"money": "1.0000001"}, "money", id="money-7-decimals"),
    pytest.param({"destination": "49"}, "destination", id="unknown-field"),
]


@pytest.mark.parametrize(("change", "field"), BAD_RATES)
async def test_bad_rate_is_422_naming_the_field(
    api: Client, small: None, change: dict[str, Any], field: str
) -> None:
    body = {**CALL, **change}
    body = {k: v for k, v in body.items() if v is not ...}
    resp = await api.post("/v1/rate", json=body)
    assert resp.status == 422, await resp.text()
    assert resp.content_type == "application/problem+json"
    problem = await resp.json()
    assert problem["field"] == field, problem
    assert problem["type"] == "urn:ocs:problem:invalid-input"


async def test_rate_not_json_or_not_an_object(api: Client) -> None:
    resp = await api.post("/v1/rate", data=b"{plan")
    assert resp.status == 400
    resp = await api.post("/v1/rate", json=["small"])
    assert resp.status == 422
    assert (await resp.json())["field"] == "body"


async def test_rating_failure_is_a_422_on_the_body(api: Client, store: Store) -> None:
    # A plan whose only voice rate is for off-peak: at peak there is no price.
    text = SMALL.replace('name = "small"', 'name = "nights"').replace(
        'price = "0.60"', 'price = "0.60"\nbands = ["offpeak"]'
    )
    resp = await api.post("/v1/tariffs", data=text, headers={"Content-Type": "text/plain"})
    assert resp.status == 201, await resp.text()
    resp = await api.post("/v1/rate", json={**CALL, "plan": "nights"})
    assert resp.status == 422
    problem = await resp.json()
    assert problem["field"] == "body"
    assert "no rate for voice" in problem["detail"]


# -- tariffs --------------------------------------------------------------------------------------


async def test_list_and_show_the_shipped_plans(api: Client) -> None:
    resp = await api.get("/v1/tariffs")
    assert resp.status == 200
    plans = {p["name"]: p["versions"] for p in (await resp.json())["plans"]}
    assert sorted(plans) == ["bundle-10", "gov-payu", "prepaid-basic"]
    (v,) = plans["prepaid-basic"]
    assert v["version"] == 1
    assert v["effective_from"] == "2025-12-31T23:00:00.000Z"
    assert v["in_force"] is True
    assert v["currency"] == "EUR"
    assert "voice" in v["services"]
    assert v["source"].endswith("prepaid-basic.toml")
    resp = await api.get("/v1/tariffs/bundle-10")
    assert resp.status == 200
    detail = await resp.json()
    (v,) = detail["versions"]
    assert v["services"]["voice"] == {
        "unit": "seconds",
        "default_quota": 120,
        "direction": "outgoing",
        "session_cap": "5.00",
        "description": "",
    }
    assert v["services"]["voice-mt"]["direction"] == "incoming"
    assert v["destinations"] == ["international", "national", "premium", "toll-free"]
    assert v["bands"] == ["any"]
    assert v["tax"] == {"rate": "19", "inclusive": True}
    assert v["bundles"][0] == {
        "id": "minutes", "service": "voice", "units": 60000, "valid_days": 30, "priority": 0
    }  # fmt: skip
    resp = await api.get("/v1/tariffs/gold")
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["type"] == "urn:ocs:problem:unknown-plan"


async def test_load_a_plan_then_list_and_rate_with_it(
    api: Client, registry: TariffRegistry
) -> None:
    resp = await api.post(
        "/v1/tariffs", params={"source": "small.toml"}, data=SMALL,
        headers={"Content-Type": "application/toml"},
    )  # fmt: skip
    assert resp.status == 201
    assert resp.headers["Location"] == "/v1/tariffs/small"
    assert await resp.json() == {
        "name": "small", "version": 1, "effective_from": "2026-01-01T00:00:00.000Z"
    }  # fmt: skip
    assert "small" in await plan_names(api)
    resp = await api.get("/v1/tariffs/small")
    (v,) = (await resp.json())["versions"]
    assert (v["description"], v["bands"], v["bundles"]) == (
        "Two bands, for tests", ["peak", "offpeak"], []
    )  # fmt: skip
    assert (await rate(api, **CALL))["total"] == "0.92"
    # A second version from December: calls from then on are rated with it.
    v2 = SMALL.replace("version = 1", "version = 2").replace(
        "2026-01-01T00:00:00Z", "2026-12-01T00:00:00Z"
    ).replace('price = "0.30"', 'price = "0.12"')  # fmt: skip
    resp = await api.post("/v1/tariffs", data=v2, headers={"Content-Type": "application/toml"})
    assert resp.status == 201
    assert (await rate(api, **CALL))["total"] == "0.92"
    later = await rate(api, **{**CALL, "at": "2026-12-07T17:59:00Z"})
    assert (later["version"], later["total"]) == (2, "0.73")  # 0.60 + 65 x 0.002 = 0.73
    resp = await api.get("/v1/tariffs")
    small = next(p for p in (await resp.json())["plans"] if p["name"] == "small")
    assert [(v["version"], v["in_force"]) for v in small["versions"]] == [(1, True), (2, False)]
    # Another process (a registry over the same Redis) sees it too.
    other = TariffRegistry(registry.store, TariffRater(), [])
    await other.refresh()
    assert other.rater.book.names() == ["small"]


async def test_a_bad_plan_is_refused_whole(api: Client, store: Store) -> None:
    names = await plan_names(api)
    keys = await store.client.execute("KEYS", "*")
    bad = SMALL.replace('price = "0.60"', "price = 0.60").replace('to = "18:00"', 'to = "25:00"')
    resp = await api.post(
        "/v1/tariffs", params={"source": "plans/small.toml"}, data=bad,
        headers={"Content-Type": "application/toml"},
    )  # fmt: skip
    assert resp.status == 422
    assert resp.content_type == "application/problem+json"
    problem = await resp.json()
    assert problem["type"] == "urn:ocs:problem:invalid-plan"
    assert problem["errors"] == [
        'plans/small.toml:23: bands[0].to: must be a time of day "HH:MM" (00:00 to 24:00), '
        "got '25:00'",
        'plans/small.toml:40: rates[0].price: must be a decimal string such as "0.09" '
        "(floats are not exact)",
    ]
    assert problem["detail"] == problem["errors"][0] + " (and 1 more)"
    assert await plan_names(api) == names
    assert await store.client.execute("KEYS", "*") == keys
    # Not TOML at all: the parser's message, with the source.
    resp = await api.post("/v1/tariffs", data="name = ", headers={"Content-Type": "text/plain"})
    assert resp.status == 422
    (err,) = (await resp.json())["errors"]
    assert err.startswith("request: ")
    assert await plan_names(api) == names


async def test_load_plan_wrong_type_size_and_encoding(api: Client) -> None:
    names = await plan_names(api)
    resp = await api.post("/v1/tariffs", json={"plan": SMALL})
    assert resp.status == 415
    assert resp.content_type == "application/problem+json"
    resp = await api.post(
        "/v1/tariffs",
        data=io.BytesIO(b"# " + b"x" * (1024 * 1024)),
        headers={"Content-Type": "text/plain"},
    )
    assert resp.status == 413
    assert resp.content_type == "application/problem+json"
    resp = await api.post("/v1/tariffs", data=b"\xff\xfe", headers={"Content-Type": "text/plain"})
    assert resp.status == 422
    assert "UTF-8" in (await resp.json())["errors"][0]
    resp = await api.post(
        "/v1/tariffs", params={"source": ""}, data=SMALL, headers={"Content-Type": "text/plain"}
    )
    assert resp.status == 422
    assert (await resp.json())["field"] == "source"
    assert await plan_names(api) == names


# -- bundles at creation --------------------------------------------------------------------------


async def test_bundles_are_granted_at_creation(api: Client, clock: FakeClock) -> None:
    resp = await api.post(
        "/v1/subscribers", json={"msisdn": "491700000001", "balance": "10", "plan": "bundle-10"}
    )
    assert resp.status == 201, await resp.text()
    buckets = (await resp.json())["buckets"]
    expiry = "2026-03-03T12:00:00.000Z"  # 30 days from now
    assert sorted(buckets, key=lambda b: b["id"]) == [
        {"id": "data", "service": "data", "units": 10**10, "reserved": 0, "priority": 0,
         "expires_at": expiry},
        {"id": "minutes", "service": "voice", "units": 60000, "reserved": 0, "priority": 0,
         "expires_at": expiry},
        {"id": "sms", "service": "sms", "units": 500, "reserved": 0, "priority": 0,
         "expires_at": expiry},
    ]  # fmt: skip
    # Buckets given in the request replace the bundles (an empty list: none at all).
    resp = await api.post(
        "/v1/subscribers",
        json={"msisdn": "491700000002", "balance": "10", "plan": "bundle-10", "buckets": []},
    )
    assert (await resp.json())["buckets"] == []
    # A plan without bundles grants nothing.
    resp = await api.post(
        "/v1/subscribers", json={"msisdn": "491700000003", "balance": "1", "plan": "gov-payu"}
    )
    assert (await resp.json())["buckets"] == []


async def test_bundles_without_expiry(api: Client) -> None:
    text = SMALL.replace('name = "small"', 'name = "forever"') + (
        '\n[[bundles]]\nid = "welcome"\nservice = "sms"\nunits = 20\npriority = 2\n'
    )
    resp = await api.post("/v1/tariffs", data=text, headers={"Content-Type": "text/plain"})
    assert resp.status == 201, await resp.text()
    resp = await api.post(
        "/v1/subscribers", json={"msisdn": "491700000004", "balance": "0", "plan": "forever"}
    )
    assert (await resp.json())["buckets"] == [
        {"id": "welcome", "service": "sms", "units": 20, "reserved": 0, "priority": 2,
         "expires_at": None}
    ]  # fmt: skip
