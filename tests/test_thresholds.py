"""Balance thresholds and barring, in the scripts: crossing, hysteresis, what a bar refuses,
and the events (outbox) and notifications (the provisioning worker's stream) they write.

Against a real Redis started by the test session; the engine and store fixtures are shared
with test_engine.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio
import test_engine
from test_engine import T0, add

from ocs.charging.engine import ChargingEngine
from ocs.charging.sweeper import ThresholdCatchUp
from ocs.charging.types import (
    CommitRequest,
    DebitRequest,
    Outcome,
    ReleaseRequest,
    ReserveRequest,
)
from ocs.store import keys as K
from ocs.store.events import expand
from ocs.store.store import PLAN_THRESHOLDS, Account, Store

# The engine tests' fixtures.
clock, engine = test_engine.clock, test_engine.engine

E = 1_000_000  # one currency unit in micro-units
#: The issue's example: below 0 notify, below -5 bar outgoing (lifted at 0), below -20 bar
#: all (lifted at -5).
LADDER = [(0, 0, "notify"), (-5 * E, 0, "bar-outgoing"), (-20 * E, -5 * E, "bar-all")]


async def notifications(raw: redis.asyncio.Redis, msisdn: str) -> list[dict[str, str]]:
    """The subscriber's barring notifications (not the "credit" ones top-ups write while
    sessions are open)."""
    entries = await raw.xrange(K.notify_key(K.bucket_of(msisdn)))
    out = []
    for _, f in entries:
        d = {k.decode(): v.decode() for k, v in f.items()}
        if d["sub"] == msisdn and d["t"] == "barring":
            out.append(d)
    return out


async def outbox(raw: redis.asyncio.Redis, msisdn: str, kind: str) -> list[dict[str, str]]:
    entries = await raw.xrange(K.outbox_key(K.bucket_of(msisdn)))
    out = []
    for _, f in entries:
        d = expand({k.decode(): v.decode() for k, v in f.items()})
        if d["sub"] == msisdn and d["t"] == kind:
            out.append(d)
    return out


async def account(store: Store, msisdn: str) -> Account:
    acct = await store.get_account(msisdn)
    assert acct is not None
    return acct


async def with_ladder(store: Store, msisdn: str, balance: int, **kw: Any) -> None:
    await add(store, msisdn, balance, **kw)
    ans = await store.update_subscriber(msisdn, thresholds=LADDER, now=T0)
    assert ans.status == "OK"


async def debit(engine: ChargingEngine, msisdn: str, key: str, sms: int) -> None:
    """Forced SMS debits of 0.05 each (as a CDR's would be: past the credit limit)."""
    r = await engine.debit(DebitRequest(msisdn, "sms", key, units=sms, force=True))
    assert r.outcome is Outcome.SUCCESS, r


async def adjust(store: Store, msisdn: str, ref: str, amount: int) -> None:
    kind = "topup" if amount > 0 else "adjust"
    ans = await store.credit(msisdn, kind=kind, amount=amount, reference=ref, now=T0)
    assert ans.status == "OK"


# -- crossing, by each kind of charge ---------------------------------------------------------


async def cross_by_debit(engine: ChargingEngine, store: Store, msisdn: str) -> None:
    await debit(engine, msisdn, "d1", 130)  # 6.50


async def cross_by_commit(engine: ChargingEngine, store: Store, msisdn: str) -> None:
    # 1.00 buys 1,000 seconds at 0.001/s; the gateway reports 7,000 (overuse is charged).
    r = await engine.reserve(ReserveRequest("s", msisdn, "voice", "s/0", units=600))
    assert r.ok
    r = await engine.commit(CommitRequest("s", "s/1", used=7000, next_units=0))
    assert r.charged == 7 * E


async def cross_by_release(engine: ChargingEngine, store: Store, msisdn: str) -> None:
    r = await engine.reserve(ReserveRequest("s", msisdn, "voice", "s/0", units=600))
    assert r.ok
    r = await engine.release(ReleaseRequest("s", "s/1", used=7000))
    assert r.charged == 7 * E


async def cross_by_adjustment(engine: ChargingEngine, store: Store, msisdn: str) -> None:
    await adjust(store, msisdn, "adj-1", -7 * E)


@pytest.mark.parametrize(
    "cross", [cross_by_debit, cross_by_commit, cross_by_release, cross_by_adjustment]
)
async def test_crossing_bars_once_and_topup_lifts(
    engine: ChargingEngine, store: Store, raw_redis: redis.asyncio.Redis, cross: Any
) -> None:
    await with_ladder(store, "500", 1 * E)
    assert (await account(store, "500")).barring == "none"
    await cross(engine, store, "500")
    acct = await account(store, "500")
    assert acct.balance < -5 * E
    assert (acct.barred_by_balance, acct.barring, acct.engaged) == (
        "outgoing", "outgoing", (0, -5 * E)
    )  # fmt: skip
    notes = await notifications(raw_redis, "500")
    assert [(n["t"], n["was"], n["bar"]) for n in notes] == [("barring", "none", "outgoing")]
    assert notes[0]["down"] == "0:notify,-5000000:bar-outgoing"
    crossings = await outbox(raw_redis, "500", "threshold")
    assert [(c["down"], c["up"], c["nb"]) for c in crossings] == [
        ("0:notify,-5000000:bar-outgoing", "", "outgoing")
    ]
    # More charges below the threshold bar nothing again.
    await debit(engine, "500", "d2", 1)
    assert len(await notifications(raw_redis, "500")) == 1
    # A top-up to 0.00 or more lifts the bar (and the notify level).
    await adjust(store, "500", "top-1", 10 * E)
    acct = await account(store, "500")
    assert (acct.barring, acct.engaged) == ("none", ())
    notes = await notifications(raw_redis, "500")
    assert [(n["was"], n["bar"]) for n in notes] == [("none", "outgoing"), ("outgoing", "none")]
    assert notes[1]["up"] == "0:notify,-5000000:bar-outgoing"


async def test_hysteresis_holds(
    engine: ChargingEngine, store: Store, raw_redis: redis.asyncio.Redis
) -> None:
    await with_ladder(store, "501", -4 * E - 990_000)  # -4.99: only "notify" engaged
    assert (await account(store, "501")).engaged == (0,)
    await debit(engine, "501", "d1", 1)  # -5.04: bar outgoing
    assert (await account(store, "501")).barring == "outgoing"
    await adjust(store, "501", "t1", 100_000)  # -4.94: above -5 but below the lift (0)
    assert (await account(store, "501")).barring == "outgoing"
    await debit(engine, "501", "d2", 1)  # -4.99
    await adjust(store, "501", "t2", 10_000)  # -4.98
    await debit(engine, "501", "d3", 2)  # -5.08: below -5 again: still barred, nothing new
    assert (await account(store, "501")).barring == "outgoing"
    notes = await notifications(raw_redis, "501")
    # (the first: the ladder set on an account already below 0 crosses "notify")
    assert [(n["was"], n["bar"], n["down"]) for n in notes] == [
        ("none", "none", "0:notify"),
        ("none", "outgoing", "-5000000:bar-outgoing"),
    ]
    await adjust(store, "501", "t3", 5_080_000)  # 0.00: lifted
    assert (await account(store, "501")).barring == "none"
    assert len(await notifications(raw_redis, "501")) == 3


async def test_one_charge_crossing_several_thresholds(
    engine: ChargingEngine, store: Store, raw_redis: redis.asyncio.Redis
) -> None:
    await with_ladder(store, "502", 1 * E)
    await adjust(store, "502", "a1", -25 * E)  # -24.00: every threshold at once
    acct = await account(store, "502")
    assert (acct.barring, acct.engaged) == ("all", (0, -5 * E, -20 * E))
    # A top-up to -4.00 lifts bar-all (lift -5) but not bar-outgoing (lift 0).
    await adjust(store, "502", "t1", 20 * E)
    acct = await account(store, "502")
    assert (acct.barring, acct.engaged) == ("outgoing", (0, -5 * E))
    notes = await notifications(raw_redis, "502")
    assert [(n["was"], n["bar"], n["up"]) for n in notes] == [
        ("none", "all", ""),
        ("all", "outgoing", "-20000000:bar-all"),
    ]


async def test_replayed_crossing_changes_nothing(
    engine: ChargingEngine, store: Store, raw_redis: redis.asyncio.Redis
) -> None:
    await with_ladder(store, "503", 0)
    await debit(engine, "503", "same", 120)
    await debit(engine, "503", "same", 120)
    acct = await account(store, "503")
    assert acct.balance == -6 * E
    assert len(await notifications(raw_redis, "503")) == 1
    assert len(await outbox(raw_redis, "503", "threshold")) == 1


async def test_a_bar_refuses_what_it_should(engine: ChargingEngine, store: Store) -> None:
    await with_ladder(store, "504", 0, limit=50 * E)
    await debit(engine, "504", "d1", 120)  # -6.00: barred outgoing
    r = await engine.reserve(ReserveRequest("o", "504", "voice", "o/0", units=60))
    assert (r.outcome, r.detail) == (Outcome.SERVICE_DENIED, "subscriber is barred-outgoing")
    r = await engine.debit(DebitRequest("504", "sms", "sms-1"))
    assert r.outcome is Outcome.SERVICE_DENIED
    # Terminating calls that are free to the subscriber still pass.
    r = await engine.reserve(ReserveRequest("t", "504", "voice-mt", "t/0", units=60))
    assert r.ok
    await adjust(store, "504", "a1", -15 * E)  # -21.00: barred all
    r = await engine.reserve(ReserveRequest("t2", "504", "voice-mt", "t2/0", units=60))
    assert r.ok, "a free service passes even a bar on all chargeable service"
    # CDR debits (forced: the usage happened) are charged whatever the barring.
    await debit(engine, "504", "cdr-1", 1)
    await adjust(store, "504", "top", 30 * E)  # 8.95: lifted
    r = await engine.reserve(ReserveRequest("o2", "504", "voice", "o2/0", units=60))
    assert r.ok


async def test_plan_thresholds_and_account_override(
    engine: ChargingEngine, store: Store, raw_redis: redis.asyncio.Redis
) -> None:
    await store.publish_thresholds({"per-second": [(-1 * E, 0, "bar-all")]})
    await add(store, "505", 0)
    await debit(engine, "505", "d1", 40)  # -2.00
    assert (await account(store, "505")).barring == "all"
    # The account's own list replaces the plan's, and applies at once.
    await store.update_subscriber("505", thresholds=[(-10 * E, 0, "bar-outgoing")], now=T0)
    acct = await account(store, "505")
    assert (acct.barring, acct.thresholds) == ("none", ((-10 * E, 0, "bar-outgoing"),))
    # Back to the plan's.
    await store.update_subscriber("505", thresholds=PLAN_THRESHOLDS, now=T0)
    acct = await account(store, "505")
    assert (acct.barring, acct.thresholds) == ("all", None)
    assert [(n["was"], n["bar"]) for n in await notifications(raw_redis, "505")] == [
        ("none", "all"),
        ("all", "none"),
        ("none", "all"),
    ]
    # A new subscriber with a negative opening balance starts barred.
    await add(store, "506", -3 * E)
    assert (await account(store, "506")).barring == "all"


async def test_state_changes_notify_the_network(
    store: Store, raw_redis: redis.asyncio.Redis
) -> None:
    await add(store, "507", E)
    await store.update_subscriber("507", state="suspended", now=T0)
    await store.update_subscriber("507", state="barred-outgoing", now=T0)
    await store.update_subscriber("507", state="active", now=T0)
    notes = await notifications(raw_redis, "507")
    assert [(n["was"], n["bar"], n["st"]) for n in notes] == [
        ("none", "all", "suspended"),
        ("all", "outgoing", "barred-outgoing"),
        ("outgoing", "none", "active"),
    ]
    # A state and a balance bar: the network bars the stronger.
    await store.update_subscriber("507", thresholds=LADDER, state="barred-outgoing", now=T0)
    await store.credit("507", kind="adjust", amount=-30 * E, reference="x", now=T0)
    acct = await account(store, "507")
    assert (acct.state, acct.barred_by_balance, acct.barring) == ("barred-outgoing", "all", "all")


async def test_thresholds_published_later_reach_existing_accounts(
    engine: ChargingEngine, store: Store, raw_redis: redis.asyncio.Redis
) -> None:
    await add(store, "508", -6 * E, limit=100 * E)  # no thresholds anywhere yet
    assert (await account(store, "508")).barring == "none"
    await store.publish_thresholds({"per-second": LADDER})
    # The account's next request applies them before anything else, even one they refuse.
    r = await engine.reserve(ReserveRequest("x", "508", "voice", "x/0", units=60))
    assert r.outcome is Outcome.SERVICE_DENIED
    assert (await account(store, "508")).barring == "outgoing"
    notes = await notifications(raw_redis, "508")
    assert [(n["was"], n["bar"], n["down"]) for n in notes] == [
        ("none", "outgoing", "0:notify,-5000000:bar-outgoing")
    ]
    # Thresholds changed again (a new plan version): lifted at once.
    await store.publish_thresholds({"per-second": [(-10 * E, 0, "bar-all")]})
    r = await engine.reserve(ReserveRequest("x", "508", "voice", "x/0", units=60))
    assert r.ok
    assert (await account(store, "508")).barring == "none"


async def test_a_balance_request_applies_new_thresholds(
    engine: ChargingEngine, store: Store, raw_redis: redis.asyncio.Redis
) -> None:
    """The issue's case: a -3.00 account, a plan's new -2.00 threshold, then only a balance
    request (read-only): it is barred, and the HLR is told."""
    await add(store, "509", -3 * E, limit=100 * E)
    await store.publish_thresholds({"per-second": [(-2 * E, 0, "bar-outgoing")]})
    b = await engine.balance("509")
    assert (b.outcome, b.balance) == (Outcome.SUCCESS, -3 * E)
    assert (await account(store, "509")).barring == "outgoing"
    notes = await notifications(raw_redis, "509")
    assert [(n["was"], n["bar"]) for n in notes] == [("none", "outgoing")]
    # A second read changes nothing more.
    version = (await account(store, "509")).version
    await engine.balance("509")
    assert (await account(store, "509")).version == version


async def test_idle_accounts_get_new_thresholds_from_the_background_pass(
    store: Store, raw_redis: redis.asyncio.Redis
) -> None:
    for i in range(30):
        await add(store, f"61{i:02d}", -3 * E, limit=100 * E)
    await store.publish_thresholds({"per-second": [(-2 * E, 0, "bar-outgoing")]})
    assert (await account(store, "6100")).barring == "none"  # (a plain read: no request)
    passes = [ThresholdCatchUp(store, lambda: T0, page=7, owner=f"p{i}") for i in range(2)]
    assert await passes[0].catch_up() == 30
    assert await passes[1].catch_up() == 0  # one process per generation does the pass
    assert passes[1].done_generation == store.thresholds_generation
    for i in range(30):
        assert (await account(store, f"61{i:02d}")).barring == "outgoing"
    assert await passes[0].catch_up() == 0  # nothing new
    # The next change: a pass again (and the bar is lifted).
    await store.publish_thresholds({"per-second": [(-10 * E, 0, "bar-all")]})
    assert await passes[1].catch_up() == 30
    assert (await account(store, "6129")).barring == "none"
    # A pass interrupted (Redis went away) is taken up again by its owner, not by another.
    await store.publish_thresholds({"per-second": LADDER})
    assert await store.claim_thresholds_pass("p9", 60) == "mine"
    assert await store.claim_thresholds_pass("p9", 60) == "mine"
    assert await store.claim_thresholds_pass("p8", 60) == "p9"


async def versions_and_events(
    store: Store, raw: redis.asyncio.Redis, msisdn: str
) -> tuple[int, list[int]]:
    """The account's version and the versions its outbox events carry, in order."""
    entries = await raw.xrange(K.outbox_key(K.bucket_of(msisdn)))
    events = [expand({k.decode(): v.decode() for k, v in f.items()}) for _, f in entries]
    vers = [int(f["ver"]) for f in events if f["sub"] == msisdn]
    return (await account(store, msisdn)).version, vers


async def test_every_version_has_its_event_when_thresholds_change_on_the_way(
    engine: ChargingEngine, store: Store, raw_redis: redis.asyncio.Redis
) -> None:
    """New thresholds applied by a request that changes nothing else (a balance read, a
    refused reserve): with no crossing and no new barring the account's version stays; when
    the barring moves, the new version has a threshold event (empty lists if none crossed)."""
    await add(store, "512", 5 * E, state="barred-outgoing")
    v0, evs0 = await versions_and_events(store, raw_redis, "512")
    await store.publish_thresholds({"per-second": [(-2 * E, 0, "bar-outgoing")]})
    r = await engine.reserve(ReserveRequest("q", "512", "voice", "q/0", units=60))
    assert r.outcome is Outcome.SERVICE_DENIED
    assert await versions_and_events(store, raw_redis, "512") == (v0, evs0)
    await store.publish_thresholds({"per-second": [(-3 * E, 0, "bar-outgoing")]})
    assert (await engine.balance("512")).outcome is Outcome.SUCCESS
    assert await versions_and_events(store, raw_redis, "512") == (v0, evs0)
    assert (
        await raw_redis.hget(K.SubscriberKeys.of("512").account, "thv")
        == store.thresholds_generation.encode()
    )

    await add(store, "513", -6 * E, limit=100 * E)
    await store.publish_thresholds({"per-second": LADDER})
    await engine.balance("513")  # bars: notify and bar-outgoing crossed
    assert (await account(store, "513")).barring == "outgoing"
    await store.publish_thresholds({"per-second": [(-10 * E, 0, "bar-all")]})
    await engine.balance("513")  # lifted: nothing crossed, the barring moved
    assert (await account(store, "513")).barring == "none"
    version, vers = await versions_and_events(store, raw_redis, "513")
    # Every version has its events (a request's, and a crossing's after it), none missing.
    assert sorted(set(vers)) == list(range(vers[0], version + 1))
    lifted = (await outbox(raw_redis, "513", "threshold"))[-1]
    assert (lifted["ver"], lifted["down"], lifted["up"], lifted["nb"]) == (
        str(version),
        "",
        "",
        "none",
    )
