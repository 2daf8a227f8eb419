"""Chaos: kill -9 a Redis master under charging load and count what the money says.

``make chaos`` (``python -m bench.chaos``), all on loopback, bounded in time (about 3-4 min).
For each deployment, started here:

* ``cluster``: a Redis Cluster of 3 masters + 3 replicas (``cluster-node-timeout`` 2000 ms;
  the cluster promotes the dead master's replica);
* ``sentinel``: one master, one replica and 3 sentinels (``down-after-milliseconds`` 1000;
  the sentinels promote the replica),

one ``ocs serve`` per durability mode (``OCS_DURABILITY`` local, replica, fsync), each with
its own subscribers (``--subscribers`` each, prepaid-basic, 1,000 currency units). Then:

1. **Throughput, same run.** ``--rounds`` rounds; in each, every mode's OCS in turn (the order
   rotates) is driven for ``--window`` s by the load driver below, closed loop; the nodes'
   ``appendfsync`` is ``always`` for the fsync windows, ``everysec`` otherwise. Reported:
   the median requests/s, Redis CPU per request (``INFO cpu`` of every node over the window)
   and each mode's ratio to ``local``.
2. **Failover, per mode.** The driver runs against the mode's OCS; after ``--before`` s the
   master holding the slot of a third of the subscribers (cluster) or the master (Sentinel)
   gets SIGKILL. As soon as a replica is promoted the killed node is started again (an
   orchestrator restarting the pod) and joins as a replica (Sentinel: ``REPLICAOF`` the new
   master, as an operator's init does). The driver goes on for ``--after`` s past the first
   success after the kill, then ends every session it has open, and stops.
3. **Money.** With the traffic stopped, every subscriber of the mode is read back
   (``bench/locust/invariants.py``: the outbox events against the account, version by
   version) and against the driver's own ledger: opening + top-ups the driver saw applied -
   charges the OCS answered = the balance, exactly; reserved = the holds of open sessions
   (none: every session was ended); and every request answered ``success`` has its event in
   the outbox (by request key). Money lost is the sum over subscribers of what the ledger and
   the balance disagree by.

The load driver: ``--inflight`` workers over one native connection (``NativeClient``) per
OCS; each runs sessions (reserve 60 s of voice, commit 30 used, release 20 used) on random
subscribers of its mode, with an SMS debit every 10th session and an HTTP top-up every 25th.
A request answered ``store-unavailable`` (or not answered: a timeout, a lost connection) is
sent again with the same request key, as a network element does, until it gets an answer;
so every request ends with a definite answer and the ledger is exact. Requests "answered
during the failover" are those answered between the kill and the first success after it.

    .venv/bin/python -m bench.chaos [--deployment cluster|sentinel|both] [--subscribers N]
        [--inflight N] [--rounds R] [--window S] [--before S] [--after S] [--no-append]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import uvloop

from bench.charging import _spawn, _stop, free_port, parse_info
from bench.credentials import ADMIN_TOKEN, NATIVE_KEY, ocs_env
from bench.locust import invariants
from bench.report import append_section
from ocs.agents.native import session_key
from ocs.constants import MICRO
from ocs.redis_server import (
    EmbeddedCluster,
    EmbeddedRedis,
    EmbeddedSentinelGroup,
    node_command,
)
from ocs.store.cluster import admin_client, key_slot
from ocs.store.keys import SubscriberKeys
from protocols.native import NativeClient

MODES: Final = ("local", "replica", "fsync")
DEPLOYMENTS: Final = ("cluster", "sentinel")
PLAN: Final = "prepaid-basic"
SERVICE: Final = "voice"
#: Every subscriber's opening balance (micro-units): no session is refused for credit.
OPENING: Final = 1_000_000 * MICRO
#: Results a request is sent again for (the same request key): the OCS could not reach Redis.
RETRY: Final = frozenset({"store-unavailable"})
RETRY_DELAY: Final = 0.02
TOPUP_MICROS: Final = 5 * MICRO
#: The whole run gives up after this long (the brief: under 5 minutes).
RUN_LIMIT: Final = 290.0


def log(text: str) -> None:
    print(f"chaos: {text}", flush=True)


# -- the load driver -----------------------------------------------------------------------


@dataclass
class Answer:
    sub: str
    sent: float  # perf_counter when its last try was sent
    at: float  # perf_counter when the definite answer came
    verb: str
    tries: int
    result: str


@dataclass
class Ledger:
    """The driver's own book, per subscriber, from the answers alone."""

    charged: Counter[str] = field(default_factory=Counter)
    topped: Counter[str] = field(default_factory=Counter)
    #: Request keys answered success, by subscriber, as the outbox records them.
    acked: dict[str, list[str]] = field(default_factory=dict)
    answers: list[Answer] = field(default_factory=list)
    #: Every answer, definite or not, with its time (for "answered during the failover").
    raw: list[tuple[float, str, str]] = field(default_factory=list)  # (at, subscriber, result)
    requests: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # definite answers not success


class Driver:
    """Closed-loop sessions against one OCS, retrying each request until it is answered."""

    def __init__(self, o: Ocs, inflight: int, seed: int, prefix: str) -> None:
        self.native_port, self.http_port = o.native, o.http
        self.subs, self.inflight = o.subs, inflight
        self.rng = random.Random(seed)
        self.prefix = prefix
        #: The mode's one ledger: every driver against this OCS books into it.
        self.ledger = o.ledger
        self.stop = asyncio.Event()
        self.sessions = 0
        self._numbers = itertools.count(1)  # session numbers, unique across runs
        self._client: NativeClient | None = None
        self._http: aiohttp.ClientSession | None = None

    async def _native(self) -> NativeClient:
        while True:
            c = self._client
            if c is not None and c.connected:
                return c
            with contextlib.suppress(OSError, ConnectionError, TimeoutError):
                c = NativeClient("127.0.0.1", self.native_port, timeout=5, connect_timeout=2,
                                 key=NATIVE_KEY)  # fmt: skip
                await c.connect()
                old, self._client = self._client, c
                if old is not None:
                    await old.close()
                return c
            await asyncio.sleep(RETRY_DELAY)

    async def _until_answered(self, sub: str, verb: str, *args: Any, **kwargs: Any) -> Any:
        """``NativeClient.<verb>(*args, **kwargs)`` about ``sub``, sent again until it is
        answered."""
        tries = 0
        while True:
            tries += 1
            sent = time.perf_counter()
            try:
                reply = await getattr(await self._native(), verb)(*args, **kwargs)
                result = reply.result
            except (OSError, ConnectionError, TimeoutError) as exc:
                reply, result = None, f"no answer ({type(exc).__name__})"
            at = time.perf_counter()
            self.ledger.raw.append((at, sub, result))
            if reply is not None and result not in RETRY:
                self.ledger.answers.append(Answer(sub, sent, at, verb, tries, result))
                return reply
            await asyncio.sleep(RETRY_DELAY)

    async def _topup(self, sub: str, ref: str) -> None:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                timeout=aiohttp.ClientTimeout(total=5),
            )
        url = f"http://127.0.0.1:{self.http_port}/v1/subscribers/{sub}/topups"
        body = {"amount": f"{TOPUP_MICROS // MICRO}.00", "reference": ref}
        tries = 0
        while True:
            tries += 1
            sent = time.perf_counter()
            try:
                async with self._http.post(url, json=body) as resp:
                    status = resp.status
                    await resp.read()
            except (OSError, aiohttp.ClientError, TimeoutError):
                status = 0
            result = "success" if status == 201 else f"http {status}"
            raw = result if status and status < 500 else "store-unavailable"
            at = time.perf_counter()
            self.ledger.raw.append((at, sub, raw))
            if status and status < 500:
                self.ledger.answers.append(Answer(sub, sent, at, "topup", tries, result))
                if status == 201:
                    self.ledger.topped[sub] += TOPUP_MICROS
                    self.ledger.acked.setdefault(sub, []).append(f"topup:{ref}")
                else:
                    self.ledger.refused[result] += 1
                return
            await asyncio.sleep(RETRY_DELAY)

    def _book(self, sub: str, key: str, reply: Any) -> bool:
        self.ledger.requests += 1
        if reply.result != "success":
            self.ledger.refused[reply.result] += 1
            return False
        self.ledger.charged[sub] += reply.charged
        self.ledger.acked.setdefault(sub, []).append(key)
        return True

    async def _worker(self, w: int) -> None:
        while not self.stop.is_set():
            n = next(self._numbers)
            self.sessions += 1
            sub = self.rng.choice(self.subs)
            sid = f"{self.prefix}{n}"
            r = await self._until_answered(sub, "reserve", sid, sub, SERVICE, seq=0, units=60)
            if self._book(sub, session_key(sid, 0), r):
                r = await self._until_answered(sub, "commit", sid, seq=1, used=30, subscriber=sub)
                self._book(sub, session_key(sid, 1), r)
                r = await self._until_answered(sub, "release", sid, seq=2, used=20, subscriber=sub)
                self._book(sub, session_key(sid, 2), r)
            if n % 10 == 0:
                key = f"{sid}-sms"
                r = await self._until_answered(sub, "debit", sub, "sms", key=key)
                self._book(sub, key, r)
            if n % 25 == 0:
                await self._topup(sub, f"{sid}-top")

    async def run(self, seconds: float | None = None) -> None:
        """Run until :attr:`stop` is set (or for ``seconds``); every session started is
        ended before this returns."""
        workers = [asyncio.create_task(self._worker(w)) for w in range(self.inflight)]
        try:
            if seconds is not None:
                await asyncio.sleep(seconds)
                self.stop.set()
            await asyncio.gather(*workers)
        finally:
            for t in workers:
                t.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
        if self._http is not None:
            await self._http.close()


# -- deployments ---------------------------------------------------------------------------


class Deployment:
    """The Redis deployment under test: start, URL, every node, the master to kill, whether
    a replica took over, and the restart of a killed node."""

    def __init__(self, kind: str, work: Path, replicas: int = 1) -> None:
        self.kind = kind
        self.replicas = replicas
        if kind == "cluster":
            self.cluster = EmbeddedCluster(work / "cluster", replicas=replicas, node_timeout=2000)
            self.servers: list[EmbeddedRedis] = list(self.cluster.nodes)
        else:
            self.group = EmbeddedSentinelGroup(work / "sentinel", replicas=replicas,
                                               down_after_ms=1000)  # fmt: skip
            self.servers = list(self.group.nodes)

    @property
    def url(self) -> str:
        return self.cluster.url if self.kind == "cluster" else self.group.url

    @property
    def shape(self) -> str:
        r = self.replicas
        if self.kind == "cluster":
            return (f"Redis Cluster 3 masters + {3 * r} replicas ({r} each), "
                    "cluster-node-timeout 2000 ms")  # fmt: skip
        return (f"Sentinel: 1 master + {r} replica{'s' if r > 1 else ''}, 3 sentinels, "
                "down-after-milliseconds 1000")  # fmt: skip

    def start(self) -> None:
        (self.cluster if self.kind == "cluster" else self.group).start()

    def stop(self) -> None:
        (self.cluster if self.kind == "cluster" else self.group).stop()

    def healthy(self) -> bool:
        return (self.cluster if self.kind == "cluster" else self.group).healthy()

    def holders(self, subs: list[str]) -> dict[str, EmbeddedRedis]:
        """The master now serving each subscriber's keys."""
        if self.kind == "sentinel":
            master = self.group.master()
            assert master is not None
            return dict.fromkeys(subs, master)
        ranges = []
        for n in self.cluster.cluster_nodes():
            if n["role"] != "master" or "fail" in n["flags"]:
                continue
            node = next(s for s in self.servers if s.port == int(n["port"]))
            for part in n["slots"].split():
                if part[0].isdigit():
                    lo, _, hi = part.partition("-")
                    ranges.append((int(lo), int(hi or lo), node))
        out = {}
        for sub in subs:
            slot = key_slot(SubscriberKeys.of(sub).account)
            out[sub] = next(node for lo, hi, node in ranges if lo <= slot <= hi)
        return out

    def promoted(self, dead: EmbeddedRedis) -> EmbeddedRedis | None:
        """The node that took over from ``dead``, once one has (None: not yet)."""
        if self.kind == "sentinel":
            master = self.group.master()
            return master if master is not None and master is not dead else None
        with contextlib.suppress(Exception):
            masters = self.cluster.masters()
            if len(masters) == 3 and dead not in masters:
                return masters[0]
        return None

    def rejoin(self, dead: EmbeddedRedis, master: EmbeddedRedis) -> None:
        dead.start()
        if self.kind == "sentinel":
            node_command(dead.port, "REPLICAOF", "127.0.0.1", str(master.port))

    def set_fsync(self, policy: str) -> None:
        for s in self.servers:
            if s.running:
                node_command(s.port, "CONFIG", "SET", "appendfsync", policy)


async def redis_cpu(servers: list[EmbeddedRedis]) -> float:
    total = 0.0
    for s in servers:
        if s.running:
            with contextlib.suppress(OSError):
                info = parse_info(await asyncio.to_thread(node_command, s.port, "INFO", "cpu"))
                total += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    return total


# -- the OCS processes ---------------------------------------------------------------------


@dataclass
class Ocs:
    mode: str
    proc: subprocess.Popen[bytes]
    native: int
    http: int
    subs: list[str]
    ledger: Ledger = field(default_factory=Ledger)


@contextlib.asynccontextmanager
async def ocs_processes(url: str, work: Path, subscribers: int) -> AsyncIterator[list[Ocs]]:
    procs: list[Ocs] = []
    try:
        for i, mode in enumerate(MODES):
            native, http = free_port(), free_port()
            argv = [sys.executable, "-m", "ocs.cli", "serve", "--redis-url", url,
                    "--native-port", str(native), "--http-port", str(http)]  # fmt: skip
            env = {**os.environ, "OCS_DATA_DIR": str(work / f"ocs-{mode}"), **ocs_env(),
                   "OCS_DURABILITY": mode, "OCS_DURABILITY_TIMEOUT": "1000",
                   "OCS_LOG_LEVEL": "WARNING"}  # fmt: skip
            with open(work / f"ocs-{mode}.log", "wb") as log_file:  # noqa: ASYNC230 (start-up)
                proc = _spawn(argv, stdout=log_file, stderr=subprocess.STDOUT, env=env)
            subs = [f"49170{i}{n:06d}" for n in range(subscribers)]
            procs.append(Ocs(mode, proc, native, http, subs))
        for o in procs:
            await _wait_ready(o, work)
        yield procs
    finally:
        for o in procs:
            await asyncio.to_thread(_stop, o.proc, 15)


async def _wait_ready(o: Ocs, work: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        if o.proc.poll() is not None:
            tail = (work / f"ocs-{o.mode}.log").read_bytes()[-3000:].decode(errors="replace")
            raise SystemExit(f"chaos: `ocs serve` ({o.mode}) exited {o.proc.returncode}:\n{tail}")
        with contextlib.suppress(OSError, ConnectionError, TimeoutError):
            async with NativeClient("127.0.0.1", o.native, timeout=2, connect_timeout=1,
                                    key=NATIVE_KEY) as c:  # fmt: skip
                if (await c.ping()).ok:
                    return
        if time.monotonic() > deadline:
            raise SystemExit(f"chaos: `ocs serve` ({o.mode}) did not answer within 60 s")
        await asyncio.sleep(0.1)


async def create_subscribers(o: Ocs) -> None:
    """Every subscriber of a mode through its OCS's admin API (the production path, as the
    load test does): prepaid-basic, OPENING each."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as http:

        async def one(m: str) -> None:
            body = {"msisdn": m, "balance": f"{OPENING // MICRO}.00", "plan": PLAN,
                    "credit_limit": "0.00", "reference": f"chaos-{m}"}  # fmt: skip
            url = f"http://127.0.0.1:{o.http}/v1/subscribers"
            async with http.post(url, json=body) as resp:
                if resp.status != 201:
                    raise SystemExit(f"chaos: creating {m}: {resp.status} {await resp.text()}")

        for i in range(0, len(o.subs), 50):
            await asyncio.gather(*(one(m) for m in o.subs[i : i + 50]))


# -- one failover --------------------------------------------------------------------------


@dataclass
class Failover:
    deployment: str
    mode: str
    requests: int = 0
    sessions: int = 0
    #: Answers between the kill and the first success on the victim's keys: about its
    #: subscribers, and about the others (a cluster's other masters go on).
    during: Counter[str] = field(default_factory=Counter)
    during_others: Counter[str] = field(default_factory=Counter)
    affected: int = 0
    retried_requests: int = 0
    promoted_after: float = 0.0
    rejoined_after: float = 0.0
    recovered_after: float = 0.0
    money_lost: int = 0
    money_over: int = 0
    subscribers_off: int = 0
    acked_lost: int = 0
    problems: list[str] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)


async def failover(dep: Deployment, ocs: Ocs, ns: argparse.Namespace, seed: int) -> Failover:
    out = Failover(dep.kind, ocs.mode)
    await asyncio.to_thread(dep.set_fsync, "always" if ocs.mode == "fsync" else "everysec")
    driver = Driver(ocs, ns.inflight, seed, f"f{seed}-")
    n_answers = len(ocs.ledger.answers)
    run = asyncio.create_task(driver.run())
    try:
        await asyncio.sleep(ns.before)
        holders = await asyncio.to_thread(dep.holders, ocs.subs)
        dead = holders[ocs.subs[0]]
        # The subscribers whose keys the victim holds (a cluster: about a third).
        hit = {s for s, node in holders.items() if node is dead}
        out.affected = len(hit)
        t0 = time.perf_counter()
        await asyncio.to_thread(dead.kill)
        killed = time.perf_counter()
        # Promotion, then the restart of the killed node (it rejoins as a replica).
        while (master := await asyncio.to_thread(dep.promoted, dead)) is None:
            if time.perf_counter() - t0 > 30:
                raise SystemExit(f"chaos: no replica promoted within 30 s ({dep.kind})")
            await asyncio.sleep(0.05)
        out.promoted_after = time.perf_counter() - t0
        await asyncio.to_thread(dep.rejoin, dead, master)
        out.rejoined_after = time.perf_counter() - t0
        # The first success of a request on the victim's keys sent after the kill.
        while True:
            ok = [a.at for a in driver.ledger.answers[n_answers:]
                  if a.sent > killed and a.result == "success" and a.sub in hit]  # fmt: skip
            if ok:
                recovered = min(ok)
                break
            if time.perf_counter() - t0 > 60:
                raise SystemExit(f"chaos: the OCS did not recover within 60 s ({ocs.mode})")
            await asyncio.sleep(0.05)
        out.recovered_after = recovered - t0
        await asyncio.sleep(max(0.0, recovered + ns.after - time.perf_counter()))
        driver.stop.set()
        async with asyncio.timeout(60):
            await run
        deadline = time.monotonic() + 30
        while not await asyncio.to_thread(dep.healthy):
            if time.monotonic() > deadline:
                raise SystemExit("chaos: the deployment did not heal within 30 s")
            await asyncio.sleep(0.1)
    finally:
        driver.stop.set()
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await driver.close()
    led = driver.ledger
    out.requests, out.sessions = len(led.answers) - n_answers, driver.sessions
    out.during = Counter(r for at, sub, r in led.raw if killed <= at <= recovered and sub in hit)
    out.during_others = Counter(
        r for at, sub, r in led.raw if killed <= at <= recovered and sub not in hit
    )
    out.retried_requests = sum(1 for a in led.answers[n_answers:] if a.tries > 1)
    out.refused = led.refused
    await check_money(dep.url, ocs.subs, led, out)
    return out


async def check_money(url: str, subs: list[str], led: Ledger, out: Failover) -> None:
    """The invariants of every subscriber of the mode, and the driver's ledger against them."""
    client = admin_client(url)
    try:
        events, accounts = await asyncio.gather(
            invariants.read_outbox(client), invariants.read_accounts(client)
        )
    finally:
        await client.aclose()
    for sub in subs:
        account = accounts.get(sub)
        evs = events.get(sub, [])
        problems = invariants.verify_subscriber(
            sub, evs, account, opening=OPENING,
            ledger=(led.charged[sub], led.topped[sub], 0), require_closed=True,
        )  # fmt: skip
        out.problems += [f"{sub}: {p}" for p in problems]
        if account is None:
            out.problems.append(f"{sub}: no account")
            continue
        expect = OPENING + led.topped[sub] - led.charged[sub]
        diff = account.balance - expect
        if diff:
            out.subscribers_off += 1
            if diff > 0:
                out.money_lost += diff  # charges answered but not in the balance
            else:
                out.money_over -= diff  # the balance lower than the answers say
        keys = {e["rk"] for e in evs if "rk" in e}
        out.acked_lost += sum(1 for k in led.acked.get(sub, []) if k not in keys)


# -- throughput, same run -------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """One mode's measured window: requests/s, Redis CPU µs per request, latency ms."""

    rate: float
    cpu_us: float
    p50_ms: float
    p99_ms: float


async def throughput(
    dep: Deployment, procs: list[Ocs], ns: argparse.Namespace
) -> dict[str, list[Window]]:
    """Every mode's windows, one per round."""
    got: dict[str, list[Window]] = {o.mode: [] for o in procs}
    for rnd in range(ns.rounds):
        order = procs[rnd % len(procs):] + procs[: rnd % len(procs)]  # fmt: skip
        for o in order:
            await asyncio.to_thread(dep.set_fsync, "always" if o.mode == "fsync" else "everysec")
            driver = Driver(o, ns.inflight, 1000 + rnd, f"t{rnd}-")
            warm = asyncio.create_task(driver.run(0.5))
            await warm
            driver.stop = asyncio.Event()
            cpu0 = await redis_cpu(dep.servers)
            n0, t0 = len(driver.ledger.answers), time.monotonic()
            await driver.run(ns.window)
            elapsed = time.monotonic() - t0
            n = len(driver.ledger.answers) - n0
            cpu = await redis_cpu(dep.servers) - cpu0
            await driver.close()
            lat = sorted(a.at - a.sent for a in driver.ledger.answers[n0:])
            w = Window(n / elapsed, cpu / max(n, 1) * 1e6,
                       lat[len(lat) // 2] * 1e3 if lat else math.nan,
                       lat[int(len(lat) * 0.99)] * 1e3 if lat else math.nan)  # fmt: skip
            got[o.mode].append(w)
            log(f"  round {rnd + 1} {o.mode:<8} {w.rate:8,.0f} requests/s, Redis "
                f"{w.cpu_us:5.1f} µs CPU per request, p50 {w.p50_ms:.1f} ms, "
                f"p99 {w.p99_ms:.1f} ms")  # fmt: skip
    return got


# -- the run ---------------------------------------------------------------------------------


async def run_deployment(
    kind: str, ns: argparse.Namespace, work: Path
) -> tuple[str, Any, list[Failover]]:
    dep = Deployment(kind, work / kind, ns.replicas)
    t = time.monotonic()
    await asyncio.to_thread(dep.start)
    log(f"{dep.shape}: up in {time.monotonic() - t:.1f} s ({dep.url})")
    try:
        async with ocs_processes(dep.url, work / kind, ns.subscribers) as procs:
            for o in procs:
                await create_subscribers(o)
            log(f"3 `ocs serve` (local, replica, fsync), {ns.subscribers} subscribers each")
            tp = await throughput(dep, procs, ns)
            results = []
            for i, o in enumerate(procs):
                f = await failover(dep, o, ns, seed=i)
                log(f"  failover {o.mode:<8} promoted {f.promoted_after:.1f} s, first "
                    f"success {f.recovered_after:.1f} s after the kill; answered meanwhile "
                    f"{dict(f.during)}; money lost {f.money_lost} µ, over {f.money_over} µ, "
                    f"acknowledged requests lost {f.acked_lost}, problems "
                    f"{len(f.problems)}")  # fmt: skip
                for p in f.problems[:5]:
                    log(f"    {p}")
                results.append(f)
            return dep.shape, tp, results
    finally:
        await asyncio.to_thread(dep.stop)


def report(ns: argparse.Namespace, runs: list[tuple[str, str, Any, list[Failover]]]) -> list[str]:
    lines = [
        f"`python -m bench.chaos` (bench/chaos.py): {ns.subscribers} subscribers per mode, "
        f"{ns.inflight} sessions in flight over one native connection, throughput "
        f"{ns.rounds} rounds x {ns.window:g} s per mode (interleaved, medians), failover: "
        f"kill -9 after {ns.before:g} s, {ns.after:g} s of load after the first success. "
        "Redis CPU is every data node's (masters and replicas: replication costs CPU too). "
        "The killed node is restarted as soon as a replica is promoted and rejoins as a "
        "replica. Every request answered store-unavailable (or not at all) is sent again "
        "with the same request key until answered.",
        "",
    ]
    for kind, shape, tp, results in runs:
        base = statistics.median(w.rate for w in tp["local"])
        base_cpu = statistics.median(w.cpu_us for w in tp["local"])
        lines += [f"### {kind}: {shape}", "",
                  "| mode | requests/s (median) | ratio to local | Redis CPU µs/request "
                  "(median) | ratio to local | p50 / p99 ms (medians) | "
                  "requests | subscribers on the killed master | answered during failover: "
                  "theirs / the others' | promoted after | rejoined after | first success "
                  "on the killed master's keys after | money lost µ | acknowledged lost | "
                  "invariant problems |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"
                  "---:|---:|"]  # fmt: skip
        for f in results:
            rates = [w.rate for w in tp[f.mode]]
            cpus = [w.cpu_us for w in tp[f.mode]]
            p50 = statistics.median(w.p50_ms for w in tp[f.mode])
            p99 = statistics.median(w.p99_ms for w in tp[f.mode])
            theirs = ", ".join(f"{k} {v:,}" for k, v in sorted(f.during.items())) or "none"
            others = ", ".join(f"{k} {v:,}" for k, v in sorted(f.during_others.items()))
            lost = f"{f.money_lost:,}" + (f" (+{f.money_over:,} over)" if f.money_over else "")
            lines.append(
                f"| {f.mode} | {statistics.median(rates):,.0f} | "
                f"{statistics.median(rates) / base:.2f} | {statistics.median(cpus):.1f} | "
                f"{statistics.median(cpus) / base_cpu:.2f} | {p50:.1f} / {p99:.1f} | "
                f"{f.requests:,} | {f.affected} of {ns.subscribers} | {theirs} / "
                f"{others or 'none'} | {f.promoted_after:.1f} s | {f.rejoined_after:.1f} s | "
                f"{f.recovered_after:.1f} s | {lost} | {f.acked_lost} | {len(f.problems)} |"
            )
        lines.append("")
    return lines


async def main(ns: argparse.Namespace) -> int:
    kinds = DEPLOYMENTS if ns.deployment == "both" else (ns.deployment,)
    started = time.monotonic()
    runs = []
    with tempfile.TemporaryDirectory(prefix="ocs-chaos-") as tmp:
        for kind in kinds:
            async with asyncio.timeout(RUN_LIMIT - (time.monotonic() - started)):
                shape, tp, results = await run_deployment(kind, ns, Path(tmp))
            runs.append((kind, shape, tp, results))
    lines = report(ns, runs)
    print("\n".join(lines))
    replica_lost = [f for _k, _s, _t, rs in runs for f in rs
                    if f.mode == "replica" and (f.money_lost or f.money_over or f.acked_lost
                                                or f.problems)]  # fmt: skip
    verdict = ("In `replica` mode no micro-unit and no acknowledged request was lost."
               if not replica_lost else
               "FAILED: `replica` mode lost money or acknowledged requests.")  # fmt: skip
    lines += [verdict, "", f"Run time {time.monotonic() - started:.0f} s."]
    log(verdict)
    if not ns.no_append:
        append_section("Chaos (issue 15)", lines)
    return 1 if replica_lost else 0


def cli() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n")[0])
    p.add_argument("--deployment", choices=[*DEPLOYMENTS, "both"], default="both")
    p.add_argument("--replicas", type=int, default=1, help="per master (default 1)")
    p.add_argument("--subscribers", type=int, default=200)
    p.add_argument("--inflight", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--window", type=float, default=2.0)
    p.add_argument("--before", type=float, default=3.0)
    p.add_argument("--after", type=float, default=3.0)
    p.add_argument("--no-append", action="store_true", help="do not append to RESULTS.md")
    ns = p.parse_args()
    sys.exit(uvloop.run(main(ns)))


if __name__ == "__main__":
    cli()
