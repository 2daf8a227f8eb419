"""The dashboard's live feed over the streams of every bucket (ocs/store/streams.py,
ocs/ui/live.py): lines in many buckets, so on a Redis Cluster in slots of every master.

On the session's Redis (one Redis; a cluster under ``make test-cluster``): every line's change
reaches a listener, and the reader's cost per read (one write on one Redis, one per master on a
cluster). On a cluster always (the session's, or one started for these tests, as
tests/test_cluster.py does): a bucket whose slot moves to another master while the feed runs,
and a master that dies and is replaced by its replica.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from test_cluster import _move_slot

from ocs.billing import model as M
from ocs.billing.db import open_billing_db
from ocs.metrics import Metrics
from ocs.redis_server import EmbeddedCluster, EmbeddedRedis, node_command, wait_replicated
from ocs.store import keys as K
from ocs.store.cluster import ClusterRedis, hot_client, key_slot
from ocs.store.errors import StoreUnavailable
from ocs.store.store import Store
from ocs.store.streams import StreamReader
from ocs.ui.live import LiveFeed, live_feed
from tests.billing_db import build_sample

NOW = 1_796_425_200_000
#: Lines of ACC-1, one per bucket of the first 24 buckets met (every master has some).
LINES: list[str] = []
for _n in range(1000, 2000):
    _m = f"4917000{_n:05d}"
    if K.bucket_of(_m) not in {K.bucket_of(x) for x in LINES}:
        LINES.append(_m)
    if len(LINES) == 24:
        break


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = open_billing_db(f"sqlite:///{tmp_path / 'billing.db'}")
    build_sample(engine)
    with engine.begin() as c:
        for m in LINES:
            M.assign_line(c, "ACC-1", {"msisdn": m, "valid_from": 1_790_805_600_000}, None)
    try:
        yield engine
    finally:
        engine.dispose()


async def subscribers(store: Store) -> None:
    await store.load_scripts()
    for m in LINES:
        await store.create_subscriber(m, plan="gov-payu", balance=1_000_000, credit_limit=0,
                                      state="active", now=NOW)  # fmt: skip


async def seen(feed: LiveFeed, want: Callable[[dict[str, Any]], bool], within: float = 20.0
               ) -> dict[str, Any]:  # fmt: skip
    """The lines of the messages a listener gets, merged, once ``want`` holds for them."""
    q = feed.listen()
    lines: dict[str, Any] = {}
    try:
        async with asyncio.timeout(within):
            while not want(lines):
                lines.update((await q.get()).data["lines"])
    finally:
        feed.unlisten(q)
    return lines


async def top_up(store: Store, msisdn: str, ref: str, within: float = 20.0) -> int:
    """Credit 1 micro-unit (again while Redis is unavailable, as a client would); the balance."""
    async with asyncio.timeout(within):
        while True:
            try:
                a = await store.credit(msisdn, kind="topup", amount=1, reference=ref, now=NOW)
                assert a.status == "OK", a
                account = await store.get_account(msisdn)
                assert account is not None
                return account.balance
            except StoreUnavailable:
                await asyncio.sleep(0.1)


def balances(want: dict[str, int]) -> Callable[[dict[str, Any]], bool]:
    return lambda lines: all(lines.get(m, {}).get("balance") == b for m, b in want.items())


async def test_every_buckets_changes_reach_a_listener(
    engine: Engine, store: Store, redis_url: str
) -> None:
    await subscribers(store)
    async with live_feed(store, redis_url, engine, Metrics(), tick=0.2) as feed:
        async with asyncio.timeout(10):
            await feed.ready.wait()
        assert feed.unit_live("account", "ACC-1")["lines"] == len(LINES) + 1
        want = {m: await top_up(store, m, f"t-{m}") for m in LINES}
        await seen(feed, balances(want))
        assert feed.streams.failed == set()


@pytest.fixture(params=["session", "cluster"])
def any_url(request: pytest.FixtureRequest) -> str:
    """The session's Redis, then a cluster (the same on ``OCS_TEST_REDIS=cluster``)."""
    name = "redis_url" if request.param == "session" else "cluster_url"
    return str(request.getfixturevalue(name))


async def test_a_read_is_one_write_per_master(any_url: str) -> None:
    """One Redis: one blocking XREAD over the 128 streams. A cluster: a command may name one
    slot's keys only (CROSSSLOT, even on one master), so one XREAD per stream, all sent in
    one loop turn: one write per master (each routed by its stream's slot, no redirection)."""
    async with hot_client(any_url) as client:
        store = Store(client, session_ttl_ms=900_000, reference_ttl_ms=86_400_000)
        await subscribers(store)
        async with StreamReader.every_bucket(any_url) as reader:
            await _one_read(store, reader)


async def _one_read(store: Store, reader: StreamReader) -> None:
    assert len(reader.positions) == 128
    # Taken at connect: the subscribers' creation events are behind the positions.
    assert await reader.read(1) == []
    before = reader.client.writes
    await top_up(store, LINES[0], "w")
    entries = await reader.read(50)
    masters = len(reader.client.masters()) if isinstance(reader.client, ClusterRedis) else 1
    assert reader.client.writes - before == masters
    assert {e.fields.get("sub") for e in entries} == {LINES[0]}
    assert {e.stream for e in entries} <= {K.outbox_key(K.bucket_of(LINES[0])),
                                           K.notify_key(K.bucket_of(LINES[0]))}  # fmt: skip
    if isinstance(reader.client, ClusterRedis):
        assert reader.client.redirects == 0


@pytest.fixture
async def cluster_feed(engine: Engine, cluster_url: str) -> AsyncIterator[tuple[Store, LiveFeed]]:
    async with hot_client(cluster_url) as client:
        store = Store(client, session_ttl_ms=900_000, reference_ttl_ms=86_400_000)
        await subscribers(store)
        async with live_feed(store, cluster_url, engine, Metrics(), tick=0.2) as feed:
            async with asyncio.timeout(10):
                await feed.ready.wait()
            yield store, feed


async def test_a_bucket_that_moves_to_another_master_is_followed(
    cluster_feed: tuple[Store, LiveFeed], redis_cluster: EmbeddedCluster
) -> None:
    store, feed = cluster_feed
    line = LINES[0]
    slot = key_slot(K.outbox_key(K.bucket_of(line)))
    assert slot == key_slot(K.notify_key(K.bucket_of(line)))
    masters = redis_cluster.masters()
    source = next(m for m in masters if node_command(m.port, "EXISTS", K.outbox_key(
        K.bucket_of(line))) == 1)  # fmt: skip
    target = next(m for m in masters if m is not source)
    await seen(feed, balances({line: await top_up(store, line, "before")}))
    # While the slot migrates (keys a few at a time: ASK), and after (MOVED).
    moving = asyncio.create_task(_move_slot(slot, source, target, masters, batch=1, pause=0.05))
    try:
        balance = await top_up(store, line, "during")
        await moving
        await seen(feed, balances({line: balance}))
        balance = await top_up(store, line, "after")
        await seen(feed, balances({line: balance}))
        assert feed.streams.failed == set()
    finally:
        if not moving.done():
            await moving
        # Back where it was, so the session's cluster keeps its even spread.
        await _move_slot(slot, target, source, redis_cluster.masters())


async def test_a_masters_failover_is_followed(engine: Engine, tmp_path: Path) -> None:
    cluster = EmbeddedCluster(tmp_path / "c")
    await asyncio.to_thread(cluster.start)
    try:
        async with hot_client(cluster.url, timeout=1.0) as client:
            assert isinstance(client, ClusterRedis)
            store = Store(client, session_ttl_ms=60_000, reference_ttl_ms=60_000)
            await subscribers(store)
            async with live_feed(store, cluster.url, engine, Metrics(), tick=0.2) as feed:
                async with asyncio.timeout(10):
                    await feed.ready.wait()
                line = LINES[0]
                victim = client.node_for(K.outbox_key(K.bucket_of(line)))
                assert victim is not None
                other = next(m for m in LINES if client.node_for(K.outbox_key(K.bucket_of(m)))
                             is not victim)  # fmt: skip
                await seen(feed, balances({line: await top_up(store, line, "before")}))
                dead: EmbeddedRedis = next(n for n in cluster.nodes if n.port == victim.port)
                # The replica has the streams (replication is async): waited for, not slept on.
                await asyncio.to_thread(wait_replicated, dead.port)
                await asyncio.to_thread(dead.kill)
                # The other masters' buckets go on while this one's master is replaced.
                await seen(feed, balances({other: await top_up(store, other, "meanwhile")}))
                balance = await top_up(store, line, "after")
                await seen(feed, balances({line: balance}))
                promoted = client.node_for(K.outbox_key(K.bucket_of(line)))
                assert promoted is not None and promoted.port != dead.port
    finally:
        await asyncio.to_thread(cluster.stop)
