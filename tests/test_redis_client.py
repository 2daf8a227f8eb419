"""The auto-pipelining client, checked against redis-py on the same private server."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
import trustme

from ocs.redis_server import EmbeddedRedis, RedisServerError
from ocs.store.notify import NotifyStore
from ocs.store.redis_client import (
    ClientClosed,
    CommandTimeout,
    ConnectionLost,
    PipelinedRedis,
    RedisUnavailable,
    ReplyError,
)
from tests.conftest import on_cluster

#: Exercises the reply types: a table with an integer, a bulk string, a nested table, and a
#: number (Lua numbers become integers, truncated).
LUA = """
local n = redis.call('HINCRBY', KEYS[1], 'count', ARGV[1])
redis.call('HSET', KEYS[1], 'last', ARGV[2])
return {n, redis.call('HGET', KEYS[1], 'last'), {KEYS[2], 7}, 3.99}
"""


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[PipelinedRedis]:
    if on_cluster():
        # (the one-server client's own tests; the cluster client's are tests/test_cluster.py)
        pytest.skip("PipelinedRedis speaks to one server: a cluster's is tests/test_cluster.py")
    async with PipelinedRedis.from_url(redis_url) as c:
        yield c


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A server of this test's own, free to be killed and restarted."""
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def wait_blocked(raw: redis.asyncio.Redis, count: int = 1) -> None:
    """Until the server reports `count` clients blocked (each check is a round trip)."""
    for _ in range(1000):
        info = await raw.info("clients")
        if info["blocked_clients"] >= count:
            return
    raise AssertionError("the client never blocked")


# -- results, compared with redis-py ---------------------------------------------------------


async def test_execute_matches_redis_py(
    client: PipelinedRedis, raw_redis: redis.asyncio.Redis
) -> None:
    assert await client.execute("SET", "k", "v") == b"OK"
    assert await raw_redis.get("k") == b"v"
    await raw_redis.set("n", 41)
    assert await client.execute("INCR", "n") == 42
    assert await raw_redis.get("n") == b"42"
    assert await client.execute("GET", "missing") is None
    assert await client.execute("SET", "bin", b"\x00\xff\r\n") == b"OK"
    assert await raw_redis.get("bin") == b"\x00\xff\r\n"
    assert await client.execute("HSET", "h", "a", 1, "b", 2) == 2
    pairs = await client.execute("HGETALL", "h")
    assert dict(zip(pairs[::2], pairs[1::2], strict=True)) == await raw_redis.hgetall("h")
    await raw_redis.rpush("l", "x", "y", "z")
    assert await client.execute("LRANGE", "l", 0, -1) == await raw_redis.lrange("l", 0, -1)
    assert await client.execute("PING") == b"PONG"


async def test_evalsha_matches_redis_py(
    client: PipelinedRedis, raw_redis: redis.asyncio.Redis
) -> None:
    sha = await raw_redis.script_load(LUA)
    assert sha == hashlib.sha1(LUA.encode()).hexdigest()
    ours = await client.evalsha(sha, ["{b1}:a", "{b1}:b"], [5, "x"])
    theirs = await raw_redis.evalsha(sha, 2, "{b1}:a", "{b1}:b", 5, "x")
    assert ours == [5, b"x", [b"{b1}:b", 7], 3]
    assert theirs == [10, b"x", [b"{b1}:b", 7], 3]


async def test_decode(redis_url: str, client: PipelinedRedis) -> None:
    await client.execute("RPUSH", "l", "é", "b")
    assert await client.execute("LRANGE", "l", 0, -1, decode=True) == ["é", "b"]
    async with PipelinedRedis.from_url(redis_url, decode=True) as decoding:
        assert await decoding.execute("LRANGE", "l", 0, -1) == ["é", "b"]
        assert await decoding.execute("LRANGE", "l", 0, -1, decode=False) == [
            "é".encode(),
            b"b",
        ]
        assert await decoding.execute("LLEN", "l") == 2


def test_from_url() -> None:
    c = PipelinedRedis.from_url("redis://:p%40ss@example.org:6380/3", timeout=1.5)
    assert (c.host, c.port, c.db, c.username, c.password, c.timeout) == (
        "example.org",
        6380,
        3,
        None,
        "p@ss",
        1.5,
    )
    c = PipelinedRedis.from_url("redis://localhost")
    assert (c.host, c.port, c.db, c.password) == ("localhost", 6379, 0, None)
    with pytest.raises(ValueError, match="scheme"):
        PipelinedRedis.from_url("redis+sentinel://localhost")
    c = PipelinedRedis.from_url("unix://:pw@/run/redis/redis.sock?db=4")
    assert (c.unix_path, c.db, c.password, c.ssl, c.where) == (
        "/run/redis/redis.sock", 4, "pw", None, "unix:/run/redis/redis.sock"
    )  # fmt: skip
    c = PipelinedRedis.from_url("rediss://cache.example:6380/1?ssl_cert_reqs=none")
    assert c.ssl is not None and c.ssl.verify_mode == ssl.CERT_NONE and c.db == 1
    assert PipelinedRedis.from_url("rediss://x").ssl.verify_mode == ssl.CERT_REQUIRED  # type: ignore[union-attr]
    with pytest.raises(ValueError, match=r"[Nn]o such file"):
        PipelinedRedis.from_url("rediss://x?ssl_ca_certs=/no/such/ca.pem")
    with pytest.raises(ValueError, match="socket path"):
        PipelinedRedis.from_url("unix://")


async def test_a_unix_socket(tmp_path: Path) -> None:
    sock = tmp_path / "redis.sock"
    extra = ("--unixsocket", str(sock), "--unixsocketperm", "700")
    async with EmbeddedRedis(tmp_path / "redis", extra_args=extra) as server:
        where = await written_through(f"unix://{sock}?db=3", server.port, db=3)
        assert where == f"unix:{sock}"


async def test_tls(tmp_path: Path) -> None:
    """rediss:// against a real redis-server listening with TLS, its certificate from a test
    CA: checked against that CA, refused without it."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    chain, key, ca_file = tmp_path / "r.pem", tmp_path / "r.key", tmp_path / "ca.pem"
    cert.private_key_pem.write_to_path(str(key))
    cert.cert_chain_pems[0].write_to_path(str(chain))
    ca.cert_pem.write_to_path(str(ca_file))
    port = free_port()
    extra = ("--tls-port", str(port), "--tls-cert-file", str(chain), "--tls-key-file", str(key),
             "--tls-ca-cert-file", str(ca_file), "--tls-auth-clients", "no")  # fmt: skip
    try:
        server = EmbeddedRedis(tmp_path / "redis", extra_args=extra)
        await server.start_async()
    except RedisServerError as exc:
        if "tls" in str(exc).lower():
            pytest.skip(f"this redis-server has no TLS: {str(exc).splitlines()[0]}")
        raise
    try:
        url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca_file}"
        assert await written_through(url, server.port) == f"127.0.0.1:{port} (TLS)"
        # redis-py (the consumers, the journal) reads the same URL the same way.
        notify = NotifyStore(url)
        try:
            assert isinstance(await notify.heads(), dict)
        finally:
            await notify.close()
        # The same server without the CA: the system's CAs do not know it.
        untrusted = PipelinedRedis.from_url(f"rediss://127.0.0.1:{port}/0")
        with pytest.raises(RedisUnavailable, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            await untrusted.execute("PING")
        await untrusted.close()
    finally:
        await asyncio.to_thread(server.stop)


async def written_through(url: str, tcp_port: int, **raw: Any) -> str:
    """Write a key through ``url`` with the client under test, read it back with redis-py
    over plain TCP (the independent reference); where the client said it connected."""
    async with PipelinedRedis.from_url(url) as c:
        await c.execute("SET", "written", url)
        where = c.where
    ref = redis.asyncio.Redis(port=tcp_port, **raw)
    try:
        assert await ref.get("written") == url.encode()
    finally:
        await ref.aclose()
    return where


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_password_and_db(tmp_path: Path) -> None:
    async with EmbeddedRedis(tmp_path, password="s3cret") as server:
        assert server.url == f"redis://:s3cret@127.0.0.1:{server.port}/0"
        url = server.url.removesuffix("/0") + "/2"
        await written_through(url, server.port, db=2, password="s3cret")
        wrong = PipelinedRedis.from_url(f"redis://:nope@127.0.0.1:{server.port}/0")
        with pytest.raises(RedisUnavailable, match=r"WRONGPASS|invalid password"):
            await wrong.execute("PING")
        await wrong.close()


# -- pipelining ------------------------------------------------------------------------------


async def test_one_loop_turn_is_one_write(client: PipelinedRedis) -> None:
    await client.execute("PING")  # connected
    before = client.writes
    replies = await asyncio.gather(*(client.execute("ECHO", str(i)) for i in range(200)))
    assert replies == [str(i).encode() for i in range(200)]
    assert client.writes - before == 1


async def test_fifo_with_1000_mixed_commands(
    client: PipelinedRedis, raw_redis: redis.asyncio.Redis
) -> None:
    script = client.register_script("return {tonumber(ARGV[1]) * 2, KEYS[1]}")
    await script.load()

    async def one(i: int) -> None:
        kind = i % 5
        if kind == 0:
            assert await client.execute("ECHO", f"e{i}") == f"e{i}".encode()
        elif kind == 1:
            assert await client.execute("INCRBY", f"c{i}", i) == i
        elif kind == 2:
            assert await client.execute("RPUSH", f"l{i}", *range(i % 7 + 1)) == i % 7 + 1
        elif kind == 3:
            assert await script([f"k{i}"], [i]) == [2 * i, f"k{i}".encode()]
        else:
            with pytest.raises(ReplyError, match="unknown command"):
                await client.execute(f"NOSUCH{i}")

    before = client.writes
    await asyncio.gather(*(one(i) for i in range(1000)))
    assert client.writes - before == 1
    assert await raw_redis.get("c1") == b"1"
    assert await raw_redis.llen("l2") == 2 % 7 + 1


async def test_reply_errors(client: PipelinedRedis, raw_redis: redis.asyncio.Redis) -> None:
    with pytest.raises(ReplyError, match="unknown command") as info:
        await client.execute("NOSUCHCOMMAND", "x")
    assert info.value.message.startswith("ERR")
    await raw_redis.set("s", "v")
    with pytest.raises(ReplyError, match="WRONGTYPE"):
        await client.execute("HGET", "s", "f")
    with pytest.raises(ReplyError, match=r"Error running script|user_script"):
        await client.execute("EVAL", "return redis.call('HGET', KEYS[1], 'f')", 1, "s")
    # An error reply inside an array is a value, not an exception.
    reply = await client.execute("EVAL", "return {1, redis.error_reply('boom')}", 0)
    assert reply[0] == 1
    assert isinstance(reply[1], ReplyError)
    assert reply[1].message.endswith("boom")  # 7.x prefixes "ERR "
    assert await client.execute("GET", "s") == b"v"  # still in step
    with pytest.raises(TypeError):
        await client.execute("SET", "k", True)  # bool is an int to mypy; refused on purpose


async def test_noscript_reload_many_at_once(
    client: PipelinedRedis, raw_redis: redis.asyncio.Redis
) -> None:
    script = client.register_script(LUA)
    assert await script(["{b2}:a", "{b2}:b"], [1, "first"]) == [1, b"first", [b"{b2}:b", 7], 3]
    await raw_redis.script_flush()
    await raw_redis.config_resetstat()
    results = await asyncio.gather(*(script(["{b2}:a", "{b2}:b"], [1, i]) for i in range(50)))
    assert sorted(r[0] for r in results) == list(range(2, 52))
    assert await raw_redis.script_exists(script.sha) == [True]
    stats = await raw_redis.info("commandstats")
    # The 50 NOSCRIPT failures share one SCRIPT LOAD (7.x counts subcommands separately).
    loads = stats.get("cmdstat_script|load") or stats["cmdstat_script"]
    assert loads["calls"] == 1


async def test_cancelled_call_does_not_shift_replies(
    client: PipelinedRedis, raw_redis: redis.asyncio.Redis
) -> None:
    blocked = asyncio.create_task(client.execute("BLPOP", "q", 0))
    await wait_blocked(raw_redis)
    blocked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocked
    following = asyncio.create_task(client.execute("ECHO", "after"))
    await raw_redis.rpush("q", "item")  # answers the abandoned BLPOP
    assert await following == b"after"


# -- timeouts, connection loss, close ----------------------------------------------------------


async def test_timeout_drops_and_reconnects(
    client: PipelinedRedis, raw_redis: redis.asyncio.Redis
) -> None:
    first_id = await client.execute("CLIENT", "ID")
    blocked = asyncio.create_task(client.execute("BLPOP", "q", 0, timeout=0.2))
    queued = asyncio.create_task(client.execute("ECHO", "queued", timeout=30))
    with pytest.raises(CommandTimeout):
        await blocked
    # Queued behind the timed-out command: its reply can no longer be matched.
    with pytest.raises(ConnectionLost) as info:
        await queued
    assert not isinstance(info.value, CommandTimeout)
    assert await client.execute("ECHO", "again") == b"again"
    assert await client.execute("CLIENT", "ID") != first_id


async def test_connection_loss_and_recovery(private_redis: EmbeddedRedis, tmp_path: Path) -> None:
    raw = redis.asyncio.Redis(port=private_redis.port)
    client = PipelinedRedis.from_url(private_redis.url, connect_timeout=0.5)
    try:
        script = client.register_script(LUA)
        assert (await script(["{b3}:a", "{b3}:b"], [1, "x"]))[0] == 1
        in_flight = [asyncio.create_task(client.execute("BLPOP", "q", 0))]
        in_flight += [asyncio.create_task(client.execute("ECHO", str(i))) for i in range(20)]
        await wait_blocked(raw)
        await raw.aclose()

        private_redis.kill()
        results = await asyncio.gather(*in_flight, return_exceptions=True)
        assert all(type(r) is ConnectionLost for r in results), results

        # Down: calls fail fast, sharing one connect attempt.
        started = time.monotonic()
        down = await asyncio.gather(
            *(client.execute("PING") for _ in range(20)), return_exceptions=True
        )
        assert all(isinstance(r, RedisUnavailable) for r in down), down
        assert time.monotonic() - started < 0.5

        private_redis.restart()
        # Same client object; the script cache is empty after the restart and the AOF
        # brought the hash back (count 1 -> 2, ..., 51).
        results = await asyncio.gather(*(script(["{b3}:a", "{b3}:b"], [1, i]) for i in range(50)))
        assert sorted(r[0] for r in results) == list(range(2, 52))
    finally:
        await client.close()
        await raw.aclose()


async def test_close(redis_url: str) -> None:
    if on_cluster():
        pytest.skip("PipelinedRedis speaks to one server: a cluster's is tests/test_cluster.py")
    client = PipelinedRedis.from_url(redis_url)
    await client.connect()
    assert client.connected
    # gather starts the call's task first, so its command is queued when close() begins;
    # close() waits for the reply in flight.
    echo, _ = await asyncio.gather(client.execute("ECHO", "in flight"), client.close())
    assert echo == b"in flight"
    assert not client.connected
    with pytest.raises(ClientClosed):
        await client.execute("PING")
    await client.connect()
    assert await client.execute("PING") == b"PONG"
    await client.close()
    await client.close()  # idempotent


async def test_unreachable() -> None:
    # A port nobody listens on: reserve it by binding without listening.
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        client = PipelinedRedis("127.0.0.1", port, connect_timeout=0.5)
        with pytest.raises(RedisUnavailable, match="cannot connect"):
            await client.connect()
        with pytest.raises(RedisUnavailable):
            await client.execute("PING")
        await client.close()


def test_under_uvloop(redis_server: EmbeddedRedis) -> None:
    """The service runs on uvloop, whose transports differ from asyncio's."""
    if on_cluster():
        pytest.skip("PipelinedRedis speaks to one server: a cluster's is tests/test_cluster.py")
    import uvloop

    async def scenario() -> None:
        async with PipelinedRedis.from_url(redis_server.url) as client:
            script = client.register_script("return tonumber(ARGV[1]) + 1")
            before = client.writes
            results = await asyncio.gather(*(script([], [i]) for i in range(100)))
            assert results == list(range(1, 101))
            assert client.writes - before <= 3  # NOSCRIPT, SCRIPT LOAD, retry
            with pytest.raises(ReplyError):
                await client.execute("NOSUCHCOMMAND")

    uvloop.run(scenario())
