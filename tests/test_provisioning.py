"""Barring in the network, end to end: a whole OCS (run_ocs) against a private Redis and the
HLR simulator over HTTP. Thresholds crossed by charges bar the subscriber in the HLR, top-ups
unbar; the HLR down, slow, asynchronous or rejecting; the worker killed mid-command; signed
callbacks; dead letters and their replay; reconciliation; webhooks.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import aiohttp
import jsonschema
import pytest
from aiohttp import web
from secure import ADMIN, AUTH, NATIVE_KEY, SECURE

from ocs.api.provisioning import DEAD_LETTERS_SCHEMA, JOB_SCHEMA, VIEW_SCHEMA
from ocs.charging.types import DebitRequest, Outcome
from ocs.config import ConfigError, Settings, load_settings
from ocs.provisioning.adapter import BarringCommand, CommandOutcome, HttpProvisioningAdapter
from ocs.provisioning.signing import sign, verify
from ocs.provisioning.worker import (
    NotificationConsumer,
    ProvisioningHandler,
    RetryPolicy,
)
from ocs.service import Running, run_ocs
from ocs.sims.hlr import HlrSimulator, Line, bound_port, serve
from ocs.store.notify import NotifyStore
from ocs.store.security import SecurityStore
from ocs.tasks import cancel_and_wait
from protocols.native import NativeClient
from tariffs import parse_plan
from tests.contract import contract_trace

SECRET = "s3cret-for-tests"
E = 1_000_000
PLAN = parse_plan(
    """
name = "barred"
timezone = "UTC"
rounding = { method = "half-even", decimals = 6 }
[services.voice]
unit = "seconds"
default_quota = 60
[services.voice-mt]
unit = "seconds"
default_quota = 60
direction = "incoming"
[services.sms]
unit = "events"
default_quota = 1
[[rates]]
service = "voice"
price = "0.06"
per = 60
[[rates]]
service = "voice-mt"
price = "0"
[[rates]]
service = "sms"
price = "1.00"

[[thresholds]]
below = "0.00"
action = "notify"
[[thresholds]]
below = "-5.00"
action = "bar-outgoing"
lift = "0.00"
[[thresholds]]
below = "-20.00"
action = "bar-all"
lift = "-5.00"
"""
)
SETTINGS = Settings(
    native_port=0, http_port=0, diameter_port=0, validity=60, grace=10, sweep_interval=0.2,
    provisioning_secret=SECRET, provisioning_backoff=0.01, provisioning_retries=40,
    provisioning_timeout=2.0, **SECURE,
)  # fmt: skip


async def until(sim: HlrSimulator, predicate: Callable[[], bool], within: float = 10) -> None:
    async with asyncio.timeout(within):
        await sim.wait_for(predicate)


@pytest.fixture
async def hlr() -> AsyncIterator[tuple[HlrSimulator, str]]:
    sim = HlrSimulator(secret=SECRET)
    runner = await serve(sim, "127.0.0.1", 0)
    try:
        yield sim, f"http://127.0.0.1:{bound_port(runner)}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def ocs(redis_url: str, hlr: tuple[HlrSimulator, str]) -> AsyncIterator[Running]:
    settings = replace(SETTINGS, redis_url=redis_url, provisioning_url=hlr[1])
    async with run_ocs(settings, plans=[PLAN]) as running:
        yield running


@pytest.fixture
async def http(ocs: Running) -> AsyncIterator[Callable[..., Any]]:
    base = f"http://127.0.0.1:{ocs.http_port}"
    async with aiohttp.ClientSession(headers=AUTH, trace_configs=[contract_trace()]) as session:

        async def call(method: str, path: str, body: Any = None,
                       headers: dict[str, str] | None = None) -> tuple[int, Any]:  # fmt: skip
            data = body if isinstance(body, bytes) else None
            js = None if isinstance(body, bytes) else body
            async with session.request(
                method, base + path, json=js, data=data, headers=headers
            ) as r:
                return r.status, await r.json(content_type=None)

        yield call


async def add(ocs: Running, msisdn: str, balance: int) -> None:
    ans = await ocs.store.create_subscriber(
        msisdn, plan="barred", balance=balance, credit_limit=0, state="active", now=0
    )
    assert ans.status == "OK"


async def charge(ocs: Running, msisdn: str, key: str, amount_units: int) -> None:
    """A CDR's debit (forced: the usage happened) of ``amount_units`` SMS at 1.00 each."""
    r = await ocs.engine.debit(DebitRequest(msisdn, "sms", key, units=amount_units, force=True))
    assert r.outcome is Outcome.SUCCESS


async def topup(http: Callable[..., Any], msisdn: str, amount: str, ref: str) -> None:
    status, body = await http(
        "POST", f"/v1/subscribers/{msisdn}/topups", {"amount": amount, "reference": ref}
    )
    assert status == 201, body


def barrings(sim: HlrSimulator, msisdn: str) -> list[str]:
    return [a.barring for a in sim.log if a.msisdn == msisdn and not a.stale]


# -- the closed loop ---------------------------------------------------------------------------


async def test_bar_in_the_hlr_and_lift_on_topup(
    ocs: Running, hlr: tuple[HlrSimulator, str], http: Callable[..., Any]
) -> None:
    sim = hlr[0]
    await add(ocs, "4915100000001", 2 * E)
    await charge(ocs, "4915100000001", "cdr-1", 8)  # -6.00: bar outgoing
    await until(sim, lambda: sim.barring("4915100000001") == "outgoing")
    # The barred subscriber's outgoing call is refused through the native protocol; a free
    # incoming call still passes.
    async with NativeClient("127.0.0.1", ocs.native.port, key=NATIVE_KEY) as c:
        r = await c.reserve("out-1", "4915100000001", "voice", seq=0, units=60)
        assert r.result == "service-denied"
        r = await c.reserve("in-1", "4915100000001", "voice-mt", seq=0, units=60)
        assert r.result == "success"
    await charge(ocs, "4915100000001", "cdr-2", 16)  # -22.00: bar all
    await until(sim, lambda: sim.barring("4915100000001") == "all")
    await topup(http, "4915100000001", "30.00", "voucher-1")  # 8.00: lifted
    await until(sim, lambda: sim.barring("4915100000001") == "none")
    assert barrings(sim, "4915100000001") == ["outgoing", "all", "none"]
    # The worker records the HLR's answer after the HLR applied the command: wait for it.
    async with asyncio.timeout(10):
        while True:
            status, view = await http("GET", "/v1/subscribers/4915100000001/provisioning")
            assert status == 200
            if len(view["history"]) == 3:
                break
            await asyncio.sleep(0.02)
    assert (view["desired"], view["hlr"]["confirmed"], view["in_sync"]) == ("none", "none", True)
    assert [h["result"] for h in view["history"]] == ["applied"] * 3
    assert [h["barring"] for h in view["history"]] == ["none", "all", "outgoing"]
    # Times as everywhere in the API: ISO 8601 UTC, not Unix ms.
    assert all(_is_iso(t) for t in [view["hlr"]["updated"], *(h["at"] for h in view["history"])])
    jsonschema.validate(view, VIEW_SCHEMA)  # the contract's (ocs.api.openapi)
    status, acct = await http("GET", "/v1/subscribers/4915100000001")
    assert acct["barring"] == {"network": "none", "by_balance": "none", "engaged": [],
                               "thresholds": None}  # fmt: skip
    # Counted in /metrics.
    async with (
        aiohttp.ClientSession(headers=AUTH, trace_configs=[contract_trace()]) as s,
        s.get(f"http://127.0.0.1:{ocs.http_port}/metrics") as r,
    ):
        text = await r.text()
    assert 'ocs_client_requests_total{action="bar",outcome="applied",service="hlr"} 2.0' in text
    assert 'ocs_client_requests_total{action="unbar",outcome="applied",service="hlr"} 1.0' in text
    assert "ocs_provisioning_backlog 0.0" in text
    assert "ocs_provisioning_dead_letters 0.0" in text
    assert 'ocs_outbox_length{bucket="0"}' in text


async def test_hlr_down_then_back_applies_everything_in_order(
    ocs: Running, hlr: tuple[HlrSimulator, str], http: Callable[..., Any]
) -> None:
    sim = hlr[0]
    sim.behaviour.down = True
    subs = [f"49151000001{i:02d}" for i in range(6)]
    for m in subs:
        await add(ocs, m, 0)
    for m in subs:
        await charge(ocs, m, "c1", 6)  # bar outgoing
        await topup(http, m, "10.00", "t1")  # unbar
        await charge(ocs, m, "c2", 10)  # bar outgoing again
    await until(sim, lambda: sim.received >= 2 * len(subs))  # retrying against a dead HLR
    assert sim.log == []
    sim.behaviour.down = False
    await until(sim, lambda: all(len(barrings(sim, m)) == 3 for m in subs))
    for m in subs:
        assert barrings(sim, m) == ["outgoing", "none", "outgoing"]


async def test_flaky_hlr_keeps_each_subscribers_order(
    ocs: Running, hlr: tuple[HlrSimulator, str], http: Callable[..., Any]
) -> None:
    sim = hlr[0]
    sim.behaviour.fail_rate = 0.4
    subs = [f"49152000001{i:02d}" for i in range(20)]
    for m in subs:
        await add(ocs, m, 0)

    async def wobble(m: str) -> None:
        for i in range(3):
            await charge(ocs, m, f"c{i}", 6)
            await topup(http, m, "6.00", f"t{i}")

    await asyncio.gather(*(wobble(m) for m in subs))
    await until(sim, lambda: all(len(barrings(sim, m)) == 6 for m in subs), within=30)
    for m in subs:
        assert barrings(sim, m) == ["outgoing", "none"] * 3


async def test_async_gateway_confirms_by_signed_callback(
    ocs: Running, hlr: tuple[HlrSimulator, str], http: Callable[..., Any]
) -> None:
    sim = hlr[0]
    sim.behaviour.async_ = True
    await add(ocs, "4915300000001", 0)
    await charge(ocs, "4915300000001", "c1", 6)
    await until(sim, lambda: sim.barring("4915300000001") == "outgoing")

    async def confirmed() -> dict[str, Any]:
        while True:
            _, view = await http("GET", "/v1/subscribers/4915300000001/provisioning")
            if view["hlr"]["status"] == "applied":
                return dict(view)
            await asyncio.sleep(0.02)

    async with asyncio.timeout(10):
        view = await confirmed()
    assert (view["hlr"]["confirmed"], view["in_sync"]) == ("outgoing", True)
    assert [h["result"] for h in view["history"]] == ["confirmed", "accepted"]


async def test_bad_callback_signature_changes_nothing(
    ocs: Running, hlr: tuple[HlrSimulator, str], http: Callable[..., Any]
) -> None:
    sim = hlr[0]
    sim.behaviour.async_ = True
    sim.behaviour.async_delay_ms = 60_000  # the simulator's own callback never comes
    await add(ocs, "4915400000001", 0)
    await charge(ocs, "4915400000001", "c1", 6)
    await until(sim, lambda: sim.received == 1)
    cid = "4915400000001:" + str((await ocs.store.get_account("4915400000001")).version)  # type: ignore[union-attr]

    async def accepted() -> None:
        while True:
            state = await ocs.provisioning.notify.hlr_state("4915400000001")
            if state.get("status") == "accepted":
                return
            await asyncio.sleep(0.02)

    async with asyncio.timeout(10):
        await accepted()
    body = json.dumps({"command_id": cid, "status": "applied"}).encode()
    before = await ocs.provisioning.notify.hlr_state("4915400000001")
    for headers in (
        sign("wrong secret", body),
        {},
        {**sign(SECRET, body), "X-OCS-Timestamp": "1"},
        sign(SECRET, body + b" "),
    ):
        status, problem = await http(
            "POST", "/v1/provisioning/callbacks", body,
            {**headers, "Content-Type": "application/json"},
        )  # fmt: skip
        assert status == 401, problem
        assert problem["title"] == "Bad signature"
    assert await ocs.provisioning.notify.hlr_state("4915400000001") == before
    # The right signature confirms it, once.
    headers = {**sign(SECRET, body), "Content-Type": "application/json"}
    status, result = await http("POST", "/v1/provisioning/callbacks", body, headers)
    assert (status, result) == (200, {"command_id": cid, "status": "applied"})
    state = await ocs.provisioning.notify.hlr_state("4915400000001")
    assert (state["confirmed"], state["status"]) == ("outgoing", "applied")
    status, problem = await http("POST", "/v1/provisioning/callbacks", body, headers)
    assert status == 404
    # Audited: the bad signatures as failures, the good one as a change by its signer.
    entries = await SecurityStore(ocs.store.client).audit_entries()
    kinds = [(e.fields["action"], e.fields.get("who", "")) for e in entries]
    assert kinds.count(("auth.failure", "")) == 4
    assert ("POST /v1/provisioning/callbacks", "signed:provisioning.callbacks") in kinds


async def test_rejected_command_is_dead_lettered_and_replayed(
    ocs: Running, hlr: tuple[HlrSimulator, str], http: Callable[..., Any]
) -> None:
    sim = hlr[0]
    sim.behaviour.reject_next = 1  # a 422: permanent, no retries
    await add(ocs, "4915500000001", 0)
    await charge(ocs, "4915500000001", "c1", 6)

    async def dead() -> list[dict[str, Any]]:
        while True:
            _, body = await http("GET", "/v1/provisioning/dead-letters")
            if body["dead_letters"]:
                return list(body["dead_letters"])
            await asyncio.sleep(0.02)

    async with asyncio.timeout(10):
        letters = await dead()
    assert len(letters) == 1
    d = letters[0]
    assert _is_iso(d["at"]), d
    jsonschema.validate({"dead_letters": letters}, DEAD_LETTERS_SCHEMA)
    assert (d["kind"], d["sub"], d["bar"], d["attempts"]) == (
        "hlr",
        "4915500000001",
        "outgoing",
        "1",
    )
    assert "HTTP 422" in d["reason"]
    assert sim.barring("4915500000001") == "none"
    status, body = await http("POST", f"/v1/provisioning/dead-letters/{d['id']}/replay")
    assert status == 202, body
    await until(sim, lambda: sim.barring("4915500000001") == "outgoing")
    status, body = await http("GET", "/v1/provisioning/dead-letters")
    assert body["dead_letters"] == []
    status, body = await http("POST", f"/v1/provisioning/dead-letters/{d['id']}/replay")
    assert status == 404
    status, body = await http("POST", "/v1/provisioning/dead-letters/not-an-id/replay")
    assert status == 422


async def test_reconcile_resends_what_differs(
    ocs: Running, hlr: tuple[HlrSimulator, str], http: Callable[..., Any]
) -> None:
    sim = hlr[0]
    await add(ocs, "4915600000001", 0)
    await add(ocs, "4915600000002", 5 * E)
    await charge(ocs, "4915600000001", "c1", 6)
    await until(sim, lambda: sim.barring("4915600000001") == "outgoing")
    # Somebody unbars it in the HLR behind the OCS's back, and bars the other.
    sim.lines["4915600000001"].barring = "none"
    sim.lines.setdefault("4915600000002", type(sim.lines["4915600000001"])("4915600000002"))
    sim.lines["4915600000002"].barring = "all"
    report = await reconcile(http)
    assert (report["state"], report["checked"], report["failures"]) == ("done", 2, 0)
    assert report["differing"] == [
        {"msisdn": "4915600000001", "desired": "outgoing", "hlr": "none"},
        {"msisdn": "4915600000002", "desired": "none", "hlr": "all"},
    ]
    await until(
        sim,
        lambda: (
            sim.barring("4915600000001") == "outgoing" and sim.barring("4915600000002") == "none"
        ),
    )
    report = await reconcile(http)
    assert report["differing"] == []
    status, problem = await http("GET", "/v1/provisioning/reconcile/nope")
    assert status == 404 and problem["title"] == "Unknown job"


def _is_iso(t: object) -> bool:
    """An ISO 8601 UTC time as the API writes them ("2026-05-01T12:00:00.000Z")."""
    return (
        isinstance(t, str)
        and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", t) is not None
    )


async def reconcile(http: Callable[..., Any]) -> dict[str, Any]:
    """POST a reconciliation (202, the job at Location), then GET it until it is over."""
    status, job = await http("POST", "/v1/provisioning/reconcile")
    assert status == 202 and job["state"] == "running", job
    async with asyncio.timeout(30):
        while job["state"] == "running":
            await asyncio.sleep(0.02)
            status, job = await http("GET", f"/v1/provisioning/reconcile/{job['id']}")
            assert status == 200
    assert _is_iso(job["started_at"]) and _is_iso(job["finished_at"]), job
    jsonschema.validate(job, JOB_SCHEMA)
    return dict(job)


async def test_reconcile_survives_a_failing_hlr_and_bounds_its_queries(
    redis_url: str, hlr: tuple[HlrSimulator, str]
) -> None:
    sim, url = hlr
    settings = replace(SETTINGS, redis_url=redis_url, provisioning_url=url,
                       provisioning_reconcile_concurrency=3)  # fmt: skip
    async with (
        run_ocs(settings, plans=[PLAN]) as ocs,
        aiohttp.ClientSession(headers=AUTH, trace_configs=[contract_trace()]) as session,
    ):
        subs = [f"49158000000{i:02d}" for i in range(20)]
        for m in subs:
            await add(ocs, m, 0)
        sim.lines[subs[5]] = Line(subs[5], "all")
        # One subscriber's query fails once (retried), another's always (reported); slowly.
        sim.behaviour.fail_queries = {subs[3]: 1, subs[7]: 100}
        sim.behaviour.query_delay_ms = 5

        async def http(method: str, path: str) -> tuple[int, Any]:
            async with session.request(method, f"http://127.0.0.1:{ocs.http_port}{path}") as r:
                return r.status, await r.json(content_type=None)

        report = await reconcile(http)
    assert report["state"] == "done"
    assert (report["checked"], report["failures"], report["resent"]) == (19, 1, 1)
    assert [f["msisdn"] for f in report["failed"]] == [subs[7]]
    assert "503" in report["failed"][0]["error"] and "3 times" in report["failed"][0]["error"]
    assert report["differing"] == [{"msisdn": subs[5], "desired": "none", "hlr": "all"}]
    assert 1 < sim.max_queries_in_flight <= 3


async def test_reconcile_cli_waits_for_the_job(ocs: Running, hlr: tuple[HlrSimulator, str]) -> None:
    await add(ocs, "4915900000001", 0)
    hlr[0].behaviour.fail_queries = {"4915900000001": 100}
    env = {"OCS_API_URL": f"http://127.0.0.1:{ocs.http_port}", "PATH": os.environ["PATH"],
           "OCS_API_TOKEN": ADMIN}  # fmt: skip
    r = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "ocs.cli", "provisioning", "reconcile"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "checked 0 subscribers; 0 differed and were re-sent; 1 could not be checked" in r.stdout
    assert "4915900000001: not checked: failed 3 times" in r.stdout


async def test_thresholds_override_through_the_api(
    ocs: Running, hlr: tuple[HlrSimulator, str], http: Callable[..., Any]
) -> None:
    sim = hlr[0]
    await add(ocs, "4915700000001", -3 * E)  # only "notify" by the plan
    status, acct = await http(
        "PATCH", "/v1/subscribers/4915700000001",
        {"thresholds": [{"below": "-1.00", "action": "bar-all", "lift": "1.00"}]},
    )  # fmt: skip
    assert status == 200, acct
    assert acct["barring"]["network"] == "all"
    assert acct["barring"]["thresholds"] == [
        {"below": "-1.00", "action": "bar-all", "lift": "1.00"}
    ]
    await until(sim, lambda: sim.barring("4915700000001") == "all")
    status, problem = await http(
        "PATCH", "/v1/subscribers/4915700000001",
        {"thresholds": [{"below": "-1.00", "action": "explode", "lift": "-2.00"}]},
    )  # fmt: skip
    assert status == 422
    assert {e["field"] for e in problem["errors"]} == {
        "thresholds[0].action", "thresholds[0].lift"
    }  # fmt: skip
    status, acct = await http("PATCH", "/v1/subscribers/4915700000001", {"thresholds": None})
    assert (acct["barring"]["network"], acct["barring"]["thresholds"]) == ("none", None)
    await until(sim, lambda: sim.barring("4915700000001") == "none")


# -- the worker killed mid-command ------------------------------------------------------------

_KILLED_WORKER = """
import asyncio, sys
from ocs.provisioning.adapter import BarringCommand, CommandOutcome, HttpProvisioningAdapter
from ocs.provisioning.worker import NotificationConsumer, ProvisioningHandler, RetryPolicy
from ocs.store.notify import NotifyStore

async def main(redis_url, url, secret):
    notify = NotifyStore(redis_url)
    adapter = HttpProvisioningAdapter(url, secret=secret)
    handler = ProvisioningHandler(notify, adapter)
    await NotificationConsumer(
        notify, handler, policy=RetryPolicy(attempts=40, base=0.01, cap=0.05), me="first",
        lease_ms=400, block_ms=50,
    ).run()

asyncio.run(main(*sys.argv[1:]))
"""


async def test_worker_killed_mid_command_loses_nothing(
    redis_url: str, hlr: tuple[HlrSimulator, str]
) -> None:
    """A consumer dies (its task is cancelled with commands in flight and its lease left to
    expire); the next one claims what it had not acknowledged, and every command lands, in
    order (a command sent twice is harmless: the HLR applies the same state again)."""
    sim, url = hlr
    settings = replace(SETTINGS, redis_url=redis_url)  # no adapter: this test runs its own
    sim.behaviour.delay_ms = 300
    async with run_ocs(settings, plans=[PLAN]) as ocs:
        subs = [f"49158000001{i:02d}" for i in range(5)]
        for m in subs:
            await add(ocs, m, 0)
            await charge(ocs, m, "c1", 6)
            await ocs.store.credit(m, kind="topup", amount=10 * E, reference="t1", now=0)
        # The first worker runs in a process of its own, and is killed (SIGKILL) with
        # commands in flight: nothing acknowledged them, its lease is left to expire.
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _KILLED_WORKER, redis_url, url, SECRET,
        )  # fmt: skip
        try:
            await until(sim, lambda: sim.received >= 3)
        finally:
            proc.kill()
            await proc.wait()
        sim.behaviour.delay_ms = 0
        notify = NotifyStore(redis_url)
        adapter = HttpProvisioningAdapter(url, secret=SECRET)
        policy = RetryPolicy(attempts=40, base=0.01, cap=0.05)
        try:
            second = NotificationConsumer(
                notify, ProvisioningHandler(notify, adapter), policy=policy, me="second",
                lease_ms=400, block_ms=50,
            )  # fmt: skip
            task = asyncio.create_task(second.run())
            await until(sim, lambda: all(barrings(sim, m)[-1:] == ["none"] for m in subs))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            await adapter.close()
            await notify.close()
    for m in subs:
        ids = [a.command_id for a in sim.log if a.msisdn == m]
        # In order; a command may have been sent again after the crash, never out of order.
        assert [a.barring for a in sim.log if a.msisdn == m and ids.count(a.command_id)] in (
            ["outgoing", "none"], ["outgoing", "outgoing", "none"],
        )  # fmt: skip
        assert sorted(set(ids), key=ids.index) == sorted(
            set(ids), key=lambda c: int(c.split(":")[1])
        )


# -- webhooks ---------------------------------------------------------------------------------


async def test_webhooks_are_signed_and_retried(redis_url: str) -> None:
    received: list[dict[str, Any]] = []
    failures = {"left": 2}
    got = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        verify(SECRET, request.headers, body)
        if failures["left"]:
            failures["left"] -= 1
            return web.Response(status=503)
        received.append(json.loads(body))
        got.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = bound_port(runner)
    try:
        settings = replace(
            SETTINGS, redis_url=redis_url, webhook_urls=f"http://127.0.0.1:{port}/hook"
        )
        async with run_ocs(settings, plans=[PLAN]) as ocs:
            await add(ocs, "4915900000001", 1 * E)
            await charge(ocs, "4915900000001", "c1", 2)  # -1.00: "notify" only
            async with asyncio.timeout(10):
                await got.wait()
    finally:
        await runner.cleanup()
    assert len(received) == 1
    w = received[0]
    assert (w["event"], w["msisdn"], w["balance"], w["barring"]) == (
        "threshold", "4915900000001", -1 * E, "none"
    )  # fmt: skip
    assert w["crossed_down"] == [{"below": 0, "action": "notify"}]


def test_provisioning_settings_are_read_and_checked() -> None:
    s = load_settings({
        "OCS_PROVISIONING_URL": "https://gw.example/prov", "OCS_PROVISIONING_RETRIES": "5",
        "OCS_PROVISIONING_BACKOFF": "0.2", "OCS_PROVISIONING_TIMEOUT": "3",
        "OCS_WEBHOOK_URLS": "http://a.example/x, https://b.example/y", "OCS_WORKERS": "3",
    })  # fmt: skip
    assert (s.provisioning_retries, s.provisioning_backoff, s.provisioning_timeout) == (5, 0.2, 3)
    assert s.webhook_url_list == ["http://a.example/x", "https://b.example/y"]
    assert s.workers == 3
    for env, message in [
        ({"OCS_PROVISIONING_URL": "ftp://gw"}, "OCS_PROVISIONING_URL: must be an http"),
        ({"OCS_WEBHOOK_URLS": "http://a, gopher://b"}, "'gopher://b' is not an http"),
        ({"OCS_PROVISIONING_BACKOFF": "0"}, "OCS_PROVISIONING_BACKOFF: must be > 0"),
        ({"OCS_PROVISIONING_RETRIES": "many"}, "OCS_PROVISIONING_RETRIES: must be an integer"),
        ({"OCS_WORKERS": "0"}, "OCS_WORKERS: out of range"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_settings(env)


class _BrokenAdapter:
    """An adapter with a bug: it raises what the interface does not allow."""

    async def apply(self, command: BarringCommand) -> CommandOutcome:
        raise RuntimeError("adapter bug")

    async def query(self, msisdn: str) -> str | None:
        return None

    async def close(self) -> None:
        return None


async def test_an_adapter_bug_dead_letters_the_command(redis_url: str) -> None:
    async with run_ocs(replace(SETTINGS, redis_url=redis_url), plans=[PLAN]) as ocs:
        await add(ocs, "4916000000001", 0)
        await charge(ocs, "4916000000001", "c1", 6)
        notify = ocs.provisioning.notify
        consumer = NotificationConsumer(
            notify, ProvisioningHandler(notify, _BrokenAdapter()), me="buggy", lease_ms=400,
            block_ms=50,
        )  # fmt: skip
        task = asyncio.create_task(consumer.run())
        try:
            async with asyncio.timeout(10):
                while not await notify.dead_letters():  # noqa: ASYNC110 (Redis is polled)
                    await asyncio.sleep(0.02)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        (dead,) = await notify.dead_letters()
        assert dead.fields["reason"] == "internal error: RuntimeError('adapter bug')"
        assert await notify.pending_count("hlr") == 0


class _StuckHandler:
    """A handler whose call hangs and swallows the first cancellation it gets (as redis-py's
    sends can on Python 3.11): stopping the consumer must still end it."""

    group = "hlr"

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.swallowed = 0
        self.ended = False

    async def handle(self, note: Any) -> None:
        self.started.set()
        try:
            while True:
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    if self.swallowed:
                        raise
                    self.swallowed += 1
        finally:
            self.ended = True

    async def failed(self, note: Any, reason: str, attempts: int) -> dict[str, str]:
        return {}


async def test_stopping_a_consumer_ends_its_lanes_even_one_that_swallows_a_cancel(
    redis_url: str,
) -> None:
    async with run_ocs(replace(SETTINGS, redis_url=redis_url), plans=[PLAN]) as ocs:
        await add(ocs, "4916000000002", 0)
        await charge(ocs, "4916000000002", "c1", 6)  # a barring change: one entry to handle
        handler = _StuckHandler()
        consumer = NotificationConsumer(ocs.provisioning.notify, handler, me="stuck",
                                        lease_ms=400, block_ms=50)  # fmt: skip
        task = asyncio.create_task(consumer.run())
        async with asyncio.timeout(10):
            await handler.started.wait()
        lanes = list(consumer._tasks)
        assert lanes
        async with asyncio.timeout(10):
            await cancel_and_wait(task, every=0.05)
        assert task.cancelled()
        # The lane was cancelled again and awaited: nothing is left pending.
        assert handler.swallowed == 1 and handler.ended
        assert all(t.done() for t in lanes) and not consumer._tasks
