"""Gy over the Diameter listener against the native protocol, in the same run.

One private redis-server (AOF on, appendfsync everysec) holds N subscribers (plan
prepaid-basic, large balances); ``ocs serve`` runs in its own process with both listeners. A
Diameter session is CCR-I (Rating-Group 100, voice, Requested-Service-Unit CC-Time 60) ->
CCR-U (Used 30 s, the next 60) -> CCR-T (Used 20 s) on a random subscriber; the native
session is the same reserve -> commit -> release as ``bench.charging``. A load-generator
process (uvloop) drives each with N requests in flight over one connection (the Diameter
one after CER/CEA, our codec on an ``asyncio.Protocol``); rounds alternate the two and
medians are reported, with the ratio Diameter / native. Every CCA must be 2001 with the
expected grant, and afterwards no account may hold a reservation and the money debited must
equal what the sessions cost.

    .venv/bin/python -m bench.diameter [--duration S] [--inflight N] [--subscribers N]
        [--rounds R] [--no-append]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Final, cast

import uvloop

from bench.charging import (
    RESULTS,
    Meter,
    Outcome,
    Prices,
    Spec,
    Window,
    _spawn,
    _stop,
    _wait_ready,
    check_accounts,
    free_port,
    git_commit,
    load_subscribers,
    machine,
    msisdn,
    outcome,
    run_worker,
)
from bench.credentials import ocs_env
from ocs.redis_server import EmbeddedRedis
from ocs.store.cluster import hot_client
from protocols.diameter import NEED_DATA, Framer, Item, Message, avp, make_answer, make_request
from protocols.diameter import constants as c

RATING_GROUP: Final = 100
CONTEXT: Final = "32260@3gpp.org"
RESERVE: Final = 60
USED_U: Final = 30
USED_T: Final = 20
TARGET_RATE: Final = 8_000
TARGET_P99_MS: Final = 10.0


class GyClient(asyncio.Protocol):
    """A gateway's Diameter connection: requests out (one write per loop turn), answers
    matched by Hop-by-Hop id, DWR answered."""

    def __init__(self) -> None:
        self.framer = Framer(1 << 20)
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, asyncio.Future[Message]] = {}
        self.ids = itertools.count(1)
        self.out: list[bytes] = []
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.framer.receive_data(data)
        while (m := self.framer.next_message()) is not NEED_DATA:
            assert isinstance(m, Message)
            if m.is_request:  # DWR (or DPR): answer 2001
                self._write(
                    make_answer(m, result_code=2001, origin_host="pgw.bench",
                                origin_realm="bench")
                )  # fmt: skip
                continue
            f = self.pending.pop(m.hop_by_hop, None)
            if f is not None:
                f.set_result(m)

    def connection_lost(self, exc: Exception | None) -> None:
        for f in self.pending.values():
            if not f.done():
                f.set_exception(ConnectionError("closed"))

    @staticmethod
    def base() -> list[Item]:
        return [("Origin-Host", "pgw.bench"), ("Origin-Realm", "bench")]

    def _write(self, m: Message) -> None:
        if not self.out:
            self.loop.call_soon(self._flush)
        self.out.append(m.to_bytes())

    def _flush(self) -> None:
        assert self.transport is not None
        self.transport.write(b"".join(self.out))
        self.out.clear()

    def request(self, m: Message) -> asyncio.Future[Message]:
        m.hop_by_hop = m.end_to_end = next(self.ids)
        f: asyncio.Future[Message] = self.loop.create_future()
        self.pending[m.hop_by_hop] = f
        self._write(m)
        return f


_SUB_TYPE = avp("Subscription-Id-Type", 0)
_COMMON = [
    avp("Origin-Host", "pgw.bench"),
    avp("Origin-Realm", "bench"),
    avp("Destination-Realm", "localdomain"),
    avp("Auth-Application-Id", 4),
    avp("Service-Context-Id", CONTEXT),
]


def ccr(sid: str, sub: str, kind: int, number: int, used: int | None, rsu: bool) -> Message:
    mscc: list[Item] = []
    if rsu:
        mscc.append(("Requested-Service-Unit", [("CC-Time", RESERVE)]))
    if used is not None:
        mscc.append(("Used-Service-Unit", [("CC-Time", used)]))
    mscc.append(("Rating-Group", RATING_GROUP))
    items: list[Item] = [
        ("Session-Id", sid),
        *_COMMON,
        ("CC-Request-Type", kind),
        ("CC-Request-Number", number),
        ("Subscription-Id", [_SUB_TYPE, ("Subscription-Id-Data", sub)]),
        ("Multiple-Services-Credit-Control", mscc),
    ]
    return make_request(272, 4, items, hop_by_hop=0, end_to_end=0, proxiable=True)


def _granted(a: Message) -> int:
    return a.get_int("Multiple-Services-Credit-Control", "Granted-Service-Unit", "CC-Time") or 0


async def diameter_worker(spec: Spec) -> Outcome:
    """N virtual gateways' sessions, back to back, over one Diameter connection."""
    admin = hot_client(spec.redis_url)
    await admin.connect()
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(GyClient, "127.0.0.1", spec.ocs_port)
    cer = make_request(
        c.CMD_CAPABILITIES_EXCHANGE, 0,
        [*GyClient.base(), ("Host-IP-Address", "127.0.0.1"), ("Vendor-Id", 0),
         ("Product-Name", "bench"), ("Auth-Application-Id", 4)],
        hop_by_hop=0, end_to_end=0,
    )  # fmt: skip
    cea = await client.request(cer)
    if cea.result_code != c.DIAMETER_SUCCESS:
        raise SystemExit(f"bench: CEA {cea.result_code}")
    meter, stop = Meter(), asyncio.Event()
    window = Window(spec, admin)
    price = Prices.of_plan()
    rng = random.Random(spec.seed)
    subs = [msisdn(i) for i in range(spec.subscribers)]
    pc = time.perf_counter

    async def session(sid: str, sub: str) -> None:
        t0 = pc()
        a = await client.request(ccr(sid, sub, 1, 0, None, True))
        meter.record(t0, pc())
        if a.result_code != 2001 or _granted(a) != RESERVE:
            meter.fail(f"CCR-I:{a.result_code}")
            return
        t0 = pc()
        a = await client.request(ccr(sid, sub, 2, 1, USED_U, True))
        meter.record(t0, pc())
        if a.result_code != 2001 or _granted(a) != RESERVE:
            meter.fail(f"CCR-U:{a.result_code}")
            return
        t0 = pc()
        a = await client.request(ccr(sid, sub, 3, 2, USED_T, False))
        meter.record(t0, pc())
        if a.result_code != 2001:
            meter.fail(f"CCR-T:{a.result_code}")
            return
        meter.charged += price.commit + price.release
        meter.sessions += 1

    async def user(vu: int) -> None:
        n = 0
        while not stop.is_set():
            await session(f"pgw.bench;{spec.prefix}{vu};{n}", subs[rng.randrange(len(subs))])
            n += 1

    try:
        await asyncio.gather(window.run(meter, stop), *(user(i) for i in range(spec.inflight)))
    finally:
        assert client.transport is not None
        client.transport.close()
        await admin.close()
    return outcome(spec, meter, window)


def worker_main(raw: str) -> None:
    spec = Spec(**json.loads(raw))
    result = uvloop.run(diameter_worker(spec))
    print(json.dumps(asdict(result)), flush=True)


def run_diameter_worker(spec: Spec) -> Outcome:
    argv = [sys.executable, "-m", "bench.diameter", "--worker", json.dumps(asdict(spec))]
    proc = _spawn(argv, stdout=subprocess.PIPE)
    try:
        out, _ = proc.communicate(timeout=spec.warmup + spec.duration + 120)
    finally:
        _stop(proc, 5)
    if proc.returncode != 0:
        raise SystemExit(f"bench: diameter worker failed (exit status {proc.returncode})")
    return Outcome(**json.loads(out.decode().strip().splitlines()[-1]))


@contextlib.contextmanager
def ocs_process(redis_url: str, work: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    native, diameter = free_port(), free_port()
    log_path = work / "ocs.log"
    argv = [sys.executable, "-m", "ocs.cli", "serve", "--redis-url", redis_url,
            "--native-port", str(native), "--http-port", "0"]  # fmt: skip
    env = {**os.environ, "OCS_DATA_DIR": str(work / "ocs-data"),
           "OCS_DIAMETER_PORT": str(diameter), "OCS_LOG_LEVEL": "WARNING", **ocs_env()}  # fmt: skip
    with open(log_path, "wb") as log:
        proc = _spawn(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        uvloop.run(_wait_ready(proc, native, log_path))
        yield proc, native, diameter
    finally:
        _stop(proc, 15)


def _row(name: str, r: Outcome) -> str:
    return (
        f"| {name} | {r.rate:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
        f"{r.per_request_us(r.ocs_cpu):.1f} | {r.per_request_us(r.redis_cpu):.1f} | "
        f"{r.per_request_us(r.gen_cpu):.1f} |"
    )


def _median(runs: list[Outcome]) -> Outcome:
    mid = sorted(runs, key=lambda r: r.rate)[len(runs) // 2]
    return Outcome(
        mid.kind,
        requests=int(statistics.median(r.requests for r in runs)),
        seconds=statistics.median(r.seconds for r in runs),
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs),
        ocs_cpu=mid.ocs_cpu * statistics.median(r.requests for r in runs) / max(mid.requests, 1),
        redis_cpu=mid.redis_cpu
        * statistics.median(r.requests for r in runs)
        / max(mid.requests, 1),
        gen_cpu=mid.gen_cpu * statistics.median(r.requests for r in runs) / max(mid.requests, 1),
    )


def orchestrate(ns: argparse.Namespace) -> None:
    info = machine()
    common = {"subscribers": ns.subscribers, "inflight": ns.inflight, "warmup": ns.warmup,
              "duration": ns.duration}  # fmt: skip
    runs: dict[str, list[Outcome]] = {"native": [], "diameter": []}
    everything: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="ocs-bench-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        server = EmbeddedRedis(work / "redis", extra_args=("--appendfsync", "everysec"))
        server.start()
        stack.callback(server.stop)
        info["redis"] = f"{server.version} (AOF on, appendfsync everysec)"
        uvloop.run(load_subscribers(server.url, ns.subscribers))
        ocs, native, diameter = stack.enter_context(ocs_process(server.url, work))
        print(f"bench: `ocs serve` pid {ocs.pid}, native {native}, diameter {diameter}",
              flush=True)  # fmt: skip
        primed = run_worker(Spec("prime", server.url, prefix="p-", ocs_port=native,
                                 ocs_pid=ocs.pid, **common))  # fmt: skip
        everything.append(primed)
        for rnd in range(ns.rounds):
            order = ("diameter", "native") if rnd % 2 == 0 else ("native", "diameter")
            for kind in order:
                port = diameter if kind == "diameter" else native
                spec = Spec("closed", server.url, prefix=f"{kind[:2]}{rnd}-", seed=100 + rnd,
                            ocs_port=port, ocs_pid=ocs.pid, **common)  # fmt: skip
                r = run_diameter_worker(spec) if kind == "diameter" else run_worker(spec)
                runs[kind].append(r)
                everything.append(r)
                print(f"  round {rnd + 1} {kind:<9}{r.rate:>9,.0f}/s  p50 {r.p50_ms:.2f} ms  "
                      f"p99 {r.p99_ms:.2f} ms  failures {r.failures or 0}", flush=True)  # fmt: skip
        check = uvloop.run(check_accounts(server.url, ns.subscribers, 500))
    charged = sum(r.charged for r in everything)
    failures = sum(sum(r.failures.values()) for r in everything)
    med = {k: _median(v) for k, v in runs.items()}
    ratio = med["diameter"].rate / med["native"].rate if med["native"].rate else float("nan")
    header = (
        "| run | requests/s | p50 ms | p99 ms | OCS CPU µs/req | Redis CPU µs/req | "
        "generator CPU µs/req |\n|---|---:|---:|---:|---:|---:|---:|"
    )
    lines = [header]
    for rnd in range(ns.rounds):
        for kind in ("diameter", "native"):
            lines.append(_row(f"round {rnd + 1}: {kind}", runs[kind][rnd]))
    lines.append(_row(f"**Diameter CCR** (median of {ns.rounds})", med["diameter"]))
    lines.append(_row(f"**native** (median of {ns.rounds})", med["native"]))
    lines.append(f"| **Diameter / native** | **{ratio:.0%}** | | | | | |")
    d = med["diameter"]
    met = d.rate >= TARGET_RATE and d.p99_ms < TARGET_P99_MS
    verdict = (
        f"Diameter: {d.rate:,.0f} CCR/s, p50 {d.p50_ms:.2f} ms, p99 {d.p99_ms:.2f} ms with "
        f"{ns.inflight} in flight; target ({TARGET_RATE:,} CCR/s with p99 < "
        f"{TARGET_P99_MS:g} ms) {'met' if met else 'NOT met'}; {ratio:.0%} of the native rate."
    )
    correctness = (
        f"Correctness: {failures} failed requests; {check.accounts:,} accounts, {check.holding} "
        f"holding a reservation; {check.open_sessions} open sessions in a sample of "
        f"{check.sampled}; debited {check.debited:,} µ, sessions charged "
        f"{charged:,} µ ({'equal' if charged == check.debited else 'DIFFERENT'})."
    )
    table = "\n".join(lines)
    print(table, verdict, correctness, sep="\n\n")
    if not ns.no_append:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        text = [
            f"## Diameter Gy: {stamp} (commit {git_commit()})",
            "",
            "`.venv/bin/python -m bench.diameter`: CCR-I/U/T voice sessions (Rating-Group "
            "100, MSCC) through the Diameter listener of `ocs serve`, against the native "
            "protocol's reserve/commit/release in the same run (bench/diameter.py).",
            "",
            f"Machine: {info['cpu']}, {info['cores']} cores; Python {info['python']}, Redis "
            f"{info['redis']}. Settings: {ns.subscribers:,} subscribers, {ns.inflight} "
            f"requests in flight over one connection, {ns.rounds} rounds of "
            f"{ns.duration:g} s (+{ns.warmup:g} s warm-up).",
            "",
            table,
            "",
            verdict,
            "",
            correctness,
            "",
        ]
        with open(RESULTS, "a", encoding="utf-8") as f:
            f.write("\n".join(text))


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.worker:
        worker_main(ns.worker)
        return
    orchestrate(ns)


if __name__ == "__main__":
    cli()
