"""The balance scripts as a Redis Functions library (ocs/store/functions.py): loaded once,
called with FCALL on Redis 7.0+, loaded again when Redis has lost it (one load shared by the
calls in flight), on one Redis and on every master of a cluster; EVALSHA on Redis 6.2.
(That the library computes what the scripts computed: tests/test_script_equivalence.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from ocs.redis_server import EmbeddedCluster
from ocs.store.cluster import ClusterRedis, admin_client, broadcast, hot_client
from ocs.store.functions import build_library
from ocs.store.redis_client import PipelinedRedis
from ocs.store.store import SCRIPT_NAMES, Store
from tests.conftest import TEST_REDIS, on_cluster

pytestmark = pytest.mark.skipif(TEST_REDIS == "6.2", reason="Redis 6.2 has no Functions")


def test_library_names_carry_a_digest_of_the_code() -> None:
    lib = build_library(SCRIPT_NAMES)
    assert lib.code.startswith(f"#!lua name={lib.name}\n")
    assert set(lib.functions) == set(SCRIPT_NAMES)
    assert all(f == f"{lib.name}_{n}" for n, f in lib.functions.items())
    assert build_library(SCRIPT_NAMES).name == lib.name
    # Another prelude (another version of the OCS) is another library: both can be loaded.
    from importlib import resources

    prelude = (resources.files("ocs.store") / "scripts" / "lib.lua").read_text()
    assert build_library(SCRIPT_NAMES, prelude + "\n-- v2\n").name != lib.name
    with pytest.raises(ValueError, match="per call"):
        build_library(SCRIPT_NAMES, "local x = 1\n")


async def _charge(store: Store, msisdn: str, n: int) -> list[str]:
    return [
        a.status
        for a in await asyncio.gather(*(
            store.debit(msisdn, request_key=f"d{i}", service="sms", units=1, cost=10,
                        bucket_quote=-1, flags="o", plan="p", now=1_000 + i)
            for i in range(n)
        ))
    ]  # fmt: skip


async def test_functions_on_7_and_reloaded_once_when_flushed(
    store: Store, raw_redis: redis.asyncio.Redis
) -> None:
    await store.load_scripts()
    assert store.script_mode == "functions"
    await broadcast(raw_redis, "CONFIG", "RESETSTAT")  # (the session's server is shared)
    await store.create_subscriber("4600", plan="p", balance=1_000, credit_limit=0,
                                  state="active", now=1)  # fmt: skip
    assert await _charge(store, "4600", 3) == ["OK"] * 3
    if isinstance(store.client, PipelinedRedis):
        stats = await raw_redis.info("commandstats")
        assert stats["cmdstat_fcall"]["calls"] == 4  # (the create, then the debits)
        assert "cmdstat_evalsha" not in stats
    # A FUNCTION FLUSH (or a new, empty server): the calls in flight share one load.
    await broadcast(raw_redis, "FUNCTION", "FLUSH")
    await broadcast(raw_redis, "CONFIG", "RESETSTAT")
    assert await _charge(store, "4600", 20) == ["OK"] * 20
    a = await store.get_account("4600")
    assert a is not None and a.balance == 1_000 - 20 * 10  # (d0-d2 were replays)
    if isinstance(store.client, PipelinedRedis):
        stats = await raw_redis.info("commandstats")
        assert stats["cmdstat_function|load"]["calls"] == 1


async def test_evalsha_when_asked(store: Store, raw_redis: redis.asyncio.Redis) -> None:
    await store.load_scripts(functions=False)
    assert store.script_mode == "evalsha"
    await store.create_subscriber("4601", plan="p", balance=100, credit_limit=0,
                                  state="active", now=1)  # fmt: skip
    assert await _charge(store, "4601", 2) == ["OK"] * 2


@pytest.fixture
async def cluster_store(redis_cluster: EmbeddedCluster) -> AsyncIterator[Store]:
    admin = admin_client(redis_cluster.url)
    try:
        await broadcast(admin, "FLUSHALL")
        await broadcast(admin, "FUNCTION", "FLUSH")
    finally:
        await admin.aclose()
    client = hot_client(redis_cluster.url)
    assert isinstance(client, ClusterRedis)
    async with client:
        yield Store(client, session_ttl_ms=60_000, reference_ttl_ms=60_000)


async def test_functions_on_every_master_of_a_cluster(cluster_store: Store) -> None:
    store = cluster_store
    await store.load_scripts()
    assert store.script_mode == "functions"
    assert isinstance(store.client, ClusterRedis)
    masters = store.client.masters()
    assert len(masters) == 3
    for node in masters:  # FUNCTION LOAD went to every master
        listed = await node.execute("FUNCTION", "LIST")
        assert any(build_library(SCRIPT_NAMES).name.encode() in x for x in listed[0])
    subs = [f"4917{i:04d}" for i in range(30)]  # spread over every master
    for m in subs:
        a = await store.create_subscriber(m, plan="p", balance=100, credit_limit=0,
                                          state="active", now=1)  # fmt: skip
        assert a.status == "OK"
    for node in masters:  # as on a new master that never had the library
        await node.execute("FUNCTION", "FLUSH")
    results = await asyncio.gather(*(_charge(store, m, 2) for m in subs))
    assert results == [["OK", "OK"]] * len(subs)


async def test_evalsha_where_the_redis_user_may_not_run_function(
    redis_url: str, raw_redis: redis.asyncio.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    if on_cluster():
        pytest.skip("the ACL user would be needed on every node")
    await raw_redis.execute_command(
        "ACL", "SETUSER", "nofn", "on", ">pw", "~*", "&*", "+@all", "-function"
    )
    try:
        client = PipelinedRedis.from_url(redis_url.replace("redis://", "redis://nofn:pw@"))
        async with client:
            store = Store(client, session_ttl_ms=60_000, reference_ttl_ms=60_000)
            await store.load_scripts()
            assert store.script_mode == "evalsha"
            assert "FUNCTION not allowed" in caplog.text
            await store.create_subscriber("4602", plan="p", balance=100, credit_limit=0,
                                          state="active", now=1)  # fmt: skip
            assert await _charge(store, "4602", 2) == ["OK"] * 2
    finally:
        await raw_redis.execute_command("ACL", "DELUSER", "nofn")
