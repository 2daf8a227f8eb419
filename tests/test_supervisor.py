"""``ocs serve --workers 2`` as a real process tree against the test session's Redis: workers
share the ports, a Diameter session moves between them, a dead worker comes back, SIGTERM stops
everything.

Which worker serves a connection is read from /proc (the server side of the connection is a
socket in exactly one worker's file table), so the test does not depend on how the kernel
happens to spread connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from test_diameter_e2e import ccr, mscc, quotas
from test_diameter_server import Gateway, until

from ocs.billing.db import open_billing_db
from ocs.store.cluster import hot_client
from ocs.store.store import Store

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="SO_REUSEPORT and /proc: Linux"
)

FLAT = """
name = "flat"
timezone = "UTC"
currency = "EUR"
rounding = { method = "half-even", decimals = 6 }
[services.voice]
unit = "seconds"
default_quota = 60
[services.voice.network]
rating_groups = [100]
[[rates]]
service = "voice"
price = "0.09"
per = 60
"""
VOICE = "32260@3gpp.org"
INIT, UPD, TERM = 1, 2, 3
READY = re.compile(r"worker (\d+) ready \(pid (\d+)\)")
LISTENING = re.compile(r"supervising \d+ workers: native [^:]+:(\d+), diameter [^:]+:(\d+), "
                       r"http [^:]+:(\d+)")  # fmt: skip


class Supervised:
    """The supervisor process and what its log says."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())
        self.native_port = self.diameter_port = self.http_port = 0

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            async with self._changed:
                self.lines.append(line.decode(errors="replace").rstrip())
                self._changed.notify_all()

    async def wait_for(self, pattern: re.Pattern[str], count: int = 1, within: float = 20.0
                       ) -> list[re.Match[str]]:  # fmt: skip
        """The first ``count`` log lines that match, once there are that many."""

        def found() -> list[re.Match[str]]:
            return [m for m in map(pattern.search, self.lines) if m]

        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: len(found()) >= count or self._reader.done())
        matches = found()
        assert len(matches) >= count, "\n".join(self.lines)
        return matches[:count]

    def log(self) -> str:
        return "\n".join(self.lines)

    def workers(self) -> dict[int, int]:
        """Slot -> pid of the workers that said they are ready (a slot's latest line wins)."""
        return {int(m[1]): int(m[2]) for m in map(READY.search, self.lines) if m}

    async def stop(self) -> int:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(30):
                code = await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        await self._reader
        return code


@contextlib.asynccontextmanager
async def supervise(
    redis_url: str, tmp_path: Path, env: dict[str, str] | None = None
) -> AsyncIterator[Supervised]:
    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "flat.toml").write_text(FLAT)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ocs.cli", "serve", "--workers", "2", "--redis-url", redis_url,
        "--native-port", "0", "--http-port", "0", "--diameter-port", "0",
        "--plans-dir", str(plans),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "OCS_DIAMETER_HOST": "ocs.test",
                                               "OCS_DIAMETER_PEERS": "pgw.test@127.0.0.1",
                                               "OCS_METRICS_PUBLIC": "1", **(env or {})},
    )  # fmt: skip
    sup = Supervised(proc)
    try:
        (m,) = await sup.wait_for(LISTENING)
        sup.native_port, sup.diameter_port, sup.http_port = map(int, m.groups())
        await sup.wait_for(READY, 2)
        yield sup
    finally:
        await sup.stop()


@pytest.fixture
async def supervised(redis_url: str, tmp_path: Path) -> AsyncIterator[Supervised]:
    async with supervise(redis_url, tmp_path) as sup:
        yield sup


def serving_pid(gw: Gateway | asyncio.StreamWriter, server_port: int, pids: list[int]) -> int:
    """The worker whose file table holds the server side of ``gw``'s connection."""
    writer = gw if isinstance(gw, asyncio.StreamWriter) else gw.writer
    client_port = writer.get_extra_info("sockname")[1]
    inode = None
    with open("/proc/net/tcp") as f:
        for row in f.readlines()[1:]:
            cols = row.split()
            local, remote = cols[1], cols[2]
            if int(local.split(":")[1], 16) == server_port and \
                    int(remote.split(":")[1], 16) == client_port:  # fmt: skip
                inode = cols[9]
    assert inode is not None, "no server-side socket for the connection"
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
    raise AssertionError(f"no worker of {pids} holds socket {inode}")


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def connect_to_each(sup: Supervised, pids: list[int]) -> dict[int, Gateway]:
    """One Diameter connection served by each worker (connect until the kernel obliges)."""
    found: dict[int, Gateway] = {}
    spare: list[Gateway] = []
    try:
        for _ in range(64):
            gw = await Gateway.connect(sup.diameter_port)
            pid = serving_pid(gw, sup.diameter_port, pids)
            if pid in found:
                spare.append(gw)
            else:
                found[pid] = gw
            if len(found) == len(pids):
                return found
        raise AssertionError(f"64 connections, all on workers {sorted(found)}")
    finally:
        for gw in spare:
            await gw.close()


@contextlib.asynccontextmanager
async def store_with(redis_url: str, msisdn: str) -> AsyncIterator[Store]:
    """The test session's Redis through the OCS's store, with ``msisdn`` on plan flat (1.00)."""
    async with hot_client(redis_url) as client:
        store = Store(client, session_ttl_ms=60_000, reference_ttl_ms=60_000)
        await store.load_scripts()
        ans = await store.create_subscriber(
            msisdn, plan="flat", balance=1_000_000, credit_limit=0, state="active", now=0
        )
        assert ans.status == "OK"
        yield store


async def test_a_session_moves_between_workers(supervised: Supervised, redis_url: str) -> None:
    pids = list(supervised.workers().values())
    async with store_with(redis_url, "4917000001") as store:
        gws = await connect_to_each(supervised, pids)
        first, second = (gws[p] for p in pids)
        try:
            sid = "pgw.test;move;1"
            a = await first.request(ccr(first, sid, INIT, 0, mscc(100, rsu=[("CC-Time", 60)]),
                                        context=VOICE))  # fmt: skip
            assert a.result_code == 2001 and quotas(a)[100]["granted"] == {"CC-Time": 60}
            # The rest of the session through the other worker (as after a gateway failover).
            a = await second.request(ccr(second, sid, UPD, 1, mscc(100, rsu=[("CC-Time", 60)],
                                         usu=[("CC-Time", 60)]), context=VOICE))  # fmt: skip
            assert a.result_code == 2001 and quotas(a)[100]["granted"] == {"CC-Time": 60}
            a = await second.request(ccr(second, sid, TERM, 2, mscc(100, usu=[("CC-Time", 30)]),
                                         context=VOICE))  # fmt: skip
            assert a.result_code == 2001
            # And back: a repeated CCR-U at the first worker is answered, not charged again.
            again = await first.request(ccr(first, sid, UPD, 1, mscc(100, rsu=[("CC-Time", 60)],
                                            usu=[("CC-Time", 60)]), context=VOICE,
                                            retransmit=True))  # fmt: skip
            assert again.result_code == 2001
        finally:
            for gw in gws.values():
                await gw.close()
        acct = await store.get_account("4917000001")
        assert acct is not None
        # 60 s + 30 s at 0.09 a minute.
        assert (acct.balance, acct.reserved, acct.sessions) == (1_000_000 - 135_000, 0, ())


async def test_a_dead_worker_is_restarted(supervised: Supervised) -> None:
    before = supervised.workers()
    slot, victim = next(iter(before.items()))
    os.kill(victim, signal.SIGKILL)
    exited = re.compile(rf"worker {slot} \(pid {victim}\) exited \(killed by SIGKILL\); restarting")
    await supervised.wait_for(exited)
    ready = await supervised.wait_for(READY, 3)
    new_pid = int(ready[-1][2])
    assert int(ready[-1][1]) == slot and new_pid != victim and alive(new_pid)
    await until(lambda: not alive(victim))
    # Both workers serve again, on the same port.
    pids = list(supervised.workers().values())
    assert sorted(pids) == sorted([*(p for p in before.values() if p != victim), new_pid])
    gws = await connect_to_each(supervised, pids)
    for gw in gws.values():
        await gw.close()


async def test_sigterm_stops_every_process(supervised: Supervised) -> None:
    pids = list(supervised.workers().values())
    assert all(alive(p) for p in pids)
    assert await supervised.stop() == 0
    assert not any(alive(p) for p in pids), supervised.log()
    assert "all workers stopped" in supervised.log()
    # Nothing holds the ports any more: a plain socket (no SO_REUSEPORT) can take them.
    for port in (supervised.native_port, supervised.diameter_port, supervised.http_port):
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


async def scrape(port: int, pids: list[int]) -> tuple[int, str]:
    """GET /metrics on a new connection: the worker that served it and what it said."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: ocs\r\n\r\n")
        await writer.drain()
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        assert head.split(" ", 2)[1] == "200", head
        (length,) = re.findall(r"(?im)^content-length: *(\d+)", head)
        body = (await reader.readexactly(int(length))).decode()
        # Kept alive after the answer: accepted, so in exactly one worker's file table.
        pid = serving_pid(writer, port, pids)
    finally:
        writer.close()
        await writer.wait_closed()
    return pid, body


def sample(text: str, line_start: str) -> float:
    values = [float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith(line_start)]
    return sum(values)


async def test_a_scrape_of_any_worker_serves_the_sum(
    supervised: Supervised, redis_url: str
) -> None:
    """Each worker answers one CCR-I of an unknown subscriber and opens one session of a known
    one; whichever worker a scrape reaches, it counts both refusals, both open sessions and the
    credit they hold, both Diameter connections and both workers."""
    pids = list(supervised.workers().values())
    async with store_with(redis_url, "4917000002"):
        pass
    gws = await connect_to_each(supervised, pids)
    try:
        for n, gw in enumerate(gws.values()):
            a = await gw.request(ccr(gw, f"pgw.test;sum;{n}", INIT, 0,
                                     mscc(100, rsu=[("CC-Time", 60)]), context=VOICE,
                                     subscriber="4917000404"))  # fmt: skip
            assert a.result_code == 5030  # no such subscriber: an answer all the same
            a = await gw.request(ccr(gw, f"pgw.test;held;{n}", INIT, 0,
                                     mscc(100, rsu=[("CC-Time", 60)]), context=VOICE,
                                     subscriber="4917000002"))  # fmt: skip
            assert a.result_code == 2001 and quotas(a)[100]["granted"] == {"CC-Time": 60}
        counted = 'ocs_requests_total{outcome="user-unknown",protocol="diameter",verb="CCR-I"}'
        served: set[int] = set()
        async with asyncio.timeout(30):
            # Each worker writes its counts every second: wait until a scrape shows both, then
            # every scrape must, from both workers.
            while True:
                pid, text = await scrape(supervised.http_port, pids)
                held = sample(text, "ocs_held_credit_micros{")
                if sample(text, counted) == 2 and held == 2 * 90_000:
                    break
                await asyncio.sleep(0.1)
            while served != set(pids):
                pid, text = await scrape(supervised.http_port, pids)
                served.add(pid)
                assert sample(text, counted) == 2, text
                assert 'outcome="5030"' not in text
                assert sample(text, "ocs_workers ") == 2
                assert sample(text, 'ocs_open_connections{protocol="diameter"}') == 2
                assert sample(text, 'ocs_diameter_peers{state="OPEN"}') == 2
                # 60 s held at 0.09 a minute by each worker's session.
                assert sample(text, 'ocs_open_sessions{protocol="diameter"}') == 2
                assert sample(text, 'ocs_held_credit_micros{protocol="diameter"}') == 2 * 90_000
                assert sample(text, 'ocs_held_credit_micros{protocol="native"}') == 0
    finally:
        for gw in gws.values():
            await gw.close()


ADMIN = "test-admin-token"


async def live_on_each(sup: Supervised, pids: list[int]) -> dict[int, Any]:
    """One dashboard live connection (server-sent events) served by each worker."""
    found: dict[int, Any] = {}
    for _ in range(64):
        reader, writer = await asyncio.open_connection("127.0.0.1", sup.http_port)
        writer.write(b"GET /v1/dashboard/live HTTP/1.1\r\nHost: ocs\r\n"
                     b"Authorization: Bearer " + ADMIN.encode() + b"\r\n\r\n")  # fmt: skip
        await writer.drain()
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        assert head.split(" ", 2)[1] == "200" and "chunked" in head.lower(), head
        pid = serving_pid(writer, sup.http_port, pids)
        if pid in found:
            writer.close()
            await writer.wait_closed()
        else:
            found[pid] = (reader, writer)
        if len(found) == len(pids):
            return found
    raise AssertionError(f"64 connections, all on workers {sorted(found)}")


async def live_events(reader: asyncio.StreamReader) -> AsyncIterator[dict[str, Any]]:
    """The ``figures`` events of a chunked server-sent event stream."""
    buf = b""
    while True:
        size = int((await reader.readline()).strip(), 16)
        buf += (await reader.readexactly(size + 2))[:-2]
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            for line in event.split(b"\n"):
                if line.startswith(b"data: "):
                    yield json.loads(line[6:])


async def test_the_dashboards_requests_per_second_count_every_worker(
    redis_url: str, tmp_path: Path
) -> None:
    """Each worker answers one CCR-I; the live feed of each worker counts both (the workers'
    request counters, as /metrics sums them), as requests and as refusals (5030)."""
    url = f"sqlite:///{tmp_path / 'billing.db'}"
    open_billing_db(url).dispose()  # migrated once, not by both workers at once
    env = {"OCS_BILLING": "1", "OCS_BILLING_DB_URL": url, "OCS_ADMIN_TOKEN": ADMIN}
    async with supervise(redis_url, tmp_path, env) as sup:
        pids = list(sup.workers().values())
        lives = await live_on_each(sup, pids)
        gws = await connect_to_each(sup, pids)
        try:
            for n, gw in enumerate(gws.values()):
                sid = f"pgw.test;live;{n}"
                a = await gw.request(ccr(gw, sid, INIT, 0, mscc(100, rsu=[("CC-Time", 60)]),
                                         context=VOICE))  # fmt: skip
                assert a.result_code == 5030
            for pid, (reader, _writer) in lives.items():
                requests = refusals = 0
                async with asyncio.timeout(15):
                    async for msg in live_events(reader):
                        requests += msg["requests"]
                        refusals += msg["refusals"]
                        if requests >= 2:
                            break
                assert (requests, refusals) == (2, 2), pid
        finally:
            for gw in gws.values():
                await gw.close()
            for _reader, writer in lives.values():
                writer.close()
                await writer.wait_closed()
