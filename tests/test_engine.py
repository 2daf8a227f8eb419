"""The charging engine and its Lua scripts, against a real Redis started by the test session."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

import pytest

from ocs.charging.engine import ChargingConfig, ChargingEngine
from ocs.charging.sweeper import ExpirySweeper
from ocs.charging.types import (
    CommitRequest,
    DebitRequest,
    Outcome,
    ReleaseRequest,
    ReserveRequest,
)
from ocs.store.redis_client import PipelinedRedis
from ocs.store.store import REPLAY_DIFFERENT, REPLAY_SAME, Store, UnitBucket
from tariffs.plan import PlanVersion, parse_plan
from tariffs.rater import PlanBook, TariffRater

T0 = 1_790_000_000_000


@dataclass
class Clock:
    now: int = T0

    def __call__(self) -> int:
        return self.now


def _plan(name: str, voice_price: str, voice_block: int) -> PlanVersion:
    return parse_plan(
        f"""
name = "{name}"
timezone = "UTC"
rounding = {{ method = "half-even", decimals = 6 }}

[services.voice]
unit = "seconds"
default_quota = 60
[services.voice-mt]
unit = "seconds"
default_quota = 300
direction = "incoming"
[services.sms]
unit = "events"
default_quota = 1

[[rates]]
service = "voice"
first_increment = {voice_block}
increment = {voice_block}
price = "{voice_price}"
per = {voice_block}
[[rates]]
service = "voice-mt"
price = "0"
[[rates]]
service = "sms"
price = "0.05"
"""
    )


RATER = TariffRater(
    PlanBook(
        [
            _plan("per-second", "0.001", 1),  # 0.06 a minute, per second
            _plan("per-minute", "0.06", 60),  # 0.06 per started minute
        ]
    )
)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(store: Store, clock: Clock) -> ChargingEngine:
    return ChargingEngine(store, RATER, ChargingConfig(validity=60, grace=10), clock=clock)


async def add(store: Store, msisdn: str, balance: int, *, limit: int = 0, plan: str = "per-second",
              state: str = "active", buckets: tuple[UnitBucket, ...] = ()) -> None:  # fmt: skip
    ans = await store.create_subscriber(
        msisdn, plan=plan, balance=balance, credit_limit=limit, state=state, buckets=buckets,
        now=T0,
    )  # fmt: skip
    assert ans.status == "OK"


async def balance_of(store: Store, msisdn: str) -> tuple[int, int]:
    acct = await store.get_account(msisdn)
    assert acct is not None
    return acct.balance, acct.reserved


async def test_reserve_commit_release_cycle(store: Store, engine: ChargingEngine) -> None:
    await add(store, "100", 1_000_000)
    r = await engine.reserve(ReserveRequest("s", "100", "voice", "s/0", units=60))
    assert (r.outcome, r.granted, r.final, r.validity) == (Outcome.SUCCESS, 60, False, 60)
    assert await balance_of(store, "100") == (1_000_000, 60_000)
    r = await engine.commit(CommitRequest("s", "s/1", used=45))
    assert (r.outcome, r.charged, r.granted, r.balance) == (Outcome.SUCCESS, 45_000, 60, 955_000)
    r = await engine.release(ReleaseRequest("s", "s/2", used=10))
    assert (r.outcome, r.charged, r.balance) == (Outcome.SUCCESS, 10_000, 945_000)
    assert await balance_of(store, "100") == (945_000, 0)
    acct = await store.get_account("100")
    assert acct is not None and acct.sessions == ()


async def test_500_concurrent_reserves_grant_exactly_what_the_balance_affords(
    store: Store, engine: ChargingEngine
) -> None:
    # 37 grants of 60 s at 0.001/s, plus a little that affords no full slice but 59 s.
    await add(store, "200", 37 * 60_000 + 59_000, limit=0)
    results = await asyncio.gather(
        *(engine.reserve(ReserveRequest(f"c{i}", "200", "voice", f"c{i}/0", units=60))
          for i in range(500))
    )  # fmt: skip
    full = [r for r in results if r.ok and r.granted == 60]
    partial = [r for r in results if r.ok and r.granted < 60]
    refused = [r for r in results if r.outcome is Outcome.CREDIT_LIMIT_REACHED]
    assert len(full) == 37
    assert [(r.granted, r.final) for r in partial] == [(59, True)]
    assert len(refused) == 500 - 38
    bal, rsv = await balance_of(store, "200")
    assert (bal, rsv) == (37 * 60_000 + 59_000, 37 * 60_000 + 59_000)


async def test_concurrent_reserves_respect_the_credit_limit(
    store: Store, engine: ChargingEngine
) -> None:
    await add(store, "201", 0, limit=37 * 60_000)
    results = await asyncio.gather(
        *(engine.reserve(ReserveRequest(f"d{i}", "201", "voice", f"d{i}/0", units=60))
          for i in range(500))
    )  # fmt: skip
    assert sum(r.granted for r in results) == 37 * 60
    acct = await store.get_account("201")
    assert acct is not None and acct.available == 0


async def test_quota_is_min_of_requested_default_and_affordable(
    store: Store, engine: ChargingEngine
) -> None:
    await add(store, "300", 100_000)
    r = await engine.reserve(ReserveRequest("a", "300", "voice", "a/0", units=10))
    assert (r.granted, r.final) == (10, False)
    r = await engine.reserve(ReserveRequest("b", "300", "voice", "b/0", units=1000))
    assert (r.granted, r.final) == (60, False)  # the default quota caps it
    r = await engine.reserve(ReserveRequest("c", "300", "voice", "c/0"))
    assert (r.granted, r.final) == (30, True)  # 100_000 - 70_000 held affords 30 s
    r = await engine.reserve(ReserveRequest("d", "300", "voice", "d/0"))
    assert r.outcome is Outcome.CREDIT_LIMIT_REACHED and r.granted == 0


async def test_replays_are_idempotent(store: Store, engine: ChargingEngine) -> None:
    await add(store, "400", 1_000_000)
    reqs = [
        engine.reserve(ReserveRequest("s", "400", "voice", "s/0", units=60)),
        engine.commit(CommitRequest("s", "s/1", used=30)),
        engine.release(ReleaseRequest("s", "s/2", used=5)),
        engine.debit(DebitRequest("400", "sms", "sms-1")),
    ]
    first = [await r for r in reqs]
    after = await store.get_account("400")
    again = [
        await engine.reserve(ReserveRequest("s", "400", "voice", "s/0", units=60)),
        await engine.commit(CommitRequest("s", "s/1", used=30)),
        await engine.release(ReleaseRequest("s", "s/2", used=5)),
        await engine.debit(DebitRequest("400", "sms", "sms-1")),
    ]
    assert again == first
    assert await store.get_account("400") == after
    # A second engine (another process, empty caches) gets the same answers too.
    other = ChargingEngine(store, RATER, engine.config, clock=engine.clock)
    assert await other.debit(DebitRequest("400", "sms", "sms-1")) == first[3]
    assert await other.release(ReleaseRequest("s", "s/2", used=5), subscriber="400") == first[2]
    # The session has ended, and a replay that names only the session (the subscriber is an
    # optional hint) still finds its first answer: here, at another process, and a commit too.
    assert await engine.release(ReleaseRequest("s", "s/2", used=5)) == first[2]
    assert await other.release(ReleaseRequest("s", "s/2", used=5)) == first[2]
    third = ChargingEngine(store, RATER, engine.config, clock=engine.clock)
    assert await third.commit(CommitRequest("s", "s/1", used=30)) == first[1]
    assert await engine.commit(CommitRequest("s", "s/1", used=30)) == first[1]
    assert await store.get_account("400") == after
    # Another request under a used key changes nothing and says so.
    r = await engine.release(ReleaseRequest("s", "s/2", used=6))
    assert r.outcome is Outcome.INVALID_REQUEST and "'s/2'" in r.detail
    r = await other.debit(DebitRequest("400", "sms", "sms-1", units=2))
    assert r.outcome is Outcome.INVALID_REQUEST
    top1 = await store.credit("400", kind="topup", amount=5_000_000, reference="t1", now=T0)
    top2 = await store.credit("400", kind="topup", amount=7_000_000, reference="t1", now=T0)
    top3 = await store.credit("400", kind="topup", amount=5_000_000, reference="t1", now=T0)
    assert (top1.replay, top2.replay, top3.replay) == (0, REPLAY_DIFFERENT, REPLAY_SAME)
    assert top2.conflict and not top3.conflict and top2.charged == top3.charged == 5_000_000
    assert replace(top2, replay=0) == replace(top3, replay=0) == top1
    assert (await balance_of(store, "400"))[0] == after.balance + 5_000_000  # type: ignore[union-attr]


async def test_cumulative_rating_slices_cost_the_same_as_one_report(
    store: Store, engine: ChargingEngine
) -> None:
    await add(store, "500", 1_000_000, plan="per-minute")
    await add(store, "501", 1_000_000, plan="per-minute")
    await engine.reserve(ReserveRequest("x", "500", "voice", "x/0"))
    for i in range(3):
        await engine.commit(CommitRequest("x", f"x/{i + 1}", used=20))
    await engine.release(ReleaseRequest("x", "x/9", used=0))
    await engine.reserve(ReserveRequest("y", "501", "voice", "y/0"))
    await engine.release(ReleaseRequest("y", "y/1", used=60))
    assert await balance_of(store, "500") == await balance_of(store, "501") == (940_000, 0)


async def test_failover_to_another_engine_charges_correctly(
    store: Store, engine: ChargingEngine
) -> None:
    await add(store, "600", 1_000_000, plan="per-minute")
    await engine.reserve(ReserveRequest("f", "600", "voice", "f/0"))
    await engine.commit(CommitRequest("f", "f/1", used=20))  # first minute: 0.06
    other = ChargingEngine(store, RATER, engine.config, clock=engine.clock)
    r = await other.commit(CommitRequest("f", "f/2", used=30))  # still the first minute
    assert (r.outcome, r.charged) == (Outcome.SUCCESS, 0)
    r = await other.release(ReleaseRequest("f", "f/3", used=20))  # 70 s: second minute
    assert (r.outcome, r.charged) == (Outcome.SUCCESS, 60_000)
    assert await balance_of(store, "600") == (880_000, 0)


async def test_overuse_is_debited_in_full_but_new_grants_stop_at_the_limit(
    store: Store, engine: ChargingEngine
) -> None:
    await add(store, "700", 60_000, limit=10_000)
    r = await engine.reserve(ReserveRequest("o", "700", "voice", "o/0", units=60))
    assert r.granted == 60
    r = await engine.commit(CommitRequest("o", "o/1", used=200))  # far past the grant
    assert r.charged == 200_000 and r.balance == -140_000
    assert r.outcome is Outcome.CREDIT_LIMIT_REACHED and r.granted == 0 and r.final
    r2 = await engine.reserve(ReserveRequest("p", "700", "voice", "p/0"))
    assert r2.outcome is Outcome.CREDIT_LIMIT_REACHED
    r3 = await engine.debit(DebitRequest("700", "sms", "m1"))
    assert r3.outcome is Outcome.CREDIT_LIMIT_REACHED
    r4 = await engine.debit(DebitRequest("700", "sms", "m2", force=True))  # a CDR: it happened
    assert (r4.outcome, r4.balance) == (Outcome.SUCCESS, -190_000)
    await engine.release(ReleaseRequest("o", "o/2", used=0))
    assert await balance_of(store, "700") == (-190_000, 0)


async def test_expired_reservations_come_back(
    store: Store, engine: ChargingEngine, clock: Clock
) -> None:
    await add(store, "800", 120_000)
    await engine.reserve(ReserveRequest("e1", "800", "voice", "e1/0"))
    await engine.reserve(ReserveRequest("e2", "800", "voice", "e2/0"))
    assert await balance_of(store, "800") == (120_000, 120_000)
    clock.now += 69_000  # validity 60 + grace 10: not yet
    sweeper = ExpirySweeper(store, clock)
    assert await sweeper.sweep_once() == 0
    clock.now += 1_000
    assert await sweeper.sweep_once() == 2
    assert await balance_of(store, "800") == (120_000, 0)
    r = await engine.commit(CommitRequest("e1", "e1/1", used=10))
    assert r.outcome is Outcome.UNKNOWN_SESSION
    kinds = [e.kind for e in await store.events("800")]
    assert kinds.count("expire") == 2


async def test_expired_reservations_are_released_lazily(
    store: Store, engine: ChargingEngine, clock: Clock
) -> None:
    await add(store, "801", 60_000)
    await engine.reserve(ReserveRequest("l1", "801", "voice", "l1/0"))
    assert (await engine.reserve(ReserveRequest("l2", "801", "voice", "l2/0"))).granted == 0
    clock.now += 71_000
    r = await engine.reserve(ReserveRequest("l3", "801", "voice", "l3/0"))
    assert (r.outcome, r.granted) == (Outcome.SUCCESS, 60)
    assert await balance_of(store, "801") == (60_000, 60_000)


async def test_unit_buckets_are_used_before_money(store: Store, engine: ChargingEngine) -> None:
    await add(store, "900", 1_000_000,
              buckets=(UnitBucket("free", "voice", 90, priority=1),))  # fmt: skip
    r = await engine.reserve(ReserveRequest("b", "900", "voice", "b/0"))
    assert r.granted == 60 and await balance_of(store, "900") == (1_000_000, 0)
    r = await engine.commit(CommitRequest("b", "b/1", used=60))  # 30 bucket s left: quote
    assert (r.outcome, r.from_buckets, r.charged, r.granted) == (Outcome.SUCCESS, 60, 0, 60)
    assert await balance_of(store, "900") == (1_000_000, 30_000)  # 30 s held as money
    r = await engine.release(ReleaseRequest("b", "b/2", used=50))
    assert (r.from_buckets, r.charged) == (30, 20_000)
    acct = await store.get_account("900")
    assert acct is not None and acct.buckets == () and acct.balance == 980_000


async def test_bucket_for_events(store: Store, engine: ChargingEngine) -> None:
    await add(store, "901", 0, buckets=(UnitBucket("sms10", "sms", 2),))
    assert (await engine.debit(DebitRequest("901", "sms", "k1"))).from_buckets == 1
    assert (await engine.debit(DebitRequest("901", "sms", "k2"))).from_buckets == 1
    r = await engine.debit(DebitRequest("901", "sms", "k3"))
    assert r.outcome is Outcome.CREDIT_LIMIT_REACHED


async def test_expired_buckets_are_not_used(
    store: Store, engine: ChargingEngine, clock: Clock
) -> None:
    await add(store, "902", 0, buckets=(UnitBucket("old", "sms", 5, expires_at=T0 + 1000),))
    clock.now += 1000
    assert (await engine.debit(DebitRequest("902", "sms", "k"))).outcome is (
        Outcome.CREDIT_LIMIT_REACHED
    )


@pytest.mark.parametrize(
    ("state", "service", "outcome"),
    [
        ("barred-outgoing", "voice", Outcome.SERVICE_DENIED),
        ("barred-outgoing", "voice-mt", Outcome.SUCCESS),
        ("barred-all", "voice", Outcome.SERVICE_DENIED),
        ("barred-all", "voice-mt", Outcome.SUCCESS),
        ("suspended", "voice-mt", Outcome.SERVICE_DENIED),
        ("active", "voice-mt", Outcome.SUCCESS),
    ],
)
async def test_barring_states(
    store: Store, engine: ChargingEngine, state: str, service: str, outcome: Outcome
) -> None:
    await add(store, "1000", 1_000_000, state=state)
    r = await engine.reserve(ReserveRequest("s", "1000", service, "s/0"))
    assert r.outcome is outcome


async def test_barring_mid_session_debits_usage_and_denies_the_next_slice(
    store: Store, engine: ChargingEngine
) -> None:
    await add(store, "1001", 1_000_000)
    await engine.reserve(ReserveRequest("s", "1001", "voice", "s/0"))
    await store.update_subscriber("1001", state="barred-outgoing", now=T0)
    r = await engine.commit(CommitRequest("s", "s/1", used=30))
    assert (r.outcome, r.charged, r.granted) == (Outcome.SERVICE_DENIED, 30_000, 0)


async def test_unknowns(store: Store, engine: ChargingEngine) -> None:
    await add(store, "1100", 1_000_000)
    r = await engine.reserve(ReserveRequest("s", "9999", "voice", "s/0"))
    assert r.outcome is Outcome.USER_UNKNOWN
    r = await engine.reserve(ReserveRequest("s", "1100", "fax", "s/0"))
    assert r.outcome is Outcome.RATING_FAILED
    r = await engine.commit(CommitRequest("nope", "nope/1", used=1))
    assert r.outcome is Outcome.UNKNOWN_SESSION
    assert (await engine.debit(DebitRequest("9999", "sms", "x"))).outcome is Outcome.USER_UNKNOWN
    assert (await engine.balance("9999")).outcome is Outcome.USER_UNKNOWN
    b = await engine.balance("1100")
    assert (b.outcome, b.available, b.plan) == (Outcome.SUCCESS, 1_000_000, "per-second")


async def test_outbox_holds_one_event_per_mutation(store: Store, engine: ChargingEngine) -> None:
    await add(store, "1200", 1_000_000)
    await engine.reserve(ReserveRequest("s", "1200", "voice", "s/0"))
    await engine.reserve(ReserveRequest("s", "1200", "voice", "s/0"))  # replay: no event
    await engine.commit(CommitRequest("s", "s/1", used=10))
    await engine.release(ReleaseRequest("s", "s/2", used=10))
    await engine.debit(DebitRequest("1200", "sms", "m"))
    await engine.debit(DebitRequest("1200", "sms", "m"))  # replay: no event
    events = await store.events("1200")
    assert [e.kind for e in reversed(events)] == [
        "create", "reserve", "commit", "release", "debit"
    ]  # fmt: skip
    assert sum(int(e.fields.get("amt", "0")) for e in events) == -70_000
    assert int(events[0].fields["bal"]) == 1_000_000 - 70_000


async def test_one_round_trip_per_request_once_the_engine_knows_the_subscriber(
    store: Store, engine: ChargingEngine
) -> None:
    await add(store, "1300", 10_000_000)
    await store.load_scripts()  # as the service does at start-up (else: NOSCRIPT, then load)
    await engine.reserve(ReserveRequest("w0", "1300", "voice", "w0/0"))  # learns the plan
    steps = [
        engine.reserve(ReserveRequest("w1", "1300", "voice", "w1/0")),
        engine.commit(CommitRequest("w1", "w1/1", used=10)),
        engine.debit(DebitRequest("1300", "sms", "w-sms")),
        engine.release(ReleaseRequest("w1", "w1/2", used=10)),
    ]
    # On a Redis Cluster the session index (a key of its own slot) may live on another
    # master: then it leaves in the same loop turn on that master's connection (one write per
    # node, still one round trip).
    per_request = 1 if isinstance(store.client, PipelinedRedis) else 2
    for step in steps:
        writes = store.client.writes
        assert (await step).ok
        assert 1 <= store.client.writes - writes <= per_request


async def test_holds_are_what_the_accounts_hold(
    store: Store, engine: ChargingEngine, clock: Clock
) -> None:
    """The metrics' open sessions and held credit (``holds``) follow every answer: after each
    step they equal the accounts' own reserved money in Redis."""
    subs = ("1100", "1101", "1102")
    await add(store, subs[0], 1_000_000)
    await add(store, subs[1], 100_000, buckets=(UnitBucket("free", "voice", 90, priority=1),))
    await add(store, subs[2], 200_000, plan="per-minute")

    async def check(sessions: int) -> None:
        reserved = [(await balance_of(store, s))[1] for s in subs]
        held = engine.holds()
        assert held == ({"native": (sessions, sum(reserved))} if sessions else {}), reserved

    steps = [
        lambda: engine.reserve(ReserveRequest("h0", subs[0], "voice", "h0/0", protocol="native")),
        lambda: engine.reserve(ReserveRequest("h1", subs[1], "voice", "h1/0", protocol="native")),
        lambda: engine.reserve(ReserveRequest("h2", subs[2], "voice", "h2/0", protocol="native")),
        lambda: engine.commit(CommitRequest("h0", "h0/1", used=45, protocol="native")),
        # 30 bucket seconds left of 90: the next slice is part buckets, part money (OKQ).
        lambda: engine.commit(CommitRequest("h1", "h1/1", used=60, protocol="native")),
        lambda: engine.commit(
            CommitRequest("h2", "h2/1", used=60, next_units=0, protocol="native")
        ),
        lambda: engine.reserve(ReserveRequest("h0", subs[0], "voice", "h0/r", protocol="native")),
        lambda: engine.release(ReleaseRequest("h1", "h1/2", used=50)),
        # A replay changes nothing, here as in Redis.
        lambda: engine.commit(CommitRequest("h0", "h0/1", used=45, protocol="native")),
    ]
    for n, step in zip((1, 2, 3, 3, 3, 3, 3, 2, 2), steps, strict=True):
        assert (await step()).ok
        await check(n)
    # Another process takes a session over: this one still counts it until its hold expires.
    other = ChargingEngine(store, RATER, engine.config, clock=clock)
    assert (await other.release(ReleaseRequest("h2", "h2/2", used=0))).ok
    assert other.holds() == {}
    assert engine.holds()["native"][0] == 2
    clock.now += 70_000  # validity 60 + grace 10: the holds are gone (the sweeper's to free)
    assert engine.holds() == {}
    assert (await engine.commit(CommitRequest("h0", "h0/2", used=1))).outcome is (
        Outcome.UNKNOWN_SESSION
    )
    assert engine.holds() == {}


async def test_the_rater_keeps_only_what_is_open(store: Store, clock: Clock) -> None:
    """What rating keeps per session goes when the session ends (or is refused), so that a
    long-running process holds the open sessions' state, not every session's it saw (the
    garbage collector walks all of it: docs/architecture.md, Performance 20)."""
    rater = TariffRater(RATER.book)
    engine = ChargingEngine(store, rater, ChargingConfig(validity=60, grace=10), clock=clock)
    await add(store, "1101", 10_000_000)
    await add(store, "1102", 10_000_000, state="barred-outgoing")

    def kept() -> tuple[int, int]:
        return len(rater._sessions), len(rater._by_id)

    assert (await engine.debit(DebitRequest("1101", "sms", "k-sms-1"))).ok  # learns the plan
    denied = await engine.debit(DebitRequest("1102", "sms", "k-sms-2"))  # (learns it too)
    assert denied.outcome is Outcome.SERVICE_DENIED
    assert kept() == (0, 0)
    for i in range(5):
        assert (await engine.reserve(ReserveRequest(f"k{i}", "1101", "voice", f"k{i}/0"))).ok
        assert (await engine.commit(CommitRequest(f"k{i}", f"k{i}/1", used=30))).ok
        assert kept() == (1, 1)
        assert (await engine.release(ReleaseRequest(f"k{i}", f"k{i}/2", used=20))).ok
        assert kept() == (0, 0)
    refused = await engine.reserve(ReserveRequest("kb", "1102", "voice", "kb/0"))
    assert refused.outcome is Outcome.SERVICE_DENIED
    assert kept() == (0, 0)
    # A replay of a released session's first request: the rater keeps what the engine does.
    assert (await engine.reserve(ReserveRequest("k0", "1101", "voice", "k0/0"))).ok
    assert kept() == (len(engine._sessions),) * 2
    engine._forget_session("k0")
    # Forgotten is not lost: a session ended elsewhere is still rated right here.
    assert (await engine.reserve(ReserveRequest("k9", "1101", "voice", "k9/0"))).ok
    ctx = engine._sessions["k9"].ctx
    rater.forget(ctx)
    assert (await engine.commit(CommitRequest("k9", "k9/1", used=30))).charged == 30_000
    assert (await engine.release(ReleaseRequest("k9", "k9/2", used=0))).ok
    assert kept() == (0, 0)


def test_holds_are_summed_as_they_change_and_expire_in_order(engine: ChargingEngine) -> None:
    """What a scrape reads (:meth:`ChargingEngine.holds`) is kept as holds change, not summed
    over every open session per scrape; expired holds go from the front, in order."""
    hold = engine.hold_ms
    for i in range(10):
        engine._held(f"x{i}", "native", 100, T0 + i * 1000)
    engine._held("x0", "diameter", 50, T0 + 20_000)  # renewed: it moves to the end
    assert engine.holds(T0) == {"native": (9, 900), "diameter": (1, 50)}
    assert engine.holds(T0 + hold + 4500) == {"native": (5, 500), "diameter": (1, 50)}
    engine._drop_hold("x9")
    engine._drop_hold("x9")  # (twice is once)
    assert engine.holds(T0 + hold + 4500) == {"native": (4, 400), "diameter": (1, 50)}
    assert engine.holds(T0 + hold + 20_000) == {}
    assert engine._holds == {}


async def test_a_full_session_cache_drops_its_oldest_not_everything(
    store: Store, clock: Clock
) -> None:
    rater = TariffRater(RATER.book)
    config = ChargingConfig(validity=60, grace=10, cache_size=32)
    engine = ChargingEngine(store, rater, config, clock=clock)
    await add(store, "1201", 10_000_000)
    for i in range(40):
        clock.now += 1  # (each session its own rating context)
        assert (await engine.reserve(ReserveRequest(f"c{i}", "1201", "voice", f"c{i}/0"))).ok
    kept = list(engine._sessions)
    assert 30 <= len(kept) <= 32 and kept[-1] == "c39" and "c0" not in kept
    # (the rater forgot the dropped ones too)
    assert len(rater._sessions) == len(rater._by_id) == len(kept)
    # A dropped session still works: the script tells the engine what it lost.
    assert (await engine.release(ReleaseRequest("c0", "c0/1", used=10))).charged == 10_000


async def test_a_session_taken_back_after_failover_is_cached_anew(
    store: Store, engine: ChargingEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a STALE answer (another process served the session meanwhile) the engine keeps
    the session as the script told it, so the next request goes in one round trip."""
    await add(store, "610", 1_000_000, plan="per-minute")
    await engine.reserve(ReserveRequest("g", "610", "voice", "g/0"))
    other = ChargingEngine(store, RATER, engine.config, clock=engine.clock)
    assert (await other.commit(CommitRequest("g", "g/1", used=20), subscriber="610")).ok
    sent: list[int] = []
    commit = store.commit

    def counting(*args: object, **kwargs: object) -> object:
        sent.append(int(kwargs["expected_version"]))  # type: ignore[call-overload]
        return commit(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "commit", counting)
    assert (await engine.commit(CommitRequest("g", "g/2", used=20))).ok  # STALE, then OK
    assert len(sent) == 2
    assert (await engine.commit(CommitRequest("g", "g/3", used=10))).ok
    assert len(sent) == 3, sent
    assert (await engine.release(ReleaseRequest("g", "g/4", used=0))).ok
    assert await balance_of(store, "610") == (940_000, 0)
