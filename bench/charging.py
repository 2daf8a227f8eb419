"""End to end: the OCS against the ceiling of its own Lua scripts, in the same run.

One private redis-server (AOF on, appendfsync everysec, as in production) holds N subscribers
(plan prepaid-basic, large balances), created through ``Store.create_subscriber``. A session is
reserve (voice, 60 units, seq 0) -> commit (30 used, next slice of the default quota, seq 1)
-> release (20 used, seq 2), on a random subscriber; each of the three is one request.

* ceiling: the same scripts called through ``Store`` on the thin pipelined client, with the
  costs precomputed and the session version tracked per session, N requests in flight, from
  a process of its own under uvloop: what Redis can do with these scripts. It uses two
  connections: over one, the client and Redis take turns (each waits for the other's whole
  batch), and the figure would be their sum, not Redis's limit.
* OCS: ``ocs serve`` in its own process (it picks uvloop), and a load-generator process driving
  it over the native protocol (``NativeClient``, one connection by default) with N requests in
  flight. Before the rounds, one SMS debit per subscriber teaches the OCS every subscriber's
  plan, so that the runs measure the steady state (one script call per request).

Rounds interleave the two (the order alternates); medians are reported. Then the OCS at fixed
offered loads (open loop: sessions start on a schedule, whatever the latency): the target
(15,000 requests/s by default) and half the measured ceiling (the goal's operating point).
Latency is ``time.perf_counter`` around each awaited request in the generator. CPU per request
is a process's CPU time over the measured window (``/proc/<pid>/stat`` for the OCS, ``INFO
cpu`` for Redis, ``time.process_time`` for the generator) divided by the requests completed in
the window; "cores busy" is the share of the machine's cores in use then (/proc/stat), with
the share the hypervisor stole. Afterwards every reply must have been ``success`` with the
expected grants and amounts, no account may hold a reservation or an open session, and the
money debited must equal the sum of what the replies said was charged.

    .venv/bin/python -m bench.charging [--duration S] [--inflight N] [--subscribers N]
        [--rounds R] [--rate R [R ...]] [--connections N] [--no-half-ceiling] [--no-append]
    .venv/bin/python -m bench.charging --cluster [--duration S] [--rounds R] ...

``--cluster`` runs instead, in interleaved rounds of one run: the ceiling and the OCS on one
Redis and on a Redis Cluster of 3 masters (no replicas, AOF everysec) that it starts, and the
OCS with 2 workers (``ocs serve --workers 2``) on the cluster; CPU per request (the OCS's
summed over its workers, Redis's over the masters) and the scaling ratios.

Children run in sessions of their own and die with this process; Ctrl-C (or SIGTERM) stops
the workers, then the OCS, then Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import datetime
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import hiredis
import msgpack
import uvloop

from bench.credentials import NATIVE_KEY, ocs_env
from ocs.charging.tariffs import TariffRegistry
from ocs.constants import (
    DEFAULT_VALIDITY,
    EXPIRY_GRACE,
    IDEMPOTENCY_TTL_REFERENCE,
    IDEMPOTENCY_TTL_SESSION,
    MICRO,
)
from ocs.redis_server import EmbeddedCluster, EmbeddedRedis
from ocs.store.cluster import ClusterRedis, HotRedis, hot_client
from ocs.store.keys import SubscriberKeys
from ocs.store.redis_client import PipelinedRedis, RedisClientError
from ocs.store.store import Store
from protocols.native import NativeClient
from tariffs import PlanBook, TariffRater, load_plans
from tariffs.interface import UsageContext

RESULTS: Final = Path(__file__).with_name("RESULTS.md")
PLAN: Final = "prepaid-basic"
SERVICE: Final = "voice"
#: A million currency units each: no session is ever refused for credit.
BALANCE: Final = 1_000_000 * MICRO
RESERVE_UNITS: Final = 60
COMMIT_USED: Final = 30
RELEASE_USED: Final = 20
#: Validity + grace, as the engine passes it by default.
HOLD_MS: Final = (DEFAULT_VALIDITY + EXPIRY_GRACE) * 1000
#: The open loop gives up on starting a session when this many are still running (the OCS
#: is not keeping up); such sessions are counted as dropped.
MAX_OPEN_SESSIONS: Final = 5000
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")


def default_rater() -> TariffRater:
    """The shipped plans, as the OCS loads them."""
    return TariffRater(PlanBook(load_plans()))


def msisdn(i: int) -> str:
    return f"4915{i:08d}"


# -- process-level figures ------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    # The command name (field 2) may hold spaces; fields after it are plain.
    rest = data[data.rindex(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (``ocs serve --workers N``: the supervisor
    and its workers), from /proc."""
    total = proc_cpu(pid)
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                for child in f.read().split():
                    with contextlib.suppress(OSError):
                        total += tree_cpu(int(child))
    return total


def host_cpu() -> tuple[int, int, int]:
    """Ticks of the whole machine from /proc/stat: (total, idle + iowait, steal)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:9]]
    return sum(ticks), ticks[3] + ticks[4], ticks[7]


def parse_info(raw: bytes | str) -> dict[str, str]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition(":")
        if sep:
            out[k] = v.strip()
    return out


def _nodes(client: HotRedis) -> list[PipelinedRedis]:
    """The servers behind a client: its one Redis, or every master of a cluster."""
    return client.masters() if isinstance(client, ClusterRedis) else [client]


async def command_stats(client: PipelinedRedis) -> dict[str, tuple[int, float]]:
    """``INFO commandstats``: calls and microseconds so far, per command (lower case)."""
    out: dict[str, tuple[int, float]] = {}
    for key, raw in parse_info(await client.execute("INFO", "commandstats")).items():
        if key.startswith("cmdstat_"):
            f = dict(x.split("=", 1) for x in raw.split(",") if "=" in x)
            out[key[8:]] = (int(f.get("calls", 0)), float(f.get("usec", 0)))
    return out


async def redis_cpu(client: HotRedis) -> float:
    """Redis CPU seconds so far (summed over the masters of a cluster)."""
    total = 0.0
    for node in _nodes(client):
        info = parse_info(await node.execute("INFO", "cpu"))
        total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return total


async def aof_rewrites(client: HotRedis) -> tuple[int, bool]:
    """AOF rewrites done so far, and whether one is running now (over every master)."""
    done, running = 0, False
    for node in _nodes(client):
        info = parse_info(await node.execute("INFO", "persistence"))
        done += int(info.get("aof_rewrites", "0"))
        running |= info.get("aof_rewrite_in_progress") == "1"
    return done, running


async def rewrite_aof_now(url: str) -> None:
    """Rewrite the AOF now and wait until it is done (BGREWRITEAOF), so that the next
    automatic rewrite (at ``auto-aof-rewrite-min-size`` of growth) falls outside the runs that
    follow for a while: for comparing two trees' tails without the fork landing in one
    tree's window only (its effect is Performance 7's, measured on its own)."""
    async with hot_client(url) as client:
        for node in _nodes(client):
            with contextlib.suppress(RedisClientError):  # (one already running: wait for it)
                await node.execute("BGREWRITEAOF")
            while True:
                info = parse_info(await node.execute("INFO", "persistence"))
                if info.get("aof_rewrite_in_progress") == "0" and (
                    info.get("aof_rewrite_scheduled") == "0"
                ):
                    break
                await asyncio.sleep(0.05)


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- workers (each a process of its own) ---------------------------------------------------


@dataclass
class Spec:
    """What a worker process is asked to do (passed as JSON on its command line)."""

    kind: str  # ceiling | closed | open | prime
    redis_url: str
    subscribers: int
    inflight: int
    warmup: float
    duration: float
    prefix: str
    ocs_port: int = 0
    ocs_pid: int = 0
    connections: int = 1
    rate: float = 0.0
    seed: int = 1
    #: ceiling: call the scripts as a Functions library where Redis has them (else EVALSHA).
    functions: bool = True
    #: open: write the run's timeline (per-window latency, the generator's lateness, Redis's
    #: AOF rewrites and forks) as JSON to this file (bench.compare_trees --open).
    timeline: str = ""


@dataclass
class Outcome:
    """What a worker reports (as one JSON line on stdout)."""

    kind: str
    requests: int = 0  # completed inside the measured window
    seconds: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    p999_ms: float = float("nan")
    max_ms: float = float("nan")
    #: Open loop: p99 with each session's first request timed from when it was due, not from
    #: when the generator got to it (the figure without the generator's own lateness).
    p99_due_ms: float = float("nan")
    ocs_cpu: float = 0.0
    redis_cpu: float = 0.0
    gen_cpu: float = 0.0
    aof_rewrites: int = 0  # 1 when an AOF rewrite ran during the window (its fork costs)
    host_busy: float = 0.0  # share of all the machine's cores busy during the window
    host_steal: float = 0.0  # share stolen by the hypervisor
    # Over the whole run, warm-up and drain included:
    total_requests: int = 0
    sessions: int = 0
    charged: int = 0
    dropped: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    #: Over the measured window, per Redis command: [calls, usec] (INFO commandstats).
    commands: dict[str, list[float]] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def per_request_us(self, cpu: float) -> float:
        return cpu / self.requests * 1e6 if self.requests else float("nan")


class Meter:
    """Counts and times requests; only those that complete inside the window count."""

    def __init__(self) -> None:
        self.start = float("inf")
        self.end = float("inf")
        self.latencies: list[float] = []
        #: When each of ``latencies`` ended (kept for a timeline only).
        self.ends: list[float] | None = None
        #: The same latencies, a session's first request timed from when it was due.
        self.from_due: list[float] = []
        self.total = 0
        self.sessions = 0
        self.charged = 0
        self.failures: Counter[str] = Counter()

    def record(self, t0: float, t1: float, due: float | None = None) -> None:
        self.total += 1
        if self.start <= t1 < self.end:
            self.latencies.append(t1 - t0)
            self.from_due.append(t1 - (t0 if due is None else min(due, t0)))
            if self.ends is not None:
                self.ends.append(t1)

    def fail(self, what: str) -> None:
        self.failures[what] += 1


class Window:
    """Snapshots CPU figures at the start and end of the measured window."""

    def __init__(self, spec: Spec, admin: HotRedis) -> None:
        self.spec = spec
        self.admin = admin
        self.ocs = self.redis = self.gen = 0.0
        self.rewrites = 0
        self.host_busy = self.host_steal = 0.0
        self.commands: dict[str, list[float]] = {}

    async def snapshot(
        self,
    ) -> tuple[float, float, float, tuple[int, bool], tuple[int, int, int]]:
        ocs = tree_cpu(self.spec.ocs_pid) if self.spec.ocs_pid else 0.0
        redis = await redis_cpu(self.admin)
        rewrites = await aof_rewrites(self.admin)
        return ocs, redis, time.process_time(), rewrites, host_cpu()

    async def run(self, meter: Meter, stop: asyncio.Event) -> None:
        """Warm up, measure for the duration, then tell the users to stop."""
        await asyncio.sleep(self.spec.warmup)
        before, stats0 = await self.snapshot(), await command_stats(self.admin)
        meter.start = time.perf_counter()
        await asyncio.sleep(self.spec.duration)
        meter.end = time.perf_counter()
        after, stats1 = await self.snapshot(), await command_stats(self.admin)
        for name, (calls, usec) in stats1.items():
            c0, u0 = stats0.get(name, (0, 0.0))
            if calls > c0 and name != "info":  # (the window's own snapshots)
                self.commands[name] = [calls - c0, usec - u0]
        self.ocs, self.redis, self.gen = (
            after[0] - before[0],
            after[1] - before[1],
            after[2] - before[2],
        )
        (done_before, running_before), (done_after, running_after) = before[3], after[3]
        self.rewrites = int(done_after != done_before or running_before or running_after)
        total, idle, steal = (a - b for a, b in zip(after[4], before[4], strict=True))
        if total > 0:
            # Busy: share of all cores doing anything (steal included: the host took them).
            self.host_busy = 1 - idle / total
            self.host_steal = steal / total
        stop.set()


def outcome(spec: Spec, meter: Meter, window: Window, dropped: int = 0) -> Outcome:
    lat = sorted(meter.latencies)
    return Outcome(
        kind=spec.kind,
        requests=len(lat),
        seconds=meter.end - meter.start if lat else 0.0,
        p50_ms=percentile(lat, 0.50) * 1e3,
        p99_ms=percentile(lat, 0.99) * 1e3,
        p999_ms=percentile(lat, 0.999) * 1e3,
        max_ms=(lat[-1] if lat else float("nan")) * 1e3,
        p99_due_ms=percentile(sorted(meter.from_due), 0.99) * 1e3,
        ocs_cpu=window.ocs,
        redis_cpu=window.redis,
        gen_cpu=window.gen,
        aof_rewrites=window.rewrites,
        host_busy=window.host_busy,
        host_steal=window.host_steal,
        total_requests=meter.total,
        sessions=meter.sessions,
        charged=meter.charged,
        dropped=dropped,
        failures=dict(meter.failures),
        commands=window.commands,
    )


@dataclass(frozen=True)
class Prices:
    """The costs the engine would compute for the session shape, from the shipped plan."""

    reserve: int
    commit: int
    next_slice: int
    release: int
    flags: str

    @classmethod
    def of_plan(cls) -> Prices:
        rater = default_rater()
        ctx = UsageContext(plan=PLAN, service=SERVICE, started_at=time.time_ns() // 1_000_000)
        spec = rater.service(ctx)

        def cost(a: int, b: int) -> int:
            return rater.cost(ctx, b) - rater.cost(ctx, a)

        used = COMMIT_USED
        return cls(
            reserve=cost(0, RESERVE_UNITS),
            commit=cost(0, used),
            next_slice=cost(used, used + RESERVE_UNITS),
            release=cost(used, used + RELEASE_USED),
            flags=("o" if spec.outgoing else "") + ("f" if spec.free else ""),
        )


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def scripted_session(store: Store, price: Prices, sub: str, sid: str, meter: Meter) -> None:
    """One ceiling session through ``Store``: reserve -> commit (+ next slice) -> release,
    each answer checked (a wrong one counts as a failure and ends the session)."""
    pc = time.perf_counter
    t0 = pc()
    ans = await store.reserve(
        sub, request_key=f"{sid}/0", session_id=sid, service=SERVICE,
        units=RESERVE_UNITS, cost=price.reserve, bucket_quote=-1, expected_version=0,
        hold_ms=HOLD_MS, flags=price.flags, destination="", location="", plan=PLAN,
        now=now_ms(),
    )  # fmt: skip
    meter.record(t0, pc())
    if ans.status != "OK" or ans.granted != RESERVE_UNITS:
        meter.fail(f"reserve:{ans.status}")
        return
    t0 = pc()
    ans = await store.commit(
        sub, request_key=f"{sid}/1", session_id=sid, used=COMMIT_USED,
        cost=price.commit, expected_version=ans.session_version,
        next_units=RESERVE_UNITS, next_cost=price.next_slice, bucket_quote=-1,
        hold_ms=HOLD_MS, flags=price.flags, now=now_ms(),
    )  # fmt: skip
    meter.record(t0, pc())
    meter.charged += ans.charged
    if ans.status != "OK" or ans.granted != RESERVE_UNITS:
        meter.fail(f"commit:{ans.status}")
        return
    t0 = pc()
    ans = await store.release(
        sub, request_key=f"{sid}/2", session_id=sid, used=RELEASE_USED,
        cost=price.release, expected_version=ans.session_version, now=now_ms(),
    )  # fmt: skip
    meter.record(t0, pc())
    meter.charged += ans.charged
    if ans.status != "OK":
        meter.fail(f"release:{ans.status}")
        return
    meter.sessions += 1


async def ceiling_worker(spec: Spec) -> Outcome:
    """The scripts alone: reserve -> commit (+ next slice) -> release through Store."""
    price = Prices.of_plan()
    clients = [hot_client(spec.redis_url) for _ in range(spec.connections)]
    admin = hot_client(spec.redis_url)
    stores = [
        Store(
            c,
            session_ttl_ms=IDEMPOTENCY_TTL_SESSION * 1000,
            reference_ttl_ms=IDEMPOTENCY_TTL_REFERENCE * 1000,
        )
        for c in clients
    ]
    for c in (*clients, admin):
        await c.connect()
    for st in stores:  # (each Store calls its scripts as FCALL on 7.0+, unless told not to)
        await st.load_scripts(functions=spec.functions)
    # The thresholds `ocs serve` publishes (the same plans, so the same digest): with another
    # generation every account's first request of a run would re-evaluate its thresholds.
    registry = TariffRegistry(stores[0], default_rater(), load_plans())
    await registry.publish_thresholds()
    for s in stores[1:]:
        s.thresholds_generation = stores[0].thresholds_generation
    meter, stop = Meter(), asyncio.Event()
    window = Window(spec, admin)
    rng = random.Random(spec.seed)
    subs = [msisdn(i) for i in range(spec.subscribers)]

    async def user(vu: int) -> None:
        store = stores[vu % len(stores)]
        n = 0
        while not stop.is_set():
            sub = subs[rng.randrange(len(subs))]
            sid = f"{spec.prefix}{vu}.{n}"
            n += 1
            await scripted_session(store, price, sub, sid, meter)

    try:
        await asyncio.gather(window.run(meter, stop), *(user(i) for i in range(spec.inflight)))
    finally:
        for c in (*clients, admin):
            await c.close()
    return outcome(spec, meter, window)


class Driver:
    """Sessions through the OCS over the native protocol, checking every reply."""

    def __init__(self, spec: Spec, clients: list[NativeClient], meter: Meter) -> None:
        self.spec = spec
        self.clients = clients
        self.meter = meter
        self.price = Prices.of_plan()

    async def session(
        self, client: NativeClient, sid: str, sub: str, due: float | None = None
    ) -> None:
        """One session; ``due``: when the open loop's schedule had it start."""
        meter, pc, price = self.meter, time.perf_counter, self.price
        t0 = pc()
        r = await client.reserve(sid, sub, SERVICE, 0, RESERVE_UNITS)
        meter.record(t0, pc(), due)
        if not r.ok or r.granted != RESERVE_UNITS:
            meter.fail(f"reserve:{r.result}" if not r.ok else "reserve:granted")
            return
        t0 = pc()
        r = await client.commit(sid, 1, COMMIT_USED, subscriber=sub)
        meter.record(t0, pc())
        meter.charged += r.charged
        if not r.ok or r.granted != RESERVE_UNITS or r.charged != price.commit:
            meter.fail(f"commit:{r.result}" if not r.ok else "commit:amounts")
            return
        t0 = pc()
        r = await client.release(sid, 2, RELEASE_USED, subscriber=sub)
        meter.record(t0, pc())
        meter.charged += r.charged
        if not r.ok or r.charged != price.release:
            meter.fail(f"release:{r.result}" if not r.ok else "release:amounts")
            return
        meter.sessions += 1


async def connect_clients(spec: Spec) -> list[NativeClient]:
    clients = [NativeClient("127.0.0.1", spec.ocs_port, key=NATIVE_KEY)
               for _ in range(spec.connections)]  # fmt: skip
    for c in clients:
        await c.connect()
    return clients


async def closed_worker(spec: Spec) -> Outcome:
    """N virtual users, each running sessions back to back on random subscribers."""
    admin = hot_client(spec.redis_url)
    await admin.connect()
    clients = await connect_clients(spec)
    meter, stop = Meter(), asyncio.Event()
    window = Window(spec, admin)
    driver = Driver(spec, clients, meter)
    rng = random.Random(spec.seed)
    subs = [msisdn(i) for i in range(spec.subscribers)]

    async def user(vu: int) -> None:
        client = clients[vu % len(clients)]
        n = 0
        while not stop.is_set():
            sub = subs[rng.randrange(len(subs))]
            await driver.session(client, f"{spec.prefix}{vu}.{n}", sub)
            n += 1

    try:
        await asyncio.gather(window.run(meter, stop), *(user(i) for i in range(spec.inflight)))
    finally:
        for c in clients:
            await c.close()
        await admin.close()
    return outcome(spec, meter, window)


async def prime_worker(spec: Spec) -> Outcome:
    """One SMS debit per subscriber, so that the OCS has learnt every subscriber's plan (its
    engine asks the script once per subscriber) before anything is measured."""
    clients = await connect_clients(spec)
    meter = Meter()
    now = time.time_ns() // 1_000_000
    sms = default_rater().cost(UsageContext(plan=PLAN, service="sms", started_at=now), 1)
    pc = time.perf_counter

    async def user(vu: int) -> None:
        client = clients[vu % len(clients)]
        for i in range(vu, spec.subscribers, spec.inflight):
            t0 = pc()
            r = await client.debit(msisdn(i), "sms", f"{spec.prefix}{i}")
            meter.record(t0, pc())
            meter.charged += r.charged
            if not r.ok or r.charged != sms:
                meter.fail(f"debit:{r.result}" if not r.ok else "debit:amounts")

    try:
        await asyncio.gather(*(user(i) for i in range(spec.inflight)))
    finally:
        for c in clients:
            await c.close()
    return Outcome(
        kind=spec.kind,
        total_requests=meter.total,
        charged=meter.charged,
        failures=dict(meter.failures),
    )


async def open_worker(spec: Spec) -> Outcome:
    """Sessions started at rate/3 per second on a schedule, whatever the replies' latency."""
    admin = hot_client(spec.redis_url)
    await admin.connect()
    clients = await connect_clients(spec)
    meter, stop = Meter(), asyncio.Event()
    window = Window(spec, admin)
    driver = Driver(spec, clients, meter)
    rng = random.Random(spec.seed)
    subs = [msisdn(i) for i in range(spec.subscribers)]
    session_rate = spec.rate / 3
    running: set[asyncio.Task[None]] = set()
    dropped = 0
    #: The timeline: (when, how late) of each session the generator started over 2 ms after
    #: its scheduled time, and Redis's persistence figures every 100 ms.
    late: list[tuple[float, float]] = []
    redis_marks: list[tuple[float, int, int, int]] = []
    if spec.timeline:
        meter.ends = []

    async def poll_redis() -> None:
        # (one INFO every 100 ms on the admin connection: what the window's snapshot does)
        while not stop.is_set():
            info = parse_info(await admin.execute("INFO", "persistence"))
            stats = parse_info(await admin.execute("INFO", "stats"))
            redis_marks.append((time.perf_counter(), int(info.get("aof_rewrite_in_progress", 0)),
                                int(info.get("aof_rewrites", 0)),
                                int(stats.get("latest_fork_usec", 0))))  # fmt: skip
            await asyncio.sleep(0.1)

    async def schedule() -> None:
        nonlocal dropped
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        k = 0
        while not stop.is_set():
            now = time.perf_counter()
            due = int((now - t0) * session_rate)
            if k < due and meter.ends is not None:
                behind = now - (t0 + k / session_rate)
                if behind > 0.002:
                    late.append((now, behind))
            while k < due:
                if len(running) >= MAX_OPEN_SESSIONS:
                    dropped += 1
                else:
                    sub = subs[rng.randrange(len(subs))]
                    client = clients[k % len(clients)]
                    task = loop.create_task(
                        driver.session(client, f"{spec.prefix}{k}", sub, t0 + k / session_rate)
                    )
                    running.add(task)
                    task.add_done_callback(running.discard)
                k += 1
            # uvloop's timers have millisecond resolution: a shorter sleep would spin.
            await asyncio.sleep(0.001)
        if running:
            await asyncio.wait(running)

    tasks = [window.run(meter, stop), schedule()]
    if spec.timeline:
        tasks.append(poll_redis())
    try:
        await asyncio.gather(*tasks)
    finally:
        for c in clients:
            await c.close()
        await admin.close()
    if spec.timeline:
        write_timeline(spec.timeline, meter, late, redis_marks)
    return outcome(spec, meter, window, dropped)


#: The timeline's window: latency percentiles per this many seconds.
TIMELINE_BIN: Final = 0.1


def write_timeline(
    path: str,
    meter: Meter,
    late: list[tuple[float, float]],
    redis_marks: list[tuple[float, int, int, int]],
) -> None:
    """The open loop's timeline as JSON: per 100 ms of the measured window, the requests that
    ended in it, their p50, p99 and max (ms); when the generator started sessions late; Redis's
    AOF rewrite state and last fork time. Times are ``time.perf_counter()`` (CLOCK_MONOTONIC,
    as ``bench/traced_serve.py`` records the OCS's collections and stalls)."""
    bins: dict[int, list[float]] = {}
    for t1, lat in zip(meter.ends or [], meter.latencies, strict=True):
        bins.setdefault(int((t1 - meter.start) / TIMELINE_BIN), []).append(lat)
    rows = []
    for i in sorted(bins):
        lat = sorted(bins[i])
        rows.append([meter.start + i * TIMELINE_BIN, len(lat), percentile(lat, 0.5) * 1e3,
                     percentile(lat, 0.99) * 1e3, lat[-1] * 1e3])  # fmt: skip
    with open(path, "w") as f:
        json.dump({"start": meter.start, "end": meter.end, "bin": TIMELINE_BIN, "bins": rows,
                   "late": late, "redis": redis_marks}, f)  # fmt: skip


WORKERS: Final[dict[str, Callable[[Spec], Coroutine[Any, Any, Outcome]]]] = {
    "ceiling": ceiling_worker,
    "closed": closed_worker,
    "open": open_worker,
    "prime": prime_worker,
}


def worker_main(raw_spec: str) -> None:
    spec = Spec(**json.loads(raw_spec))
    result: Outcome = uvloop.run(WORKERS[spec.kind](spec))
    print(json.dumps(asdict(result)), flush=True)


# -- the orchestrator ------------------------------------------------------------------------


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the benchmark itself is killed outright,
    # its children get SIGTERM instead of running on.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    # A session of its own: a Ctrl-C reaches only this process, which stops the children in
    # order (workers, then the OCS, then Redis).
    return subprocess.Popen(argv, start_new_session=True, preexec_fn=_die_with_parent, **kwargs)  # noqa: PLW1509


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


def run_worker(spec: Spec) -> Outcome:
    argv = [sys.executable, "-m", "bench.charging", "--worker", json.dumps(asdict(spec))]
    proc = _spawn(argv, stdout=subprocess.PIPE)
    try:
        limit = spec.warmup + spec.duration + 120
        out, _ = proc.communicate(timeout=limit)
    finally:
        _stop(proc, 5)
    if proc.returncode != 0:
        raise SystemExit(f"bench: {spec.kind} worker failed (exit status {proc.returncode})")
    data = json.loads(out.decode().strip().splitlines()[-1])
    return Outcome(**data)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def ocs_process(
    redis_url: str, workdir: Path, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`ocs serve` in a process of its own (``env``: more OCS_* settings); yields it once it
    answers a ping."""
    port = free_port()
    log_path = workdir / "ocs.log"
    argv = [sys.executable, "-m", "ocs.cli", "serve", "--redis-url", redis_url,
            "--native-port", str(port), "--http-port", "0"]  # fmt: skip
    full_env = {**os.environ, "OCS_DATA_DIR": str(workdir / "ocs-data"), **ocs_env(),
                **(env or {})}  # fmt: skip
    with open(log_path, "wb") as log:
        proc = _spawn(argv, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    try:
        uvloop.run(_wait_ready(proc, port, log_path))
        yield proc, port
    finally:
        _stop(proc, 15)


async def _wait_ready(proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            with open(log_path, "rb") as log:  # noqa: ASYNC230 (once, on the way out)
                tail = log.read()[-4000:].decode(errors="replace")
            raise SystemExit(f"bench: `ocs serve` exited with status {proc.returncode}:\n{tail}")
        with contextlib.suppress(OSError, ConnectionError, TimeoutError):
            async with NativeClient("127.0.0.1", port, timeout=2, connect_timeout=1,
                                    key=NATIVE_KEY) as c:  # fmt: skip
                if (await c.ping()).ok:
                    return
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: `ocs serve` did not answer within 60 s; see {log_path}")
        await asyncio.sleep(0.1)


async def load_subscribers(url: str, count: int) -> None:
    async with hot_client(url) as client:
        store = Store(
            client,
            session_ttl_ms=IDEMPOTENCY_TTL_SESSION * 1000,
            reference_ttl_ms=IDEMPOTENCY_TTL_REFERENCE * 1000,
        )
        await store.load_scripts()
        await create_subscribers(store, count)


async def create_subscribers(store: Store, count: int) -> None:
    """The benchmark's subscribers 0 .. count - 1, created through ``store``."""
    now = now_ms()
    for start in range(0, count, 1000):
        answers = await asyncio.gather(
            *(
                store.create_subscriber(
                    msisdn(i), plan=PLAN, balance=BALANCE, credit_limit=0, state="active", now=now
                )
                for i in range(start, min(start + 1000, count))
            )
        )
        bad = [a.status for a in answers if a.status != "OK"]
        if bad:
            raise SystemExit(f"bench: create_subscriber answered {bad[0]!r}")


@dataclass
class Check:
    accounts: int = 0
    holding: int = 0  # accounts with reserved != 0
    debited: int = 0  # sum over accounts of (opening balance - balance)
    sampled: int = 0
    open_sessions: int = 0  # in the sample, via Store.get_account


async def check_accounts(url: str, count: int, sample: int) -> Check:
    out = Check()
    async with hot_client(url) as client:
        for start in range(0, count, 2000):
            rows = await asyncio.gather(
                *(
                    client.execute("HMGET", SubscriberKeys.of(msisdn(i)).account, "bal", "rsv")
                    for i in range(start, min(start + 2000, count))
                )
            )
            for bal, rsv in rows:
                out.accounts += 1
                out.holding += int(rsv or 0) != 0
                out.debited += BALANCE - int(bal)
        store = Store(client, session_ttl_ms=1, reference_ttl_ms=1)
        for i in random.Random(5).sample(range(count), min(sample, count)):
            acct = await store.get_account(msisdn(i))
            assert acct is not None
            out.sampled += 1
            out.open_sessions += len(acct.sessions)
    return out


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        kb = int(f.readline().split()[1])
        mem = f"{kb / 2**20:.0f} GiB"
    import redis  # only for its version

    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "memory": mem,
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "uvloop": str(getattr(uvloop, "__version__", "?")),
        "hiredis": hiredis.__version__,
        "msgpack": ".".join(map(str, msgpack.version)),
        "redis-py": redis.__version__,
    }


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            check=False,
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
    except OSError:
        return "?"
    return out.stdout.strip() or "?"


@dataclass
class Summary:
    rate: float
    p50: float
    p99: float
    ocs_us: float
    redis_us: float
    gen_us: float
    busy: float
    steal: float

    @classmethod
    def median(cls, runs: list[Outcome]) -> Summary:
        def med(f: Callable[[Outcome], float]) -> float:
            return statistics.median(f(r) for r in runs)

        return cls(
            med(lambda r: r.rate),
            med(lambda r: r.p50_ms),
            med(lambda r: r.p99_ms),
            med(lambda r: r.per_request_us(r.ocs_cpu)),
            med(lambda r: r.per_request_us(r.redis_cpu)),
            med(lambda r: r.per_request_us(r.gen_cpu)),
            med(lambda r: r.host_busy),
            med(lambda r: r.host_steal),
        )

    @classmethod
    def of(cls, r: Outcome) -> Summary:
        return cls(
            r.rate,
            r.p50_ms,
            r.p99_ms,
            r.per_request_us(r.ocs_cpu),
            r.per_request_us(r.redis_cpu),
            r.per_request_us(r.gen_cpu),
            r.host_busy,
            r.host_steal,
        )


HEADER: Final = (
    "| run | requests/s | p50 ms | p99 ms | OCS CPU µs/req | Redis CPU µs/req "
    "| generator CPU µs/req | cores busy (steal) |\n|---|---:|---:|---:|---:|---:|---:|---:|"
)


def row(name: str, s: Summary, ocs: bool = True) -> str:
    ocs_us = f"{s.ocs_us:.1f}" if ocs else "-"
    return (
        f"| {name} | {s.rate:,.0f} | {s.p50:.2f} | {s.p99:.2f} | {ocs_us} "
        f"| {s.redis_us:.1f} | {s.gen_us:.1f} | {s.busy:.0%} ({s.steal:.0%}) |"
    )


def command_breakdown(ceilings: list[Outcome], closed: list[Outcome]) -> str:
    """Where Redis spends its CPU per request, ceiling vs OCS: per command, calls and
    microseconds per request (INFO commandstats, medians over the rounds), and what INFO cpu
    counts outside commands (reading and writing sockets, the event loop, the AOF write).
    A command run by a script counts in its own row and inside the script's row too."""

    def per_req(runs: list[Outcome], name: str, i: int) -> float:
        vals = [r.commands.get(name, [0, 0.0])[i] / r.requests for r in runs if r.requests]
        return statistics.median(vals) if vals else 0.0

    scripts = ("evalsha", "fcall")

    def outside(runs: list[Outcome], base: list[Outcome] | None) -> float:
        # Commands a script runs count in their own row and inside EVALSHA/FCALL's time, so
        # only these and the commands sent on their own are subtracted: the latter are what
        # a run calls beyond the ceiling's count (the ceiling sends nothing else).
        vals = []
        for r in runs:
            if not r.requests:
                continue
            inside = sum(r.commands.get(n, [0, 0.0])[1] for n in scripts) / r.requests
            if base is not None:
                for n, (calls, usec) in r.commands.items():
                    extra = calls / r.requests - per_req(base, n, 0)
                    if n not in scripts and extra > 0 and calls:
                        inside += extra * usec / calls
            vals.append(r.per_request_us(r.redis_cpu) - inside)
        return statistics.median(vals) if vals else 0.0

    names = sorted({n for r in ceilings + closed for n in r.commands},
                   key=lambda n: -per_req(closed, n, 1))  # fmt: skip
    lines = [
        "| Redis command | ceiling calls/req | ceiling µs/req | OCS calls/req | OCS µs/req "
        "| OCS - ceiling µs/req |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for n in names:
        c, o = per_req(ceilings, n, 1), per_req(closed, n, 1)
        lines.append(
            f"| {n} | {per_req(ceilings, n, 0):.3f} | {c:.1f} | {per_req(closed, n, 0):.3f} "
            f"| {o:.1f} | {o - c:+.1f} |"
        )
    c, o = outside(ceilings, None), outside(closed, ceilings)
    lines.append(f"| (INFO cpu - command time: sockets, event loop, AOF write; commandstats "
                 f"times are wall-clock, so contention can make this negative) | | {c:.1f} "
                 f"| | {o:.1f} "
                 f"| {o - c:+.1f} |")  # fmt: skip
    return "\n".join(lines)


def start_redis(work: Path, stack: contextlib.ExitStack) -> EmbeddedRedis:
    """The benchmark's private redis-server (AOF on, appendfsync everysec), stopped by
    ``stack``."""
    server = EmbeddedRedis(work / "redis", extra_args=("--appendfsync", "everysec"))
    server.start()
    stack.callback(server.stop)
    return server


def orchestrate(ns: argparse.Namespace) -> None:
    info = machine()
    common = {
        "subscribers": ns.subscribers,
        "inflight": ns.inflight,
        "warmup": ns.warmup,
        "duration": ns.duration,
    }
    ceilings: list[Outcome] = []
    closed: list[Outcome] = []
    evalsha: list[Outcome] = []  # the ceiling with the scripts called by EVALSHA
    opened: list[tuple[float, Outcome]] = []
    everything: list[Outcome] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ocs-bench-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        server = start_redis(work, stack)
        info["redis"] = f"{server.version} (AOF on, appendfsync everysec)"
        print(
            f"bench: {info['cpu']}, {info['cores']} cores; Python {info['python']}, "
            f"redis-server {server.version} on port {server.port} (AOF everysec)",
            flush=True,
        )
        t = time.monotonic()
        uvloop.run(load_subscribers(server.url, ns.subscribers))
        print(
            f"bench: {ns.subscribers:,} subscribers created in {time.monotonic() - t:.1f} s",
            flush=True,
        )
        ocs, port = stack.enter_context(ocs_process(server.url, work))
        print(f"bench: `ocs serve` pid {ocs.pid}, native port {port}", flush=True)
        to_ocs = {"ocs_port": port, "ocs_pid": ocs.pid, "connections": ns.connections}
        t = time.monotonic()
        primed = run_worker(Spec("prime", server.url, prefix="p-", **common, **to_ocs))
        everything.append(primed)
        print(
            f"bench: primed the OCS with one debit per subscriber "
            f"({primed.total_requests:,} requests) in {time.monotonic() - t:.1f} s",
            flush=True,
        )
        for rnd in range(ns.rounds):
            kinds = ["ceiling", "closed"] + (["evalsha"] if ns.evalsha_ceiling else [])
            order = kinds if rnd % 2 == 0 else kinds[::-1]
            for kind in order:
                extra: dict[str, Any] = (
                    to_ocs if kind == "closed" else {"connections": ns.ceiling_connections}
                )
                if kind == "evalsha":
                    extra = {**extra, "functions": False}
                spec = Spec(
                    "ceiling" if kind == "evalsha" else kind, server.url,
                    prefix=f"{kind[:2]}{rnd}-", seed=100 + rnd, **common, **extra,
                )  # fmt: skip
                r = run_worker(spec)
                everything.append(r)
                {"ceiling": ceilings, "closed": closed, "evalsha": evalsha}[kind].append(r)
                name = {"ceiling": "ceiling", "closed": "OCS", "evalsha": "EVALSHA"}[kind]
                print(f"  round {rnd + 1} {name:<8}{progress(r)}", flush=True)
        rates = list(ns.rate)
        if ns.half_ceiling:
            half = statistics.median(r.rate for r in ceilings) / 2
            rates.append(max(100.0, round(half, -2)))
        for i, rate in enumerate(x for x in rates if x > 0):
            spec = Spec(
                "open",
                server.url,
                prefix=f"op{i}-",
                rate=rate,
                seed=90 + i,
                **{**common, "duration": ns.open_duration},
                **to_ocs,
            )
            r = run_worker(spec)
            everything.append(r)
            opened.append((rate, r))
            print(f"  open loop at {rate:,.0f}/s{progress(r)}", flush=True)
        # Every worker lets its sessions finish before it exits: none may hold credit now.
        check = uvloop.run(check_accounts(server.url, ns.subscribers, sample=500))
    elapsed = time.monotonic() - started

    # -- report
    ceiling, ocs_sum = Summary.median(ceilings), Summary.median(closed)
    ratio = ocs_sum.rate / ceiling.rate if ceiling.rate else float("nan")
    lines = [HEADER]
    for i, (c, o) in enumerate(zip(ceilings, closed, strict=True), 1):
        lines.append(row(f"round {i}: ceiling", Summary.of(c), ocs=False))
        lines.append(row(f"round {i}: OCS", Summary.of(o)))
    lines.append(row(f"**ceiling** (median of {ns.rounds})", ceiling, ocs=False))
    lines.append(row(f"**OCS** (median of {ns.rounds})", ocs_sum))
    lines.append(f"| **OCS / ceiling** | **{ratio:.0%}** (goal 50%) | | | | | | |")
    if evalsha:
        lines.append(row(f"ceiling by EVALSHA (median of {ns.rounds})", Summary.median(evalsha),
                         ocs=False))  # fmt: skip
    verdicts = []
    for rate, r in opened:
        lines.append(row(f"OCS open loop, offered {rate:,.0f}/s", Summary.of(r)))
        # 2% slack: completions in the window lag the schedule by the requests in flight.
        kept_up = r.rate >= 0.98 * rate and not r.dropped
        text = (
            f"Open loop, {rate:,.0f} requests/s offered: achieved {r.rate:,.0f}/s, "
            f"p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms (with the generator's own lateness: "
            f"{r.p99_due_ms:.2f} ms), p99.9 {r.p999_ms:.2f} ms, max {r.max_ms:.1f} ms"
        )
        if r.dropped:
            text += f"; {r.dropped:,} sessions not started (over {MAX_OPEN_SESSIONS} running)"
        if rate >= 15_000:
            met = kept_up and r.p99_ms < 10
            text += f"; target (>= 15,000/s with p99 < 10 ms) {'met' if met else 'NOT met'}"
        else:
            sustained = "sustained" if kept_up else "NOT sustained"
            text += f"; {sustained}, p99 {'under' if r.p99_ms < 10 else 'OVER'} 10 ms"
        verdicts.append(text + ".")
    correctness, ok = judge(everything, check)
    rewrites = sum(r.aof_rewrites for r in everything)
    table = "\n".join(lines) + "\n\n" + command_breakdown(ceilings, closed)
    print()
    print(table)
    print()
    for v in verdicts:
        print(v)
    print(correctness)
    if rewrites:
        print(f"Note: an AOF rewrite ran during {rewrites} of the measured windows.")
    print(f"{'PASS' if ok else 'FAIL'} (correctness; {elapsed:.0f} s)")
    if not ns.no_append:
        append_results(ns, info, table, verdicts, correctness, rewrites)
        print(f"appended to {RESULTS}")
    if not ok:
        sys.exit(1)


#: --cluster: the runs of each round, in order (reversed every other round).
CLUSTER_RUNS: Final = ("ceiling, 1 master", "ceiling, 3 masters", "OCS, 1 master",
                       "OCS, 3 masters", "OCS (2 workers), 3 masters")  # fmt: skip


def orchestrate_cluster(ns: argparse.Namespace) -> None:
    """``--cluster``: the ceiling and the OCS on one Redis and on a Redis Cluster of 3 masters
    (no replicas: the figure is sharding, not replication; AOF everysec on every node), and
    the OCS with 2 workers on the cluster, in interleaved rounds of the same run."""
    info = machine()
    common = {"subscribers": ns.subscribers, "inflight": ns.inflight, "warmup": ns.warmup,
              "duration": ns.duration}  # fmt: skip
    runs: dict[str, list[Outcome]] = {name: [] for name in CLUSTER_RUNS}
    everything: list[Outcome] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ocs-bench-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        single = start_redis(work, stack)
        cluster = EmbeddedCluster(work / "cluster", masters=3, replicas=0,
                                  extra_args=("--appendfsync", "everysec"))  # fmt: skip
        cluster.start()
        stack.callback(cluster.stop)
        info["redis"] = f"{single.version} (AOF on, appendfsync everysec)"
        print(f"bench: one redis-server on {single.port}; a cluster of 3 masters "
              f"({cluster.url})", flush=True)  # fmt: skip
        for url in (single.url, cluster.url):
            uvloop.run(load_subscribers(url, ns.subscribers))
        targets: dict[str, dict[str, Any]] = {}
        urls = (single.url, cluster.url, cluster.url)
        ocs_runs = zip(CLUSTER_RUNS[2:], urls, (1, 1, 2), strict=True)
        for i, (name, url, workers) in enumerate(ocs_runs):
            wd = work / f"ocs{i}"
            wd.mkdir()
            env = {"OCS_WORKERS": str(workers)} if workers > 1 else None
            proc, port = stack.enter_context(ocs_process(url, wd, env))
            to_ocs = {"ocs_port": port, "ocs_pid": proc.pid, "connections": ns.connections}
            targets[name] = {"url": url, **to_ocs}
            everything.append(run_worker(Spec("prime", url, prefix=f"p{i}-", **common, **to_ocs)))
        targets["ceiling, 1 master"] = {"url": single.url, "connections": ns.ceiling_connections}
        targets["ceiling, 3 masters"] = {"url": cluster.url,
                                         "connections": ns.ceiling_connections}  # fmt: skip
        for rnd in range(ns.rounds):
            order = CLUSTER_RUNS if rnd % 2 == 0 else CLUSTER_RUNS[::-1]
            for name in order:
                t = dict(targets[name])
                kind = "ceiling" if name.startswith("ceiling") else "closed"
                spec = Spec(kind, t.pop("url"), prefix=f"c{rnd}{CLUSTER_RUNS.index(name)}-",
                            seed=200 + rnd, **common, **t)  # fmt: skip
                r = run_worker(spec)
                runs[name].append(r)
                everything.append(r)
                print(f"  round {rnd + 1} {name:<27}{progress(r)}", flush=True)
        checks = [uvloop.run(check_accounts(u, ns.subscribers, sample=200))
                  for u in (single.url, cluster.url)]  # fmt: skip
    elapsed = time.monotonic() - started
    summary = {name: Summary.median(rs) for name, rs in runs.items()}
    lines = [HEADER]
    for name in CLUSTER_RUNS:
        lines.append(row(f"{name} (median of {ns.rounds})", summary[name],
                         ocs=name.startswith("OCS")))  # fmt: skip
    c1, c3 = summary["ceiling, 1 master"], summary["ceiling, 3 masters"]
    o1, o3, o3w = (summary[n] for n in CLUSTER_RUNS[2:])
    projected1 = 1e6 / c1.redis_us if c1.redis_us else float("nan")
    # Each master is one Redis core: the Redis CPU per request is spread over 3 of them.
    projected3 = 3e6 / c3.redis_us if c3.redis_us else float("nan")
    notes = [
        f"Scaling, same run: the ceiling on 3 masters is {c3.rate / c1.rate:.2f}x the ceiling on "
        f"one ({c3.rate:,.0f} vs {c1.rate:,.0f} requests/s); the OCS {o3.rate / o1.rate:.2f}x "
        f"({o3.rate:,.0f} vs {o1.rate:,.0f}), with 2 workers {o3w.rate / o1.rate:.2f}x "
        f"({o3w.rate:,.0f}). Redis CPU per request: {c1.redis_us:.1f} µs on one master, "
        f"{c3.redis_us:.1f} µs summed over three (ceiling); {o1.redis_us:.1f} and "
        f"{o3.redis_us:.1f} µs (OCS).",
        f"On this machine ({info['cores']} cores shared by the generator, the OCS and every "
        "Redis) the absolute figures are capped by the cores, not by Redis. With a core per "
        f"master, Redis's capacity is 1 / (CPU per request): ~{projected1:,.0f} requests/s "
        f"for one master and ~{projected3:,.0f} for three (each master taking a third of the "
        "requests), that is the cluster scales with the masters as long as the OCS processes "
        "(one core each, `--workers`) and the network keep up.",
    ]
    correctness, ok = judge(everything, _merge_checks(checks))
    table = "\n".join(lines)
    print()
    print(table)
    print()
    for n in notes:
        print(n)
    print(correctness)
    print(f"{'PASS' if ok else 'FAIL'} (correctness; {elapsed:.0f} s)")
    if not ns.no_append:
        ns.rate, ns.open_duration = [], 0.0  # (no open-loop runs in this mode)
        append_results(ns, info, "Redis Cluster (`--cluster`), same run:\n\n" + table,
                       notes, correctness, sum(r.aof_rewrites for r in everything))  # fmt: skip
        print(f"appended to {RESULTS}")
    if not ok:
        sys.exit(1)


def _merge_checks(checks: list[Check]) -> Check:
    out = Check()
    for c in checks:
        out.accounts += c.accounts
        out.holding += c.holding
        out.debited += c.debited
        out.sampled += c.sampled
        out.open_sessions += c.open_sessions
    return out


def progress(r: Outcome) -> str:
    line = (
        f" {r.rate:>8,.0f} req/s  p50 {r.p50_ms:6.2f} ms  p99 {r.p99_ms:7.2f} ms  "
        f"OCS {r.per_request_us(r.ocs_cpu):5.1f}  Redis {r.per_request_us(r.redis_cpu):5.1f}  "
        f"gen {r.per_request_us(r.gen_cpu):5.1f} us/req  cores busy {r.host_busy:4.0%} "
        f"(steal {r.host_steal:.0%})"
    )
    if r.dropped:
        line += f"  ({r.dropped:,} sessions not started)"
    if r.aof_rewrites:
        line += "  (AOF rewrite)"
    return line


def judge(everything: list[Outcome], check: Check) -> tuple[str, bool]:
    """Every reply success with the expected amounts; no hold left; money accounted for."""
    failures: Counter[str] = Counter()
    for r in everything:
        failures.update(r.failures)
    charged = sum(r.charged for r in everything)
    requests = sum(r.total_requests for r in everything)
    ok = (
        not failures
        and check.holding == 0
        and check.open_sessions == 0
        and check.debited == charged
    )
    replies = (
        "every reply success with the expected grants and amounts"
        if not failures
        else "FAILURES " + ", ".join(f"{k} x{v}" for k, v in failures.most_common())
    )
    text = (
        f"Correctness: {requests:,} requests, {replies}; {check.accounts:,} accounts checked, "
        f"{check.holding} with reserved != 0; {check.sampled} read with Store.get_account, "
        f"{check.open_sessions} open sessions; money debited {check.debited:,} µ, charged in "
        f"replies {charged:,} µ ({'equal' if check.debited == charged else 'MISMATCH'})."
    )
    return text, ok


RESULTS_INTRO: Final = """\
# Benchmark results

`make bench` (`.venv/bin/python -m bench.charging`) appends one section per run. Method
(the module docstring of `bench/charging.py` has the details):

- A private `redis-server` (AOF on, `appendfsync everysec`, as in production) holds the
  subscribers (plan `prepaid-basic`, large balances). A session is reserve (voice, 60 units)
  -> commit (30 used, next slice) -> release (20 used) on a random subscriber; each of the
  three is one request.
- **ceiling**: the same Lua scripts called through `Store` on the thin pipelined client
  (`PipelinedRedis`, two connections), costs precomputed and session versions tracked, N
  requests in flight, from one uvloop process: what Redis can do with these scripts.
- **OCS**: `ocs serve` in its own process and a load-generator process driving it over the
  native protocol (`NativeClient`, one TCP connection) with N requests in flight, after one
  debit per subscriber has taught the OCS every plan.
- Ceiling and OCS runs alternate over R rounds, each after a warm-up; medians are reported.
  Then the OCS at fixed offered loads (open loop): the target, and half the ceiling.
- Latency: `time.perf_counter` around each awaited request in the generator. CPU per request:
  CPU time over the measured window (`/proc/<pid>/stat` for the OCS, `INFO cpu` for Redis,
  `time.process_time` for the generator) / requests completed in the window. Cores busy:
  the share of all the machine's cores in use during the window (steal: taken by the host).
- Redis, the OCS and the generator share the machine's cores, and a closed loop over one
  connection makes them take turns: compare ratios and CPU per request rather than absolute
  rates across machines or runs.
"""


def append_results(
    ns: argparse.Namespace,
    info: dict[str, str],
    table: str,
    verdicts: list[str],
    correctness: str,
    rewrites: int,
) -> None:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"## {stamp} (commit {git_commit()})",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory']}, {info['os']}; "
        f"Python {info['python']}, Redis {info['redis']}, uvloop {info['uvloop']}, "
        f"hiredis {info['hiredis']}, msgpack {info['msgpack']}.",
        "",
        f"Settings: {ns.subscribers:,} subscribers, {ns.inflight} requests in flight, "
        f"generator connections {ns.connections}, ceiling connections "
        f"{ns.ceiling_connections}, {ns.rounds} rounds of {ns.duration:g} s "
        f"(+{ns.warmup:g} s warm-up), open-loop runs of {ns.open_duration:g} s.",
        "",
        table,
        "",
    ]
    for v in verdicts:
        parts += [v, ""]
    parts += [correctness, ""]
    if rewrites:
        parts += [f"An AOF rewrite ran during {rewrites} of the measured windows.", ""]
    new = not RESULTS.exists()
    with open(RESULTS, "a", encoding="utf-8") as f:
        if new:
            f.write(RESULTS_INTRO + "\n")
        f.write("\n".join(parts) + "\n")


_interrupted: list[int] = []


def _raise_interrupt(signum: int, _frame: object) -> None:
    _interrupted.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--duration", type=float, default=8.0, help="measured seconds per run (default 8)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="seconds of load before each measured window (default 2)",
    )
    parser.add_argument(
        "--inflight", type=int, default=64, help="requests in flight, closed loop (default 64)"
    )
    parser.add_argument(
        "--connections", type=int, default=1, help="generator connections to the OCS (default 1)"
    )
    parser.add_argument(
        "--ceiling-connections",
        type=int,
        default=2,
        help="Redis connections of the ceiling run (default 2: with one, the client and Redis "
        "take turns instead of working at once, and the figure is no ceiling)",
    )
    parser.add_argument(
        "--subscribers", type=int, default=20_000, help="subscribers loaded (default 20,000)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved ceiling/OCS rounds (default 3)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        nargs="*",
        default=[15_000.0],
        help="open-loop offered loads, requests/s (default 15,000; none: skip)",
    )
    parser.add_argument(
        "--no-half-ceiling",
        dest="half_ceiling",
        action="store_false",
        help="skip the open-loop run offered half the ceiling (the goal's operating point)",
    )
    parser.add_argument(
        "--open-duration",
        type=float,
        default=8.0,
        help="measured seconds of each open-loop run (default 8)",
    )
    parser.add_argument(
        "--no-evalsha-ceiling",
        dest="evalsha_ceiling",
        action="store_false",
        help="skip the ceiling run that calls the scripts by EVALSHA (the Redis 6.2 path, and "
        "the path before Functions), which each round runs beside the Functions ceiling",
    )
    parser.add_argument(
        "--no-append", action="store_true", help="do not append the results to bench/RESULTS.md"
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="instead: the ceiling and the OCS on one Redis vs a Redis Cluster of 3 masters it "
        "starts, and the OCS with 2 workers on the cluster, in the same run (docs/operations.md)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.worker:
        worker_main(ns.worker)
        return
    if min(ns.rounds, ns.inflight, ns.subscribers, ns.connections, ns.ceiling_connections) < 1:
        parser.error("--rounds, --inflight, --subscribers and the connections must be >= 1")
    # SIGINT too: a shell may have started us with it ignored (a background job).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)
    try:
        (orchestrate_cluster if ns.cluster else orchestrate)(ns)
    except BaseException:
        # The interrupt may surface as another error (raised inside an event-loop callback).
        if not _interrupted:
            raise
        print("\nbench: interrupted; everything it started has been stopped", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    cli()
