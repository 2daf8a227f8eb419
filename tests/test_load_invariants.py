"""The invariant checker of the load tests (bench/locust/invariants.py): quiet on an honest
store, loud on one micro-unit of difference, a lost or doubled event, a wrong reservation.

The store is the real thing: an OCS from run_ocs, charged through the native protocol, then
tampered with by hand through redis-py, as a bug would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import redis.asyncio
from secure import NATIVE_KEY
from test_service import FLAT, SETTINGS

from bench.locust.invariants import CheckReport, check
from ocs.service import Running, run_ocs
from ocs.store.events import expand
from ocs.store.keys import SubscriberKeys
from protocols.native import NativeClient

A, B = "4917000101", "4917000102"
OPENING = {A: 5_000_000, B: 180_000}


@pytest.fixture
async def ocs(redis_url: str) -> AsyncIterator[Running]:
    async with run_ocs(replace(SETTINGS, redis_url=redis_url), plans=[FLAT]) as running:
        yield running


@pytest.fixture
async def charged(ocs: Running) -> dict[str, list[int]]:
    """A little traffic on two subscribers; the client's ledger of it."""
    for msisdn, balance in OPENING.items():
        ans = await ocs.store.create_subscriber(
            msisdn, plan="flat", balance=balance, credit_limit=0, state="active", now=0
        )
        assert ans.status == "OK"
    ledger = {A: [0, 0, 0], B: [0, 0, 0]}
    async with NativeClient("127.0.0.1", ocs.native.port, key=NATIVE_KEY) as c:
        for reply, who in [
            (await c.reserve("call-1", A, "voice", seq=0, units=60), A),
            (await c.commit("call-1", seq=1, used=60, subscriber=A), A),
            (await c.release("call-1", seq=2, used=25, subscriber=A), A),
            (await c.debit(A, "sms", key="sms-1"), A),
            (await c.reserve("call-2", B, "voice", seq=0), B),
            (await c.commit("call-2", seq=1, used=60, subscriber=B), B),  # 0.09; 0.09 left, held
            (await c.commit("call-2", seq=2, used=60, subscriber=B), B),  # no next slice
            (await c.release("call-2", seq=3, used=0, subscriber=B), B),
            (await c.reserve("call-3", B, "voice", seq=0), B),  # refused: out of credit
        ]:
            assert reply.result in ("success", "credit-limit-reached"), reply
            ledger[who][0] += reply.charged
        # A session the sweeper expires (its hold comes back, nothing is charged).
        assert (await c.reserve("call-4", A, "voice", seq=0)).ok
    assert await ocs.store.expire(A, now=2**42) == 1
    ans = await ocs.store.credit(B, kind="topup", amount=1_000_000, reference="topup:v-1", now=1)
    assert ans.status == "OK"
    ledger[B][1] += 1_000_000
    return ledger


async def run_check(ocs: Running, ledger: dict[str, list[int]] | None = None,
                    **kw: object) -> CheckReport:  # fmt: skip
    return await check(ocs.redis_url, opening=OPENING, ledger=ledger, **kw)  # type: ignore[arg-type]


async def last_event(raw: redis.asyncio.Redis, msisdn: str) -> tuple[str, dict[str, str]]:
    key = SubscriberKeys.of(msisdn).outbox
    for entry_id, fields in await raw.xrevrange(key, count=1000):
        f = expand({k.decode(): v.decode() for k, v in fields.items()})
        if f["sub"] == msisdn:
            return entry_id.decode(), f
    raise AssertionError(f"no event of {msisdn}")


async def test_an_honest_store_passes(ocs: Running, charged: dict[str, list[int]]) -> None:
    report = await run_check(ocs, charged)
    assert report.ok, report.markdown()
    t = report.totals
    assert (t.subscribers, t.opening, t.credits, t.open_sessions, t.reserved) == (
        2, 5_180_000, 1_000_000, 0, 0
    )  # fmt: skip
    # 60 + 25 s at 0.09/min, one SMS at 0.05; B: 120 s.
    assert -t.debits == 127_500 + 50_000 + 180_000
    assert t.final == 5_180_000 + 1_000_000 - 357_500
    assert t.ledger_checked == 2
    assert {"create", "reserve", "commit", "release", "debit", "expire", "topup"} <= set(
        report.kinds
    )
    assert "PASS" in report.markdown()


async def test_one_micro_unit_is_caught(
    ocs: Running, charged: dict[str, list[int]], raw_redis: redis.asyncio.Redis
) -> None:
    await raw_redis.hincrby(SubscriberKeys.of(A).account, "bal", -1)
    report = await run_check(ocs, charged)
    assert not report.ok
    assert report.failing_subscribers() == 1
    text = report.markdown()
    assert "FAIL" in text and f"{A}: the last event says" in text and "off by -1 µ" in text
    # The client's ledger sees it too.
    assert any("charges the OCS reported" in p for _, p in report.problems)


async def test_an_event_one_micro_unit_off_is_caught(
    ocs: Running, charged: dict[str, list[int]], raw_redis: redis.asyncio.Redis
) -> None:
    # Rewrite A's debit event with an amount one micro-unit too small (a stream entry cannot
    # be edited: take it and every later entry out, and put them back in order).
    key = SubscriberKeys.of(A).outbox
    entries = [
        (i, expand({k.decode(): v.decode() for k, v in fields.items()}))
        for i, fields in await raw_redis.xrange(key)
    ]
    at = next(n for n, (_, f) in enumerate(entries) if f["sub"] == A and f["t"] == "debit")
    f = entries[at][1]
    f["amt"] = str(int(f["amt"]) + 1)
    await raw_redis.xdel(key, *(i for i, _ in entries[at:]))
    for _, fields in entries[at:]:
        await raw_redis.xadd(key, fields)
    report = await run_check(ocs, charged)
    assert [p for s, p in report.problems if s == A] == [
        f"version {f['ver']}: balance {int(f['bal']) - int(f['amt']) + 1} µ "
        f"{int(f['amt']):+d} µ should be {int(f['bal']) + 1} µ, the event says {f['bal']} µ "
        "(off by -1 µ)"
    ]


async def test_a_lost_event_and_a_doubled_event_are_caught(
    ocs: Running, charged: dict[str, list[int]], raw_redis: redis.asyncio.Redis
) -> None:
    key = SubscriberKeys.of(B).outbox
    entry_id, last = await last_event(raw_redis, B)  # the top-up
    await raw_redis.xdel(key, entry_id)
    report = await run_check(ocs, charged)
    problems = [p for s, p in report.problems if s == B]
    assert any("the last event says" in p for p in problems)
    assert any("the client topped up 1000000 µ, the events say 0 µ" in p for p in problems)
    # Put it back twice: one change, two events.
    await raw_redis.xadd(key, last)
    await raw_redis.xadd(key, last)
    report = await run_check(ocs, charged)
    problems = [p for s, p in report.problems if s == B]
    assert f"version {last['ver']}: the same event twice" in problems
    assert any("applied twice" in p or "several events" in p for p in problems)
    # A change whose event is missing: the account moved on, the outbox did not.
    await raw_redis.hincrby(SubscriberKeys.of(A).account, "ver", 1)
    report = await run_check(ocs, charged)
    assert any("version" in p for s, p in report.problems if s == A)


async def test_reservations_must_add_up(
    ocs: Running, charged: dict[str, list[int]], raw_redis: redis.asyncio.Redis
) -> None:
    async with NativeClient("127.0.0.1", ocs.native.port, key=NATIVE_KEY) as c:
        assert (await c.reserve("call-9", A, "voice", seq=0, units=60)).ok
    report = await run_check(ocs, charged)
    assert [p for _, p in report.problems] == [
        "1 sessions still open after the run (['call-9']), none abandoned by the load generator"
    ]
    # Reported abandoned by the generator: fine. Open sessions may be allowed.
    assert (await run_check(ocs, charged, abandoned=["call-9"])).ok
    assert (await run_check(ocs, charged, require_closed=False)).ok
    assert (await run_check(ocs, charged, abandoned=["call-9"])).totals.reserved == 90_000
    await raw_redis.hincrby(SubscriberKeys.of(A).account, "rsv", 1)
    report = await run_check(ocs, charged, abandoned=["call-9"])
    assert "reserved 90001 µ but its open sessions hold 90000 µ (off by +1 µ)" in [
        p for _, p in report.problems
    ]


async def test_events_that_move_no_money_pass(
    ocs: Running, charged: dict[str, list[int]], raw_redis: redis.asyncio.Redis
) -> None:
    # A kind the checker has never heard of (a threshold crossed, say), written in the same
    # script as the last change (same version) and as a change of its own (next version).
    _, last = await last_event(raw_redis, B)
    same = {k: last[k] for k in ("sub", "ts", "bal", "rsv", "ver")}
    key = SubscriberKeys.of(B).outbox
    await raw_redis.xadd(key, {"t": "threshold", **same, "level": "-5.00"})
    await raw_redis.xadd(key, {"t": "threshold", **same, "ver": str(int(last["ver"]) + 1)})
    await raw_redis.hincrby(SubscriberKeys.of(B).account, "ver", 1)
    report = await run_check(ocs, charged)
    assert report.ok, report.markdown()
    assert report.kinds["threshold"] == 2
    # But a kind that moves money without saying so does not.
    await raw_redis.xadd(key, {"t": "threshold", **same, "ver": str(int(last["ver"]) + 2),
                               "bal": str(int(last["bal"]) - 1)})  # fmt: skip
    await raw_redis.hincrby(SubscriberKeys.of(B).account, "ver", 1)
    await raw_redis.hincrby(SubscriberKeys.of(B).account, "bal", -1)
    report = await run_check(ocs, charged)
    assert any("(off by -1 µ)" in p for s, p in report.problems if s == B)


async def test_the_ledger_must_agree(ocs: Running, charged: dict[str, list[int]]) -> None:
    charged[A][0] += 1
    report = await run_check(ocs, charged)
    assert [s for s, _ in report.problems] == [A]
    # A subscriber with an unanswered request is not compared; Diameter knows no charges.
    charged[A][2] = 1
    assert (await run_check(ocs, charged)).ok
    charged[A][2] = 0
    assert (await run_check(ocs, charged, check_charges=False)).ok
