"""Redis Sentinel (ocs/store/sentinel.py): a real deployment of 1 master, 1 replica and 3
sentinels (``redis-server --sentinel``) on free ports; the OCS charges through it, the master
is killed with SIGKILL, a sentinel-promoted replica takes over and the OCS follows by itself,
having answered store-unavailable meanwhile. redis-py's asyncio ``Sentinel`` (the admin
client) is the independent reference for which node is the master."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from redis.exceptions import RedisError
from secure import NATIVE_KEY
from test_cluster import top_up_until_promoted
from test_service import FLAT, SETTINGS

from ocs.config import ConfigError, load_settings
from ocs.redis_server import EmbeddedRedis, EmbeddedSentinelGroup, node_command
from ocs.service import Running, run_ocs
from ocs.store.cluster import admin_client, hot_client
from ocs.store.durability import apply_durability
from ocs.store.errors import StoreUnavailable
from ocs.store.redis_client import ConnectionLost, RedisUnavailable, ReplyError
from ocs.store.sentinel import SentinelAddress, SentinelRedis, parse_sentinel_url
from ocs.store.store import Store
from protocols.native import NativeClient

# -- URLs (no server) ----------------------------------------------------------------------


def test_sentinel_urls() -> None:
    a = parse_sentinel_url("redis+sentinel://u:p%40ss@10.0.0.1:26379,h2:26380/mymaster/2")
    assert a.sentinels == (("10.0.0.1", 26379), ("h2", 26380))
    assert (a.master, a.db, a.username, a.password) == ("mymaster", 2, "u", "p@ss")
    assert a.sentinel_password is None
    b = parse_sentinel_url("redis+sentinel://h:1/m?sentinel_password=s3")
    assert (b.master, b.db, b.sentinel_password, b.password) == ("m", 0, "s3", None)
    with pytest.raises(ValueError, match="no master name"):
        parse_sentinel_url("redis+sentinel://h:1/")
    with pytest.raises(ValueError, match="host:port"):
        parse_sentinel_url("redis+sentinel://h/m")
    with pytest.raises(ValueError, match="mastername"):
        parse_sentinel_url("redis+sentinel://h:1/m/x")
    s = load_settings({"OCS_REDIS_URL": "redis+sentinel://h1:26379,h2:26379/ocs"})
    assert s.redis_url == "redis+sentinel://h1:26379,h2:26379/ocs"
    with pytest.raises(ConfigError, match=r"OCS_REDIS_URL.*master name"):
        load_settings({"OCS_REDIS_URL": "redis+sentinel://h1:26379"})
    assert isinstance(hot_client("redis+sentinel://h:1/m"), SentinelRedis)


# -- on a Sentinel deployment --------------------------------------------------------------


@pytest.fixture
async def group(tmp_path: Path) -> AsyncIterator[EmbeddedSentinelGroup]:
    g = EmbeddedSentinelGroup(tmp_path / "sentinel", replicas=1, sentinels=3, down_after_ms=1000)
    await asyncio.to_thread(g.start)
    try:
        yield g
    finally:
        await asyncio.to_thread(g.stop)


async def _redis_py_master(url: str) -> int:
    """The master's port as redis-py's Sentinel client finds it."""
    client = admin_client(url)
    try:
        info = await client.info("server")
        return int(info["tcp_port"])
    finally:
        await client.aclose()


async def test_the_ocs_charges_through_sentinel_and_survives_a_killed_master(
    group: EmbeddedSentinelGroup,
) -> None:
    settings = replace(SETTINGS, redis_url=group.url, durability="auto", redis_wait=5.0)
    async with (
        run_ocs(settings, plans=[FLAT]) as ocs,
        NativeClient("127.0.0.1", ocs.native.port, key=NATIVE_KEY, timeout=5) as client,
    ):
        assert isinstance(ocs.store.client, SentinelRedis)
        first = group.master()
        assert first is not None and ocs.store.client.port == first.port
        assert await _redis_py_master(group.url) == first.port
        assert ocs.store.client.wait_replicas == 1  # auto: the master has a replica
        await _add(ocs, "4917000001", 1_000_000)
        r = await client.reserve("s-1", "4917000001", "voice", seq=0, units=60)
        assert (r.result, r.granted) == ("success", 60)

        await asyncio.to_thread(first.kill)  # SIGKILL: no goodbye to anyone
        unavailable, started, restarted = 0, time.monotonic(), False
        while True:
            r = await client.commit("s-1", seq=1, used=60, subscriber="4917000001")
            if r.result == "success":
                break
            assert r.result == "store-unavailable", r
            unavailable += 1
            assert time.monotonic() - started < 30, "no replica was promoted"
            second = group.master()
            if not restarted and second is not None and second is not first:
                # Promoted: it has no replica, so durability "replica" refuses every change
                # until the old master is back as its replica (an operator's restart).
                assert ocs.store.client.port == second.port or not ocs.store.client.connected
                await asyncio.to_thread(first.start)
                node_command(first.port, "REPLICAOF", "127.0.0.1", str(second.port))
                restarted = True
            await asyncio.sleep(0.05)
        assert unavailable > 0 and restarted
        second = group.master()
        assert second is not None and second is not first
        assert ocs.store.client.port == second.port and ocs.store.client.master_changes == 1
        assert await _redis_py_master(group.url) == second.port
        # Nothing acknowledged was lost (the reserve waited for the replica), nothing twice.
        assert (r.charged, r.granted) == (90_000, 60)
        r = await client.release("s-1", seq=2, used=0, subscriber="4917000001")
        assert r.result == "success"
        b = await client.balance("4917000001")
        assert (b.balance, b.reserved) == (910_000, 0)
        await asyncio.to_thread(group.wait_healthy, 20)


async def test_in_local_mode_the_promoted_master_takes_changes_at_once(
    group: EmbeddedSentinelGroup,
) -> None:
    async with hot_client(group.url, timeout=1.0) as client:
        assert await apply_durability(client, "local", 1000) == "local"
        store = Store(client, session_ttl_ms=60_000, reference_ttl_ms=60_000)
        await store.load_scripts()
        await store.create_subscriber("7", plan="p", balance=100, credit_limit=0,
                                      state="active", now=1)  # fmt: skip
        await client.execute("WAIT", 1, 1000)  # the replica has the account
        first = group.master()
        assert first is not None
        await asyncio.to_thread(first.kill)
        a, unavailable = await top_up_until_promoted(store, "7")
        assert unavailable > 0 and a.status == "OK" and client.port != first.port
        account = await store.get_account("7")
        assert account is not None and account.balance == 101


async def test_a_graceful_failover_is_followed(group: EmbeddedSentinelGroup) -> None:
    """The old master stays up and takes writes until the sentinels next poll it (up to
    ~10 s): the client's watch (every 0.2 s here) moves to the new master well before."""
    async with hot_client(group.url, timeout=2.0, watch_interval=0.2) as client:
        assert isinstance(client, SentinelRedis)
        store = Store(client, session_ttl_ms=60_000, reference_ttl_ms=60_000)
        await store.load_scripts()
        await store.create_subscriber("7", plan="p", balance=100, credit_limit=0,
                                      state="active", now=1)  # fmt: skip
        first = group.master()
        assert first is not None
        # Wait for the replica to have it: the failover below must not lose it.
        await client.execute("WAIT", 1, 1000)
        assert node_command(group.sentinels[0].port, "SENTINEL", "FAILOVER", "ocs") == b"OK"
        started = time.monotonic()
        switched = None
        amount = 0
        while True:
            try:
                a = await store.credit("7", kind="topup", amount=1, reference="r", now=2)
            except StoreUnavailable:
                assert time.monotonic() - started < 20, "the failover did not complete"
                await asyncio.sleep(0.05)
                continue
            amount += 1
            if switched is None and group.master() not in (None, first):
                switched = time.monotonic()
            if client.port != first.port:
                break
            await asyncio.sleep(0.05)
        assert a.status == "OK" and switched is not None
        # Within a few watch intervals of the sentinels' switch, not Sentinel's 10 s poll.
        assert time.monotonic() - switched < 3
        account = await store.get_account("7")
        assert account is not None and account.balance == 101  # one reference, one top-up


async def test_the_admin_client_follows_a_graceful_failover_too(
    group: EmbeddedSentinelGroup,
) -> None:
    """redis-py's client (the stream readers', the outbox export's) asks the sentinels only
    for a new connection, and a pooled one stays on the old master, which answers, and takes
    writes, until the sentinels demote it (and still answers reads after): its watch moves it
    within a few intervals of the switch, as the hot-path client's does."""
    client = admin_client(group.url, watch_interval=0.2)
    try:
        first = group.master()
        assert first is not None
        assert int((await client.info("server"))["tcp_port"]) == first.port
        assert node_command(group.sentinels[0].port, "SENTINEL", "FAILOVER", "ocs") == b"OK"
        started = time.monotonic()
        switched = None
        while True:
            try:
                port: int | None = int((await client.info("server"))["tcp_port"])
            except (RedisError, OSError):  # its connection dropped under it: asked again
                port = None
            if switched is None and group.master() not in (None, first):
                switched = time.monotonic()
            if port is not None and port != first.port:
                break
            assert time.monotonic() - started < 20, "the client stayed on the old master"
            await asyncio.sleep(0.05)
        assert switched is not None and time.monotonic() - switched < 3
        master = group.master()
        assert master is not None and port == master.port
    finally:
        await client.aclose()


async def test_the_node_must_be_a_master_and_readonly_asks_again(tmp_path: Path) -> None:
    """Against two plain servers, with the sentinels' answer given by the test: a node that
    says it is a replica is refused; a master demoted under a connection (READONLY) drops it
    and the next call asks for the master again."""
    a = EmbeddedRedis(tmp_path / "a", appendonly=False)
    b = EmbeddedRedis(tmp_path / "b", appendonly=False)
    await a.start_async()
    await b.start_async()
    try:
        node_command(b.port, "REPLICAOF", "127.0.0.1", str(a.port))
        named = [("127.0.0.1", b.port)]

        class Pointed(SentinelRedis):
            async def master_address(self) -> tuple[str, int]:
                self.discoveries += 1
                return named[-1]

        client = Pointed(SentinelAddress((("127.0.0.1", 1),), "m"), timeout=2.0)
        try:
            with pytest.raises(RedisUnavailable, match="is a slave"):
                await client.execute("PING")
            named.append(("127.0.0.1", a.port))
            assert await client.execute("SET", "k", "1") == b"OK"
            # a is demoted, b promoted: a's next write answers READONLY.
            node_command(b.port, "REPLICAOF", "NO", "ONE")
            node_command(a.port, "REPLICAOF", "127.0.0.1", str(b.port))
            named.append(("127.0.0.1", b.port))
            with pytest.raises(ReplyError, match="READONLY"):
                await client.execute("SET", "k", "2")
            assert not client.connected
            assert await client.execute("SET", "k", "3") == b"OK"
            assert client.port == b.port and client.master_changes == 2
            # A script call (its reply awaited without _call) that answers READONLY drops the
            # connection too.
            script = client.register_script("return redis.call('SET', KEYS[1], ARGV[1])")
            assert await script(keys=["k"], args=["4"]) == b"OK"
            node_command(a.port, "REPLICAOF", "NO", "ONE")
            node_command(b.port, "REPLICAOF", "127.0.0.1", str(a.port))
            named.append(("127.0.0.1", a.port))
            with pytest.raises(ReplyError, match="READONLY"):
                await script(keys=["k"], args=["5"])
            assert not client.connected
            assert await script(keys=["k"], args=["6"]) == b"OK"
            assert client.port == a.port and client.master_changes == 3
        finally:
            await client.close()
    finally:
        await asyncio.to_thread(a.stop)
        await asyncio.to_thread(b.stop)


async def test_no_sentinel_answers() -> None:
    client = SentinelRedis(SentinelAddress((("127.0.0.1", 1), ("127.0.0.1", 2)), "m"),
                           connect_timeout=0.2)  # fmt: skip
    with pytest.raises(ConnectionLost, match="no sentinel gave the address"):
        await client.execute("PING")
    await client.close()


async def test_closed_and_connected_again(group: EmbeddedSentinelGroup) -> None:
    client = hot_client(group.url)
    async with client:
        assert await client.execute("PING") == b"PONG"
    async with client:  # close() closed the sentinels' connections too; connect() reopens
        assert await client.execute("PING") == b"PONG"


async def _add(ocs: Running, msisdn: str, balance: int) -> None:
    ans = await ocs.store.create_subscriber(
        msisdn, plan="flat", balance=balance, credit_limit=0, state="active", now=0
    )
    assert ans.status == "OK"
