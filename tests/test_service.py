"""The whole OCS through real sockets: native protocol in, Redis behind, crash and recovery."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import msgpack
import pytest
from secure import NATIVE_KEY, SECURE

from ocs.config import Settings
from ocs.redis_server import EmbeddedRedis
from ocs.service import Running, run_ocs
from protocols.native import NativeClient
from protocols.native.codec import hello_mac
from tariffs import parse_plan

SETTINGS = Settings(native_port=0, http_port=0, validity=60, grace=10, sweep_interval=0.2, **SECURE)
#: A plan whose prices do not depend on the time of day, so that the tests do not either.
FLAT = parse_plan(
    """
name = "flat"
timezone = "UTC"
rounding = { method = "half-even", decimals = 6 }
[services.voice]
unit = "seconds"
default_quota = 60
[services.sms]
unit = "events"
default_quota = 1
[[rates]]
service = "voice"
price = "0.09"
per = 60
[[rates]]
service = "sms"
price = "0.05"
"""
)


@pytest.fixture
async def ocs(redis_url: str) -> AsyncIterator[Running]:
    async with run_ocs(replace(SETTINGS, redis_url=redis_url), plans=[FLAT]) as running:
        yield running


@pytest.fixture
async def client(ocs: Running) -> AsyncIterator[NativeClient]:
    async with NativeClient("127.0.0.1", ocs.native.port, key=NATIVE_KEY) as c:
        yield c


async def add(ocs: Running, msisdn: str, balance: int, **kw: object) -> None:
    ans = await ocs.store.create_subscriber(
        msisdn, plan="flat", balance=balance, credit_limit=0, state="active", now=0,
        **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    assert ans.status == "OK"


async def scraped(ocs: Running) -> dict[str, float]:
    """The native protocol's open sessions and held credit, as ``/metrics`` serves them."""
    text = (await ocs.metrics.render_now()).decode()
    found = {}
    for line in text.splitlines():
        name, _, rest = line.partition('{protocol="native"} ')
        if name in ("ocs_open_sessions", "ocs_held_credit_micros") and rest:
            found[name] = float(rest)
    return found


async def test_call_through_the_native_protocol(ocs: Running, client: NativeClient) -> None:
    await add(ocs, "4917000001", 1_000_000)
    r = await client.reserve("call-1", "4917000001", "voice", seq=0, units=60)
    assert (r.result, r.granted, r.validity) == ("success", 60, 60)
    # The scrape: one native session holding 60 s at 0.09 a minute.
    assert await scraped(ocs) == {"ocs_open_sessions": 1, "ocs_held_credit_micros": 90_000}
    r = await client.commit("call-1", seq=1, used=60)  # subscriber not given: engine knows
    assert (r.result, r.charged, r.granted) == ("success", 90_000, 60)
    r = await client.release("call-1", seq=2, used=10, subscriber="4917000001")
    assert (r.result, r.charged, r.balance) == ("success", 15_000, 895_000)
    assert await scraped(ocs) == {"ocs_open_sessions": 0, "ocs_held_credit_micros": 0}
    b = await client.balance("4917000001")
    assert (b.result, b.balance, b.reserved, b.available, b.plan) == (
        "success", 895_000, 0, 895_000, "flat"
    )  # fmt: skip
    r = await client.debit("4917000001", "sms", key="m-1")
    assert (r.result, r.charged) == ("success", 50_000)
    assert replace(await client.debit("4917000001", "sms", key="m-1"), id=r.id) == r
    assert (await client.balance("nobody")).result == "user-unknown"
    assert (await client.commit("nope", seq=1, used=1)).result == "unknown-session"
    assert (await client.reserve("x", "4917000001", "fax", seq=0)).result == "rating-failed"
    # A session opened here and continued by another OCS (failover) after a reconnect.
    await client.reserve("call-2", "4917000001", "voice", seq=0)
    async with (
        run_ocs(replace(SETTINGS, redis_url=ocs.redis_url), plans=[FLAT]) as other,
        NativeClient("127.0.0.1", other.native.port, key=NATIVE_KEY) as c2,
    ):
        r = await c2.commit("call-2", seq=1, used=30)  # found through the session index
        assert (r.result, r.charged) == ("success", 45_000)
        r = await c2.release("call-2", seq=2, used=0)
        assert r.result == "success"
        # The release's answer was lost; the gateway repeats it, here and at the first OCS,
        # without the optional subscriber hint: the first answer, not unknown-session.
        assert replace(await c2.release("call-2", seq=2, used=0), id=r.id) == r
        assert replace(await client.release("call-2", seq=2, used=0), id=r.id) == r


async def test_replays_after_the_session_ended_get_the_first_answer(
    ocs: Running, client: NativeClient
) -> None:
    await add(ocs, "4917000001", 1_000_000)
    await client.reserve("t;1", "4917000001", "voice", seq=0, units=60)
    c = await client.commit("t;1", seq=1, used=20)
    r = await client.release("t;1", seq=2, used=17)
    assert (r.result, r.charged) == ("success", 25_500)
    for _ in range(2):
        assert replace(await client.release("t;1", seq=2, used=17), id=r.id) == r
        assert replace(await client.commit("t;1", seq=1, used=20), id=c.id) == c
    assert (
        replace(await client.release("t;1", seq=2, used=17, subscriber="4917000001"), id=r.id) == r
    )
    b = await client.balance("4917000001")
    assert (b.balance, b.reserved) == (1_000_000 - 30_000 - 25_500, 0)
    # The same key for another request: refused, and nothing changes.
    bad = await client.release("t;1", seq=2, used=99)
    assert bad.result == "invalid-request" and "different request" in bad.detail
    assert (await client.balance("4917000001")).balance == b.balance


async def test_pipelined_requests_on_one_connection(ocs: Running, client: NativeClient) -> None:
    await add(ocs, "4917000002", 10_000_000)
    replies = await asyncio.gather(
        *(client.debit("4917000002", "sms", key=f"k{i}") for i in range(200))
    )
    assert all(r.result == "success" for r in replies)
    assert (await client.balance("4917000002")).balance == 0


def _raw_exchange(port: int, payload: bytes) -> tuple[list[dict[str, object]], bool]:
    """Send raw bytes after the hello handshake, read replies until the server closes or
    goes quiet (the challenge and the hello's answer left out)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        data = b""
        while len(data) < 4 or len(data) < 4 + struct.unpack(">I", data[:4])[0]:
            data += s.recv(65536)
        (n,) = struct.unpack(">I", data[:4])
        nonce = msgpack.unpackb(data[4 : 4 + n])["nonce"]
        key_id, secret = NATIVE_KEY
        mac = hello_mac(secret, nonce, key_id)
        s.sendall(_frame({"id": HELLO_ID, "verb": "hello", "key": key_id, "mac": mac}) + payload)
        s.shutdown(socket.SHUT_WR)
        data = data[4 + n :]
        while chunk := s.recv(65536):
            data += chunk
    replies = []
    while len(data) >= 4:
        (n,) = struct.unpack(">I", data[:4])
        replies.append(msgpack.unpackb(data[4 : 4 + n]))
        data = data[4 + n :]
    assert replies[0] == {"id": HELLO_ID, "result": "success"}
    return replies[1:], True


HELLO_ID = 4_000_000_000


def _frame(obj: object) -> bytes:
    body = msgpack.packb(obj)
    return struct.pack(">I", len(body)) + body


@pytest.mark.parametrize(
    "request_map",
    [
        {"id": 1, "verb": "transfer"},
        {"id": 1, "verb": "reserve", "session": "s"},
        {"id": 1, "verb": "reserve", "session": "s", "subscriber": "4917000003",
         "service": "voice", "seq": 0, "units": 1.5},
        {"id": 1, "verb": "reserve", "session": "s", "subscriber": "4917000003",
         "service": "voice", "seq": 0, "units": -1},
        {"id": 1, "verb": "debit", "subscriber": "4917000003", "service": "sms", "key": "k",
         "units": 2**64 - 1},
        {"id": 1, "verb": "commit", "session": "s", "seq": "1", "used": 5},
        {"id": 1, "verb": "debit", "subscriber": "4917000003", "service": "sms", "key": ""},
    ],
)  # fmt: skip
async def test_bad_requests_get_invalid_request_and_change_nothing(
    ocs: Running, client: NativeClient, request_map: dict[str, object]
) -> None:
    await add(ocs, "4917000003", 1_000_000)
    before = await ocs.store.get_account("4917000003")
    replies, _ = await asyncio.to_thread(_raw_exchange, ocs.native.port, _frame(request_map))
    assert [(r["id"], r["result"]) for r in replies] == [(1, "invalid-request")]
    assert await ocs.store.get_account("4917000003") == before
    assert (await client.ping()).ok  # the server keeps serving


@pytest.mark.parametrize(
    "payload",
    [
        b"\x00\x00\x00\x05\xc1\xc1\xc1\xc1\xc1",  # msgpack's never-used byte
        b"\xff\xff\xff\xff",  # a length far over the limit
        _frame([1, 2, 3]),  # not a map
        os.urandom(64),
    ],
)
async def test_broken_frames_close_only_that_connection(
    ocs: Running, client: NativeClient, payload: bytes
) -> None:
    replies, _ = await asyncio.to_thread(_raw_exchange, ocs.native.port, payload)
    assert all(r.get("result") == "invalid-request" for r in replies)
    assert (await client.ping()).ok


async def test_truncated_frame_is_not_answered_and_changes_nothing(
    ocs: Running, client: NativeClient
) -> None:
    await add(ocs, "4917000004", 1_000_000)
    frame = _frame({"id": 7, "verb": "debit", "subscriber": "4917000004", "service": "sms",
                    "key": "t"})  # fmt: skip
    replies, _ = await asyncio.to_thread(_raw_exchange, ocs.native.port, frame[:-3])
    assert replies == []
    assert (await client.balance("4917000004")).balance == 1_000_000


async def test_redis_crash_gives_store_unavailable_and_the_ocs_recovers(
    tmp_path: Path,
) -> None:
    redis = EmbeddedRedis(tmp_path / "redis")
    redis.start()
    try:
        async with (
            run_ocs(replace(SETTINGS, redis_url=redis.url), plans=[FLAT]) as ocs,
            NativeClient("127.0.0.1", ocs.native.port, key=NATIVE_KEY) as client,
        ):
            await add(ocs, "4917000005", 100_000_000)
            opening = 100_000_000

            async def traffic(n: int, prefix: str) -> list[str]:
                results = []
                for i in range(n):
                    r = await client.debit("4917000005", "sms", key=f"{prefix}{i}")
                    results.append(r.result)
                return results

            before = await asyncio.gather(*(traffic(20, f"a{j}-") for j in range(10)))
            assert {r for rs in before for r in rs} == {"success"}
            # Crash Redis with requests in flight.
            running = asyncio.gather(*(traffic(50, f"b{j}-") for j in range(10)))
            await asyncio.sleep(0)
            await asyncio.to_thread(redis.kill)
            during = await running
            outcomes = {r for rs in during for r in rs}
            assert "store-unavailable" in outcomes
            assert outcomes <= {"success", "store-unavailable"}
            assert (await client.balance("4917000005")).result == "store-unavailable"
            # Redis comes back (AOF): the OCS reconnects by itself.
            await asyncio.to_thread(redis.restart)
            after = await traffic(10, "c-")
            assert set(after) == {"success"}
            # Balances are exactly what the committed events say: replay nothing twice.
            acct = await ocs.store.get_account("4917000005")
            events = await ocs.store.events("4917000005", limit=10_000)
            debits = [e for e in events if e.kind == "debit"]
            assert acct is not None
            assert acct.balance == opening + sum(int(e.fields["amt"]) for e in debits)
            assert acct.balance == int(events[0].fields["bal"])
            # Retrying the failed requests with the same keys charges each exactly once.
            for j in range(10):
                await traffic(50, f"b{j}-")
            acct = await ocs.store.get_account("4917000005")
            assert acct is not None
            assert acct.balance == opening - 50_000 * (200 + 500 + 10)
    finally:
        redis.stop()


async def test_the_ocs_waits_for_a_redis_that_starts_after_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = replace(SETTINGS, redis_url=f"redis://127.0.0.1:{port}/0", redis_wait=30.0)
    up = asyncio.Event()

    async def serve() -> None:
        async with run_ocs(settings, plans=[FLAT]) as running:
            assert await running.store.ping()
            up.set()

    task = asyncio.create_task(serve())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while "waiting up to 30 s for Redis" not in caplog.text:
        assert loop.time() < deadline and not task.done(), caplog.text
        await asyncio.sleep(0.02)
    async with EmbeddedRedis(tmp_path / "redis", port=port):
        await asyncio.wait_for(task, 30)
    assert up.is_set()


async def test_the_ocs_on_a_unix_socket_redis(tmp_path: Path) -> None:
    """OCS_REDIS_URL=unix://...: the hot-path client and the redis-py consumers alike."""
    sock = tmp_path / "redis.sock"
    extra = ("--unixsocket", str(sock), "--unixsocketperm", "700")
    async with EmbeddedRedis(tmp_path / "redis", extra_args=extra):
        settings = replace(SETTINGS, redis_url=f"unix://{sock}?db=1")
        async with (
            run_ocs(settings, plans=[FLAT]) as ocs,
            NativeClient("127.0.0.1", ocs.native.port, key=NATIVE_KEY) as c,
        ):
            await add(ocs, "4917000001", 1_000_000)
            r = await c.debit("4917000001", "sms", key="m-1")
            assert (r.result, r.charged) == ("success", 50_000)
            assert (await ocs.provisioning.notify.heads()) is not None  # (redis-py: unix too)
