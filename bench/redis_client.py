"""Auto-pipelining client vs redis-py: one awaited EVALSHA per request.

Starts a private redis-server (no AOF) on a free port, loads a script of five ``redis.call``s
on hash-tagged keys, and runs N concurrent callers (64 by default) for a few seconds with each
client in turn, three interleaved rounds, under uvloop. Reports the medians of calls/s, client
CPU microseconds per call (``time.process_time``, the figure that survives a noisy machine) and
Redis CPU per call (from INFO cpu).

    .venv/bin/python -m bench.redis_client [--seconds 3] [--concurrency 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis.asyncio
import uvloop

from bench.report import append_section
from ocs.redis_server import EmbeddedRedis
from ocs.store.redis_client import PipelinedRedis

SUBSCRIBERS = 100_000
BUCKETS = 64

#: Five redis.call()s, like a reservation: debit, reserve, stamp, count, read back.
SCRIPT = """
local balance = redis.call('HINCRBY', KEYS[1], 'balance', -tonumber(ARGV[1]))
redis.call('HINCRBY', KEYS[1], 'reserved', ARGV[1])
redis.call('HSET', KEYS[1], 'updated', ARGV[2])
local n = redis.call('HINCRBY', KEYS[2], 'reservations', 1)
local reserved = redis.call('HGET', KEYS[1], 'reserved')
return {balance, tonumber(reserved), n}
"""

Call = Callable[[list[str], list[int]], Awaitable[object]]


@dataclass
class Run:
    calls_per_s: float
    client_us: float
    redis_us: float


def keys_for(subscriber: int) -> list[str]:
    tag = f"{{b{subscriber % BUCKETS}}}"
    return [f"{tag}:acct:{subscriber}", f"{tag}:stats"]


async def redis_cpu(admin: redis.asyncio.Redis) -> float:
    info = await admin.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def measure(call: Call, admin: redis.asyncio.Redis, seconds: float, workers: int) -> Run:
    count = 0
    stop_at = 0.0

    async def worker() -> None:
        nonlocal count
        while time.monotonic() < stop_at:
            await call(keys_for(random.randrange(SUBSCRIBERS)), [1, 1_700_000_000_000])
            count += 1

    redis_before = await redis_cpu(admin)
    cpu_before, wall_before = time.process_time(), time.monotonic()
    stop_at = wall_before + seconds
    await asyncio.gather(*(worker() for _ in range(workers)))
    cpu, wall = time.process_time() - cpu_before, time.monotonic() - wall_before
    redis_used = await redis_cpu(admin) - redis_before
    return Run(count / wall, cpu / count * 1e6, redis_used / count * 1e6)


async def main(url: str, seconds: float, workers: int, rounds: int, append: bool) -> None:
    admin = redis.asyncio.Redis.from_url(url)
    redis_py = redis.asyncio.Redis.from_url(url)
    ours = PipelinedRedis.from_url(url)
    try:
        sha = await admin.script_load(SCRIPT)
        script = ours.register_script(SCRIPT)
        assert script.sha == sha

        async def call_redis_py(keys: list[str], args: list[int]) -> object:
            return await redis_py.evalsha(sha, 2, *keys, *args)

        clients: dict[str, Call] = {"redis-py evalsha": call_redis_py, "PipelinedRedis": script}
        results: dict[str, list[Run]] = {name: [] for name in clients}
        for call in clients.values():  # warm-up: connections, caches
            await measure(call, admin, 0.5, workers)
        for _ in range(rounds):
            for name, call in clients.items():
                results[name].append(await measure(call, admin, seconds, workers))
        writes = ours.writes
    finally:
        await ours.close()
        await redis_py.aclose()
        await admin.aclose()

    pairs = list(zip(results["redis-py evalsha"], results["PipelinedRedis"], strict=True))
    ratios_cpu = [b.client_us / f.client_us for b, f in pairs]
    ratios_rate = [f.calls_per_s / b.calls_per_s for b, f in pairs]
    lines = [
        f"{workers} callers in flight, one EVALSHA of a five-call script each, {seconds:g} s x "
        f"{rounds} rounds (clients alternating), medians; ratios taken within each round.",
        "",
        "| client | calls/s | client µs/call (CPU) | Redis µs/call (CPU) |",
        "|---|---:|---:|---:|",
    ]
    for name, runs in results.items():
        med = Run(*(statistics.median(getattr(r, f) for r in runs) for f in Run.__annotations__))
        lines.append(f"| {name} | {med.calls_per_s:,.0f} | {med.client_us:.1f} | "
                     f"{med.redis_us:.1f} |")  # fmt: skip
    lines += [
        "",
        f"Same-run ratio: PipelinedRedis spends {statistics.median(ratios_cpu):.1f}x less client "
        f"CPU per call than redis-py and serves {statistics.median(ratios_rate):.1f}x the "
        f"calls/s ({writes} socket writes in all).",
    ]
    print("\n".join(lines))
    if append:
        append_section("Redis client: PipelinedRedis vs redis-py (bench/redis_client.py)", lines,
                       libraries=("redis-py", "hiredis", "uvloop"))  # fmt: skip


def cli() -> None:
    """Parse arguments, start a private Redis, run the comparison under uvloop."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-append", action="store_true", help="do not append to RESULTS.md")
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(tmp, appendonly=False) as server:
        print(f"redis-server {server.version} on port {server.port}")
        uvloop.run(main(server.url, ns.seconds, ns.concurrency, ns.rounds, not ns.no_append))


if __name__ == "__main__":
    cli()
