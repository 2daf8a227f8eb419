"""Usage from the real outbox (the session's private Redis, real Lua scripts) into the billing
store: the consumer group, at-least-once with a crash, idempotency by event id, pending sums
kept current, and reconciliation of the billed usage with the outbox, read independently
with redis-py."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import datetime
from typing import Any

import redis.asyncio
from sqlalchemy import Engine, func, select

from ocs.billing import model as M
from ocs.billing import runs
from ocs.billing import schema as S
from ocs.billing.usage import GROUP, UsageConsumer, consuming
from ocs.constants import BUCKET_COUNT
from ocs.store.events import expand
from ocs.store.notify import NotifyStore
from ocs.store.store import Store
from tests.billing_db import build_sample

LINES = ["491700000001", "491700000002", "491700000003"]


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


async def subscribers(store: Store, now: int) -> None:
    for m in [*LINES, "491799999999"]:
        await store.create_subscriber(
            m,
            plan="gov-payu",
            balance=100_000_000,
            credit_limit=10_000_000,
            state="active",
            now=now,
        )


async def debit(store: Store, msisdn: str, key: str, cost: int, now: int, svc: str = "sms") -> None:
    ans = await store.debit(
        msisdn,
        request_key=key,
        service=svc,
        units=1,
        cost=cost,
        bucket_quote=0,
        flags="o",
        plan="gov-payu",
        now=now,
    )
    assert ans.status == "OK", ans


async def ingest_and_bill(redis_url: str, engine: Engine) -> dict[str, Any]:
    """Read the whole outbox into billing, draft 2026-11; ACC-1's invoice (no lines)."""
    outbox = NotifyStore(redis_url, outbox=True)
    try:
        await UsageConsumer(outbox, engine).drain()
    finally:
        await outbox.close()
    runs.run(engine, "2026-11", now_ms=1)
    found = runs.list_invoices(
        engine, period="2026-11", account="ACC-1", status=None, scope=None, offset=0, limit=1
    )
    return found[0]


def usage_rows(e: Engine) -> int:
    with e.connect() as c:
        return int(c.execute(select(func.count()).select_from(S.usage_event)).scalar_one())


def setup_lines(e: Engine) -> None:
    build_sample(e)
    with e.begin() as c:
        for m in LINES[1:]:
            M.assign_line(c, "ACC-1", {"msisdn": m, "valid_from": 0}, None)


async def test_outbox_usage_is_ingested_once_even_after_a_crash(
    store: Store, redis_url: str, billing_engine: Engine
) -> None:
    now = ms("2026-11-10T10:00:00+01:00")
    await subscribers(store, now)
    for i in range(6):
        await debit(store, LINES[i % 3], f"sms-{i}", 20_000, now + i)
    await debit(store, LINES[0], "sms-0", 20_000, now)  # a replay: no second event
    outbox = NotifyStore(redis_url, outbox=True)
    try:
        # Consumer A reads everything and dies before writing or acknowledging.
        crashed = UsageConsumer(outbox, billing_engine, me="A")
        await crashed.start()
        taken = await outbox.read(GROUP, "A", ids=None, count=100)
        assert len(taken) >= 6  # (the subscribers' creation events are there too)
        assert await outbox.pending_count(GROUP) == len(taken)
        # Consumer B takes over what A left unacknowledged.
        b = UsageConsumer(outbox, billing_engine, me="B")
        await b.drain()
        assert usage_rows(billing_engine) == 6
        assert await outbox.pending_count(GROUP) == 0
        # Everything read again (a second group member replaying): nothing new.
        again = UsageConsumer(outbox, billing_engine, me="C")
        notes = []
        for key in outbox.streams:
            for entry_id, fields in await outbox.redis.xrange(key):
                from ocs.store.notify import Notification

                notes.append(Notification(key, entry_id, expand(fields)))
        await again._handle(notes)
        assert again.stats.stored == 0
        assert usage_rows(billing_engine) == 6
    finally:
        await outbox.close()
    with billing_engine.connect() as c:
        amounts = c.execute(select(S.usage_event.c.amount, S.usage_event.c.kind)).all()
    assert sorted(set(amounts)) == [(20_000, "debit")]


async def test_pending_sums_follow_charging_within_seconds(
    store: Store, redis_url: str, billing_engine: Engine
) -> None:
    setup_lines(billing_engine)
    now = int(time.time() * 1000)
    await subscribers(store, now)
    outbox = NotifyStore(redis_url, outbox=True)
    consumer = UsageConsumer(outbox, billing_engine, block_ms=100)
    try:
        async with consuming(consumer):
            await debit(store, LINES[1], "p-1", 250_000, now, "voice")
            deadline = time.monotonic() + 5
            while True:
                p = runs.pending(
                    billing_engine, "ACC-1", now_ms=int(time.time() * 1000), scope=None
                )
                if p["micro"]["usage"] == 250_000:
                    break
                assert time.monotonic() < deadline, p
                await asyncio.sleep(0.05)
    finally:
        await outbox.close()


async def test_reconciliation_after_a_load(
    store: Store, redis_url: str, raw_redis: redis.asyncio.Redis, billing_engine: Engine
) -> None:
    """Hundreds of debits of random amounts on the account's lines and others; after the
    run, the usage lines of the account add up to the outbox's charges of its lines in the
    period, to the micro-unit (the outbox read here with plain XRANGE, not our consumer)."""
    setup_lines(billing_engine)
    start = ms("2026-11-01T00:00:00+01:00")
    await subscribers(store, start - 86_400_000)
    rng = random.Random(3)
    for i in range(400):
        m = rng.choice([*LINES, "491799999999"])
        at = start + rng.randrange(-2 * 86_400_000, 32 * 86_400_000)  # spills over both ends
        await debit(
            store,
            m,
            f"load-{i}",
            rng.randrange(0, 900_000),
            at,
            rng.choice(["sms", "voice", "data"]),
        )
    inv = await ingest_and_bill(redis_url, billing_engine)
    lines = runs.get_invoice(billing_engine, str(inv["id"]), None)["lines"]
    billed = sum(x["amount_micro"] for x in lines if x["kind"].startswith("usage"))
    # Independently: every debit on the account's lines before the cut-off, from XRANGE.
    end = ms("2026-12-01T00:00:00+01:00")
    expected = 0
    for b in range(BUCKET_COUNT):
        for _, raw in await raw_redis.xrange(f"ocs:{{b{b}}}:outbox"):
            f = expand({k.decode(): v.decode() for k, v in raw.items()})
            if f["t"] == "debit" and f["sub"] in LINES and int(f["ts"]) < end:
                expected += -int(f["amt"])
    assert expected > 0
    assert billed == expected
    # ... and every line still recomputes from its events
    for x in lines:
        if x["kind"].startswith("usage"):
            assert runs.explain(billing_engine, str(inv["id"]), x["seq"], None)["matches"]


async def test_usage_lines_by_destination_class(
    store: Store, redis_url: str, billing_engine: Engine
) -> None:
    """The debit script carries the called number into its event; the run reads its class
    in the contract's plan (gov-payu: 49301850 agency-network, 49 national, * international)
    and sums per service and class."""
    setup_lines(billing_engine)
    now = ms("2026-11-10T10:00:00+01:00")
    await subscribers(store, now)
    calls = [
        ("+447700900123", 250_000),
        ("030 1234567", 40_000),
        ("0171 2345678", 40_000),
        ("0049 30 1850 123", 0),
        ("", 20_000),
    ]
    for i, (to, cost) in enumerate(calls):
        ans = await store.debit(
            LINES[0],
            request_key=f"c-{i}",
            service="voice",
            units=60,
            cost=cost,
            bucket_quote=0,
            flags="o",
            plan="gov-payu",
            now=now + i,
            destination=to,
        )
        assert ans.status == "OK"
    inv = await ingest_and_bill(redis_url, billing_engine)
    usage = [
        (x["evidence"]["destination"], x["evidence"]["events"], x["amount_micro"])
        for x in runs.get_invoice(billing_engine, str(inv["id"]), None)["lines"]
        if x["kind"] == "usage"
    ]
    assert usage == [
        ("", 1, 20_000),
        ("agency-network", 1, 0),
        ("international", 1, 250_000),
        ("national", 2, 80_000),
    ]


async def test_consumer_recreates_its_group_when_the_streams_are_deleted(
    store: Store, redis_url: str, raw_redis: redis.asyncio.Redis, billing_engine: Engine
) -> None:
    """A Redis emptied under a running consumer (the demo starts from fresh data) deletes the
    streams and the group: the read waiting on them fails (UNBLOCKED), the next NOGROUP; the
    consumer creates the group again and goes on ingesting."""
    setup_lines(billing_engine)
    now = int(time.time() * 1000)
    outbox = NotifyStore(redis_url, outbox=True)
    consumer = UsageConsumer(outbox, billing_engine, block_ms=100)
    try:
        async with consuming(consumer):
            deadline = time.monotonic() + 10
            while not consumer._started:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            await raw_redis.flushall()
            await subscribers(store, now)
            await debit(store, LINES[1], "g-1", 250_000, now, "voice")
            deadline = time.monotonic() + 15
            while True:
                p = runs.pending(
                    billing_engine, "ACC-1", now_ms=int(time.time() * 1000), scope=None
                )
                if p["micro"]["usage"] == 250_000:
                    break
                assert time.monotonic() < deadline, (p, consumer.stats.errors)
                await asyncio.sleep(0.05)
        # (the path under test was taken: a read failed for the lost group)
        assert any(("NOGROUP" in e or "UNBLOCKED" in e) for e in consumer.stats.errors), (
            consumer.stats.errors
        )
        assert await raw_redis.xinfo_groups(outbox.streams[0])
    finally:
        await outbox.close()
