"""Barring latency: from the debit that crosses a threshold to the HLR applying the bar.

One private redis-server holds the benchmark's subscribers (bench.charging's population) and
``--probes`` probe subscribers on prepaid-basic at -4.99, just above its "bar outgoing below
-5.00" threshold. ``ocs serve`` runs in its own process with ``OCS_PROVISIONING_URL`` pointing at
the HLR simulator, which runs in this process. A probe is one forced SMS debit through the
native protocol that takes a probe subscriber below -5.00; its latency is the time from
sending the debit to the simulator applying the bar (both clocks are this host's
``time.time``). The probes run twice in the same run: on an idle OCS, and while a generator
process (bench.charging's open-loop worker) offers ``--rate`` requests/s of reserve / commit /
release. The target: p99 under 1 s under load.

    .venv/bin/python -m bench.barring [--rate R] [--probes N] [--interval S] [--no-append]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import statistics
import tempfile
import threading
import time
from pathlib import Path

import uvloop

from bench.charging import (
    RESULTS,
    Outcome,
    Spec,
    git_commit,
    load_subscribers,
    ocs_process,
    percentile,
    run_worker,
)
from bench.credentials import NATIVE_KEY
from ocs.constants import MICRO
from ocs.redis_server import EmbeddedRedis
from ocs.sims.hlr import Applied, HlrSimulator, bound_port, serve
from ocs.store.redis_client import PipelinedRedis
from ocs.store.store import Store
from protocols.native import NativeClient

SECRET = "bench-secret"


def probe_msisdn(i: int) -> str:
    return f"4919{i:08d}"


async def create_probes(url: str, count: int, prefix: int) -> list[str]:
    subs = [probe_msisdn(prefix * 100_000 + i) for i in range(count)]
    async with PipelinedRedis.from_url(url) as client:
        store = Store(client, session_ttl_ms=900_000, reference_ttl_ms=86_400_000)
        for m in subs:
            ans = await store.create_subscriber(
                m, plan="prepaid-basic", balance=-4_990_000, credit_limit=0, state="active",
                now=int(time.time() * 1000),
            )  # fmt: skip
            assert ans.status == "OK", ans.status
    return subs


async def probe(
    port: int, subs: list[str], interval: float, applied: dict[str, float]
) -> list[float]:
    """One crossing debit per probe subscriber, ``interval`` apart; the bar latencies (s).
    (``applied`` is filled by the simulator's thread: polled every millisecond.)"""
    out: list[float] = []
    async with NativeClient("127.0.0.1", port, key=NATIVE_KEY) as client:

        async def one(m: str) -> None:
            sent = time.time()
            r = await client.debit(m, "sms", f"probe-{m}", force=True)
            assert r.result == "success", r
            async with asyncio.timeout(30):
                while m not in applied:  # noqa: ASYNC110 (filled by another thread)
                    await asyncio.sleep(0.001)
            out.append(applied[m] - sent)

        tasks = []
        for m in subs:
            tasks.append(asyncio.create_task(one(m)))
            await asyncio.sleep(interval)
        await asyncio.gather(*tasks)
    return out


def summary(name: str, lat: list[float]) -> str:
    lat = sorted(lat)
    ms = [x * 1000 for x in lat]
    return (
        f"| {name} | {len(ms)} | {statistics.median(ms):.1f} | {percentile(ms, 0.99):.1f} | "
        f"{max(ms):.1f} |"
    )


class SimulatorThread:
    """The HLR simulator on an event loop of its own, in a thread."""

    def __init__(self, applied: dict[str, float]) -> None:
        def on_apply(a: Applied) -> None:
            if a.barring == "outgoing":
                applied.setdefault(a.msisdn, a.at)

        self.sim = HlrSimulator(secret=SECRET, on_apply=on_apply)
        self.ready = threading.Event()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        runner = await serve(self.sim, "127.0.0.1", 0)
        self.port = bound_port(runner)
        self._stop = asyncio.Event()
        self.ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> SimulatorThread:
        self._thread.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()


def main(ns: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="ocs-bench-barring-") as tmp:
        work = Path(tmp)
        redis = EmbeddedRedis(work / "redis")
        redis.start()
        try:
            uvloop.run(load_subscribers(redis.url, ns.subscribers))
            idle_subs = uvloop.run(create_probes(redis.url, ns.probes, 1))
            load_subs = uvloop.run(create_probes(redis.url, ns.probes, 2))
            applied: dict[str, float] = {}
            with SimulatorThread(applied) as sim:
                env = {"OCS_PROVISIONING_URL": f"http://127.0.0.1:{sim.port}",
                       "OCS_PROVISIONING_SECRET": SECRET}  # fmt: skip
                with ocs_process(redis.url, work, env) as (proc, port):
                    idle = uvloop.run(probe(port, idle_subs, ns.interval, applied))
                    spec = Spec(
                        kind="open", redis_url=redis.url, subscribers=ns.subscribers,
                        inflight=64, warmup=2.0,
                        duration=ns.probes * ns.interval + 5.0, prefix="bl", ocs_port=port,
                        ocs_pid=proc.pid, rate=ns.rate,
                    )  # fmt: skip
                    result: list[Outcome] = []
                    worker = threading.Thread(target=lambda: result.append(run_worker(spec)))
                    worker.start()
                    time.sleep(spec.warmup + 1.0)
                    loaded = uvloop.run(probe(port, load_subs, ns.interval, applied))
                    worker.join()
        finally:
            redis.stop()
    bg = result[0]
    p99 = percentile(sorted(x * 1000 for x in loaded), 0.99)
    verdict = "met" if p99 < 1000 else "NOT met"
    lines = [
        f"## Barring latency: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC "
        f"(commit {git_commit()})",
        "",
        f"Probes: one forced debit taking a subscriber below -5.00 every {ns.interval:g} s, "
        f"{ns.probes} on an idle OCS, then {ns.probes} while a generator offers "
        f"{ns.rate:,.0f} requests/s (reserve/commit/release); from sending the debit to the "
        "HLR simulator applying the bar (ms).",
        "",
        "| OCS | probes | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
        summary("idle", idle),
        summary(f"under load ({bg.rate:,.0f} req/s done, p99 {bg.p99_ms:.1f} ms)", loaded),
        "",
        f"Target p99 under 1 s under load: {verdict} ({p99:.1f} ms). Under load / idle p50 "
        f"ratio: {statistics.median(loaded) / statistics.median(idle):.2f}.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not ns.no_append:
        with open(RESULTS, "a", encoding="utf-8") as f:
            f.write("\n" + text)
        print(f"appended to {RESULTS}")


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=3000.0, help="background requests/s")
    p.add_argument("--probes", type=int, default=100, help="probes per phase")
    p.add_argument("--interval", type=float, default=0.1, help="seconds between probes")
    p.add_argument("--subscribers", type=int, default=10_000)
    p.add_argument("--no-append", action="store_true", help="do not append to RESULTS.md")
    ns = p.parse_args()
    assert MICRO == 1_000_000
    main(ns)


if __name__ == "__main__":
    cli()
