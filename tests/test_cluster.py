"""The Redis Cluster client (ocs/store/cluster.py) on a real cluster of 3 masters and 3
replicas, judged by redis-py's ``RedisCluster`` and by the cluster's own answers (CLUSTER
KEYSLOT, CLUSTER NODES): routing, one write per master per loop turn, MOVED, ASK, TRYAGAIN,
NOSCRIPT after a script flush, resharding under load, WAIT for durability, a master's
failover."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.crc
from redis.asyncio.cluster import RedisCluster

from ocs.config import ConfigError, load_settings
from ocs.constants import BUCKET_COUNT
from ocs.redis_server import EmbeddedCluster, EmbeddedRedis, node_command, wait_replicated
from ocs.store import keys as K
from ocs.store.cluster import (
    ClusterRedis,
    admin_client,
    crc16,
    hot_client,
    key_slot,
    parse_cluster_url,
)
from ocs.store.durability import apply_durability
from ocs.store.errors import StoreUnavailable
from ocs.store.events import expand
from ocs.store.redis_client import NotReplicated, PipelinedRedis, RedisUnavailable
from ocs.store.store import ScriptAnswer, Store

# -- slots and URLs (no server) ------------------------------------------------------------


def test_crc16_and_slots_match_the_spec_and_redis_py() -> None:
    assert crc16(b"123456789") == 0x31C3  # the cluster spec's test vector
    for key in ["foo", "{user1000}.following", "{}x", "{a}{b}", "x{}{y}", "ocs:{b7}:acct:1"]:
        assert key_slot(key) == redis.crc.key_slot(key.encode()), key
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers")


def test_cluster_urls() -> None:
    a = parse_cluster_url("redis+cluster://u:p%40ss@10.0.0.1:7000,h2:7001/")
    assert a.nodes == (("10.0.0.1", 7000), ("h2", 7001)) and a.cluster
    assert (a.username, a.password) == ("u", "p@ss")
    with pytest.raises(ValueError, match="database 0"):
        parse_cluster_url("redis+cluster://h:1/3")
    with pytest.raises(ValueError, match="host:port"):
        parse_cluster_url("redis+cluster://h")
    s = load_settings({"OCS_REDIS_CLUSTER_NODES": "h1:7000,h2:7001"})
    assert s.redis_url == "redis+cluster://h1:7000,h2:7001/"
    with pytest.raises(ConfigError, match="OCS_REDIS_CLUSTER_NODES"):
        load_settings({"OCS_REDIS_CLUSTER_NODES": "h1"})
    with pytest.raises(ConfigError, match="give one of them"):
        load_settings({"OCS_REDIS_CLUSTER_NODES": "h:1", "OCS_REDIS_URL": "redis://h:2/0"})
    with pytest.raises(ConfigError, match="OCS_DURABILITY"):
        load_settings({"OCS_DURABILITY": "paranoid"})


# -- on the session's cluster --------------------------------------------------------------


class _admin:
    def __init__(self, url: str) -> None:
        self.client = admin_client(url)

    async def __aenter__(self) -> RedisCluster:
        assert isinstance(self.client, RedisCluster)
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()


@pytest.fixture
async def client(cluster_url: str) -> AsyncIterator[ClusterRedis]:
    c = hot_client(cluster_url)
    assert isinstance(c, ClusterRedis)
    async with c:
        yield c


async def test_every_bucket_goes_to_its_slots_master(
    client: ClusterRedis, redis_cluster: EmbeddedCluster
) -> None:
    keys = [K.outbox_key(b) for b in range(BUCKET_COUNT)]
    # All issued in one loop turn: one write per master, not one per key.
    writes = client.writes
    await asyncio.gather(*(client.execute("SET", k, str(i)) for i, k in enumerate(keys)))
    assert client.writes - writes == 3
    async with _admin(client.startup_nodes and redis_cluster.url) as ref:
        assert [await ref.get(k) for k in keys] == [str(i).encode() for i in range(BUCKET_COUNT)]
    # Each key is on the master CLUSTER KEYSLOT and CLUSTER NODES name for it.
    for key in keys[:8]:
        node = client.node_for(key)
        assert node is not None
        slot = node_command(node.port, "CLUSTER", "KEYSLOT", key)
        assert slot == key_slot(key)
        assert node_command(node.port, "GET", key) is not None
    # The buckets spread over all three masters.
    assert len({client.node_for(k) for k in keys}) == 3
    assert await client.execute("PING") == b"PONG"
    assert await client.execute("GET", keys[0], decode=True) == "0"


async def test_store_scan_visits_every_master(client: ClusterRedis) -> None:
    store = Store(client, session_ttl_ms=60_000, reference_ttl_ms=60_000)
    await store.load_scripts()
    msisdns = [f"4917{i:04d}" for i in range(40)]
    for m in msisdns:
        await store.create_subscriber(m, plan="p", balance=5, credit_limit=0, state="active",
                                      now=1)  # fmt: skip
    found: list[str] = []
    cursor = 0
    while True:
        cursor, batch = await store.list_subscribers(cursor, 7)
        found += batch
        if cursor == 0:
            break
    assert sorted(found) == msisdns


async def test_noscript_after_a_masters_script_cache_is_flushed(client: ClusterRedis) -> None:
    script = client.register_script("return redis.call('INCR', KEYS[1])")
    keys = [K.expiry_key(b) + ":n" for b in range(BUCKET_COUNT)]
    assert await asyncio.gather(*(script([k]) for k in keys)) == [1] * BUCKET_COUNT
    for node in client.masters():  # as after a failover to a replica that never loaded it
        await node.execute("SCRIPT", "FLUSH")
    assert await asyncio.gather(*(script([k]) for k in keys)) == [2] * BUCKET_COUNT


async def _move_slot(
    slot: int, source: EmbeddedRedis, target: EmbeddedRedis, masters: list[EmbeddedRedis],
    batch: int = 3, pause: float = 0.0,
) -> None:  # fmt: skip
    """The steps of ``redis-cli --cluster reshard`` for one slot (cluster spec, "Live
    reconfiguration"), slowly: IMPORTING, MIGRATING, MIGRATE a few keys at a time, NODE."""
    src_id = node_command(source.port, "CLUSTER", "MYID").decode()
    dst_id = node_command(target.port, "CLUSTER", "MYID").decode()
    node_command(target.port, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", src_id)
    node_command(source.port, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", dst_id)
    while True:
        keys = node_command(source.port, "CLUSTER", "GETKEYSINSLOT", str(slot), str(batch))
        if not keys:
            break
        node_command(source.port, "MIGRATE", "127.0.0.1", str(target.port), "", "0", "5000",
                     "KEYS", *[k.decode() for k in keys])  # fmt: skip
        await asyncio.sleep(pause)
    for node in masters:
        node_command(node.port, "CLUSTER", "SETSLOT", str(slot), "NODE", dst_id)


async def test_moved_and_ask_are_followed(
    client: ClusterRedis, redis_cluster: EmbeddedCluster
) -> None:
    key_a, key_b = "ocs:{b3}:x", "ocs:{b3}:y"
    slot = key_slot(key_a)
    await client.execute("SET", key_a, "1")
    await client.execute("SET", key_b, "2")
    masters = redis_cluster.masters()
    source = next(m for m in masters if node_command(m.port, "EXISTS", key_a) == 1)
    target = next(m for m in masters if m is not source)
    src_id = node_command(source.port, "CLUSTER", "MYID").decode()
    dst_id = node_command(target.port, "CLUSTER", "MYID").decode()
    # Half-way through a migration: key_a is on the target, key_b still on the source.
    node_command(target.port, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", src_id)
    node_command(source.port, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", dst_id)
    node_command(source.port, "MIGRATE", "127.0.0.1", str(target.port), key_a, "0", "5000")
    redirects = client.redirects
    assert await client.execute("GET", key_a) == b"1"  # ASK, then ASKING + GET on the target
    assert await client.execute("GET", key_b) == b"2"  # still served by the source
    assert client.redirects == redirects + 1
    # A script on both keys is split between the nodes: TRYAGAIN until the slot has moved.
    both = client.register_script("return redis.call('GET', KEYS[1]) .. redis.call('GET', KEYS[2])")
    call = asyncio.create_task(both([key_a, key_b]))
    await asyncio.sleep(0.05)
    assert not call.done()
    node_command(source.port, "MIGRATE", "127.0.0.1", str(target.port), key_b, "0", "5000")
    for node in masters:
        node_command(node.port, "CLUSTER", "SETSLOT", str(slot), "NODE", dst_id)
    assert await call == b"12"
    # The retried script was answered MOVED by the source: the slot is routed to the target
    # from now on, with no more redirections.
    moved_to = client.node_for(key_a)
    assert moved_to is not None and moved_to.port == target.port
    redirects = client.redirects
    assert await client.execute("GET", key_b) == b"2"
    assert await client.execute("GET", key_a) == b"1"
    assert client.redirects == redirects
    # Move it back, so the session's cluster keeps its even spread.
    await _move_slot(slot, target, source, redis_cluster.masters())


async def test_resharding_under_load_fails_no_request_and_loses_no_event(
    client: ClusterRedis, redis_cluster: EmbeddedCluster
) -> None:
    store = Store(client, session_ttl_ms=600_000, reference_ttl_ms=600_000)
    await store.load_scripts()
    subs = [f"4930{i:04d}" for i in range(128)]
    for m in subs:
        await store.create_subscriber(m, plan="p", balance=10_000_000, credit_limit=0,
                                      state="active", now=1)  # fmt: skip
    acked: dict[str, int] = dict.fromkeys(subs, 0)
    errors: list[BaseException] = []
    stop = asyncio.Event()

    async def load(worker: int) -> None:
        n = 0
        while not stop.is_set():
            m = subs[(worker * 7 + n) % len(subs)]
            n += 1
            try:
                a = await store.debit(m, request_key=f"w{worker}-{n}", service="sms", units=1,
                                      cost=1_000, bucket_quote=-1, flags="", plan="p",
                                      now=2)  # fmt: skip
            except Exception as exc:  # every failure counts
                errors.append(exc)
                continue
            if a.status == "OK":
                acked[m] += a.charged
                more[0] -= 1
                if more[0] == 0:
                    enough.set()

    #: Acknowledged debits still wanted before ``enough`` is set (negative: none wanted yet).
    more = [-(10**9)]
    enough = asyncio.Event()
    workers = [asyncio.create_task(load(w)) for w in range(16)]
    try:
        # Move the slots of 6 buckets, a few keys at a time, between the masters...
        for bucket in range(6):
            slot = key_slot(K.tag(bucket))
            masters = redis_cluster.masters()
            source = next(m for m in masters if client.node_for(K.tag(bucket)).port == m.port)  # type: ignore[union-attr]
            target = masters[(masters.index(source) + 1) % len(masters)]
            await _move_slot(slot, source, target, masters, batch=2, pause=0.01)
        # ...and a range of slots with redis-cli itself.
        masters = redis_cluster.masters()
        ids = [node_command(m.port, "CLUSTER", "MYID").decode() for m in masters[:2]]
        argv = ["redis-cli", "--cluster", "reshard", f"127.0.0.1:{masters[0].port}",
                "--cluster-from", ids[0], "--cluster-to", ids[1], "--cluster-slots", "600",
                "--cluster-yes", "--cluster-pipeline", "2"]  # fmt: skip
        done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stdout[-2000:]
        # Requests after the reshard too (redirected by it): a count, not a time.
        more[0] = 500
        async with asyncio.timeout(60):
            await enough.wait()
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert errors == []
    assert client.redirects > 0
    assert sum(acked.values()) > 0
    # Every acknowledged debit is in the balance and in the outbox, exactly once.
    async with _admin(redis_cluster.url) as ref:
        for m in subs:
            account = await store.get_account(m)
            assert account is not None
            assert account.balance == 10_000_000 - acked[m], m
            raw = await ref.xrange(K.outbox_key(K.bucket_of(m)))
            events = [expand({k.decode(): v.decode() for k, v in f.items()}) for _i, f in raw]
            debits = [f for f in events if f["sub"] == m and f["t"] == "debit"]
            assert -sum(int(f["amt"]) for f in debits) == acked[m], m


# -- durability: WAIT ----------------------------------------------------------------------


@pytest.fixture
def master_and_replica(tmp_path: Path) -> Iterator[tuple[EmbeddedRedis, EmbeddedRedis]]:
    master = EmbeddedRedis(tmp_path / "m")
    master.start()
    replica = EmbeddedRedis(tmp_path / "r",
                            extra_args=("--replicaof", "127.0.0.1", str(master.port),
                                        "--repl-diskless-sync-delay", "0"))  # fmt: skip
    try:
        replica.start()
        yield master, replica
    finally:
        replica.stop()
        master.stop()


async def test_durability_replica_waits_once_per_write_and_refuses_unreplicated(
    master_and_replica: tuple[EmbeddedRedis, EmbeddedRedis],
) -> None:
    master, replica = master_and_replica
    async with PipelinedRedis.from_url(master.url) as client:
        deadline = time.monotonic() + 10
        while (await apply_durability(client, "auto", 500)) != "replica":
            assert time.monotonic() < deadline, "the replica never connected"
            await asyncio.sleep(0.05)
        assert client.wait_replicas == 1
        store = Store(client, session_ttl_ms=60_000, reference_ttl_ms=60_000)
        await store.load_scripts()
        await store.create_subscriber("1", plan="p", balance=1_000_000, credit_limit=0,
                                      state="active", now=1)  # fmt: skip
        writes = client.writes
        answers = await asyncio.gather(*(
            store.credit("1", kind="topup", amount=10, reference=f"t{i}", now=2)
            for i in range(50)
        ))  # fmt: skip
        assert {a.status for a in answers} == {"OK"}
        assert client.writes - writes == 1  # 50 scripts and one WAIT, in one write
        info = await client.execute("INFO", "commandstats", decode=True)
        assert "cmdstat_wait:calls=" in info
        # The replica stops acknowledging: the change is made but not acknowledged.
        replica.stop()
        with pytest.raises(StoreUnavailable) as caught:
            await store.credit("1", kind="topup", amount=10, reference="late", now=3)
        assert isinstance(caught.value.__cause__, NotReplicated)
        account = await store.get_account("1")
        assert account is not None and account.balance == 1_000_000 + 51 * 10
        # A retry replays the stored answer (nothing twice), and still waits.
        with pytest.raises(StoreUnavailable):
            await store.credit("1", kind="topup", amount=10, reference="late", now=4)
        account = await store.get_account("1")
        assert account is not None and account.balance == 1_000_000 + 51 * 10
        assert await apply_durability(client, "auto", 500) == "local"
        assert (
            await store.credit("1", kind="topup", amount=1, reference="x", now=5)
        ).status == "OK"


async def test_durability_fsync_sets_appendfsync_always(redis_url: str) -> None:
    async with hot_client(redis_url) as client:
        try:
            assert await apply_durability(client, "fsync", 100) == "fsync"
            masters = client.masters() if isinstance(client, ClusterRedis) else [client]
            for node in masters:
                assert await node.execute("CONFIG", "GET", "appendfsync", decode=True) == [
                    "appendfsync", "always"
                ]  # fmt: skip
        finally:
            for node in client.masters() if isinstance(client, ClusterRedis) else [client]:
                await node.execute("CONFIG", "SET", "appendfsync", "everysec")


# -- a master fails ------------------------------------------------------------------------


async def top_up_until_promoted(store: Store, msisdn: str) -> tuple[ScriptAnswer, int]:
    """One top-up (reference "r"), sent again while the store is unavailable (a master was
    killed), for at most 20 s: its answer, and how many tries were answered unavailable."""
    unavailable, started = 0, time.monotonic()
    while True:
        try:
            a = await store.credit(msisdn, kind="topup", amount=1, reference="r", now=2)
            return a, unavailable
        except StoreUnavailable:
            unavailable += 1
            assert time.monotonic() - started < 20, "no replica was promoted"
            await asyncio.sleep(0.05)


async def test_a_masters_failover_is_followed(tmp_path: Path) -> None:
    cluster = EmbeddedCluster(tmp_path / "c")
    await asyncio.to_thread(cluster.start)
    try:
        async with hot_client(cluster.url, timeout=1.0) as client:
            assert isinstance(client, ClusterRedis)
            store = Store(client, session_ttl_ms=60_000, reference_ttl_ms=60_000)
            await store.load_scripts()
            await store.create_subscriber("7", plan="p", balance=100, credit_limit=0,
                                          state="active", now=1)  # fmt: skip
            victim = client.node_for(K.SubscriberKeys.of("7").account)
            assert victim is not None
            dead = next(n for n in cluster.nodes if n.port == victim.port)
            # The replica has the account (replication is async): waited for, not slept on.
            await asyncio.to_thread(wait_replicated, dead.port)
            await asyncio.to_thread(dead.kill)
            a, unavailable = await top_up_until_promoted(store, "7")
            assert unavailable > 0 and a.status == "OK"
            assert client.node_for(K.SubscriberKeys.of("7").account).port != dead.port  # type: ignore[union-attr]
            account = await store.get_account("7")
            assert account is not None and account.balance == 101
    finally:
        await asyncio.to_thread(cluster.stop)


async def test_no_cluster_node_answers(tmp_path: Path) -> None:
    client = ClusterRedis([("127.0.0.1", 1)], connect_timeout=0.2)
    with pytest.raises(RedisUnavailable, match="no Redis Cluster node"):
        await client.connect()
    await client.close()
