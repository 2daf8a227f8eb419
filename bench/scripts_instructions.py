"""Instructions redis-server executes per charging request, and per subscriber when the
session answers are deleted, for two (or more) source trees (issue 17).

A count the shared machine does not disturb: the same workload gives the same count (within
~1%: the server's timers) whatever else runs. For each tree, a redis-server (AOF everysec)
runs under ``valgrind --tool=callgrind --instr-atstart=no``, driven by a child process whose
``PYTHONPATH`` is the tree, so that tree's ``Store`` and scripts are what run:

* ``hot``: N subscribers created, one session each (reserve -> commit with the next slice ->
  release, ``bench.charging``'s session), so that every account has been through the scripts
  once; then instrumentation on for S sessions on random subscribers, 16 in flight:
  instructions per request. ``used_memory`` per subscriber after the first sessions (their
  answers kept: a subscriber active within the session TTL).
* ``sweep``: the same with the session answers kept ``--ttl`` ms (1.5 s), then, once every
  answer is past its window, instrumentation on for the sweeper's step over every due
  subscriber (``Store.due_for_expiry`` and ``Store.expire``): instructions per subscriber
  (the passes that delete a quiet subscriber's answers: instructions over subscribers), and
  ``used_memory`` per subscriber after it.

Each count is given in all and "in commands" (what ``readQueryFromClient`` runs: the request
parsed, the script, its replies and AOF buffer), without the server's timers, whose share
grows with the run's wall time (the AOF's fsync every second, ``serverCron``): the ratios
are of the latter, the steadier.

    .venv/bin/python -m bench.scripts_instructions /work/main . [--subscribers N]
        [--sessions S] [--ttl MS]

Needs valgrind and redis-server on the PATH. Nothing is appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The child: run as a file with PYTHONPATH=tree, so ``bench`` and ``ocs`` are the tree's.
CHILD = """
import asyncio, json, random, subprocess, sys, time
import uvloop
from bench.charging import Meter, Prices, default_rater, msisdn, scripted_session
from ocs.charging.tariffs import TariffRegistry
from ocs.constants import IDEMPOTENCY_TTL_REFERENCE, IDEMPOTENCY_TTL_SESSION
from ocs.constants import BUCKET_COUNT
from ocs.store.redis_client import PipelinedRedis
from ocs.store.store import Store
from tariffs import load_plans

port, pid, phase, subs, sessions, ttl = sys.argv[1:7]
subs, sessions, ttl = int(subs), int(sessions), int(ttl)

def instrument(on):
    subprocess.run(["callgrind_control", "-i", "on" if on else "off", pid],
                   check=True, capture_output=True)

async def memory(c):
    info = (await c.execute("INFO", "memory")).decode()
    return int(info.split("used_memory:", 1)[1].split()[0])

async def main():
    async with PipelinedRedis.from_url(f"redis://127.0.0.1:{port}") as c:
        store = Store(c, session_ttl_ms=ttl if phase == "sweep" else IDEMPOTENCY_TTL_SESSION * 1000,
                      reference_ttl_ms=IDEMPOTENCY_TTL_REFERENCE * 1000)
        await store.load_scripts()
        await TariffRegistry(store, default_rater(), load_plans()).publish_thresholds()
        now = int(time.time() * 1000)
        for i in range(subs):
            await store.create_subscriber(msisdn(i), plan="prepaid-basic", balance=10**12,
                                          credit_limit=0, state="active", now=now)
        price, meter, out = Prices.of_plan(), Meter(), {}
        for i in range(subs):
            await scripted_session(store, price, msisdn(i), f"w.{i}", meter)
        out["memory_per_subscriber"] = await memory(c) / subs
        if phase == "hot":
            rng, todo = random.Random(7), iter(range(sessions))
            async def user():
                for i in todo:
                    sub = msisdn(rng.randrange(subs))
                    await scripted_session(store, price, sub, f"m.{i}", meter)
            instrument(True)
            await asyncio.gather(*(user() for _ in range(16)))
            instrument(False)
            out["requests"] = 3 * meter.sessions - 3 * subs
        else:
            await asyncio.sleep(ttl * 2.5 / 1000)
            swept = 0
            instrument(True)
            for b in range(BUCKET_COUNT):
                while due := await store.due_for_expiry(b, int(time.time() * 1000), 1000):
                    for sub in due:
                        await store.expire(sub, int(time.time() * 1000))
                        swept += 1
            instrument(False)
            out["swept"] = swept
            out["memory_after_per_subscriber"] = await memory(c) / subs
        out["failures"] = dict(meter.failures)
        print(json.dumps(out))

uvloop.run(main())
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(tree: Path, phase: str, ns: argparse.Namespace, work: Path) -> dict[str, float]:
    """One tree, one phase: the child's figures and the instructions callgrind counted."""
    port = _free_port()
    d = Path(tempfile.mkdtemp(dir=work))
    out = d / "callgrind.out"
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d),
         "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(600):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        child = d / "child.py"
        child.write_text(CHILD)
        env = {**os.environ, "PYTHONPATH": str(tree)}
        argv = [sys.executable, str(child), str(port), str(server.pid), phase,
                str(ns.subscribers), str(ns.sessions), str(ns.ttl)]  # fmt: skip
        done = subprocess.run(argv, env=env, cwd=tree, check=True, capture_output=True, text=True)
        figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        server.terminate()
        server.wait()
    total = 0
    for line in out.read_text().splitlines():
        if line.startswith("totals:"):
            total = int(line.split()[1])
    # The commands alone (what readQueryFromClient runs: parsing, the scripts, the replies,
    # the AOF's buffer), without the timers (serverCron, the AOF's fsync every second), whose
    # share grows with the run's wall time and so with the machine's load.
    annotated = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", str(out)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    commands = 0
    for line in annotated.splitlines():
        if ":readQueryFromClient " in line:
            commands = int(line.split()[0].replace(",", ""))
    if figures.pop("failures"):
        raise SystemExit(f"scripts_instructions: {tree}: failed sessions")
    per = figures["requests"] if phase == "hot" else ns.subscribers
    figures["instructions"] = total / per
    figures["commands"] = commands / per
    return figures


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    p.add_argument("trees", nargs="+", type=Path)
    p.add_argument("--subscribers", type=int, default=2000)
    p.add_argument("--sessions", type=int, default=300, help="measured sessions (hot phase)")
    p.add_argument("--ttl", type=int, default=1500, help="session TTL ms (sweep phase)")
    ns = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="scripts-instr-") as tmp:
        rows = []
        for tree in ns.trees:
            hot, sweep = (
                run(tree.resolve(), "hot", ns, Path(tmp)),
                run(tree.resolve(), "sweep", ns, Path(tmp)),
            )
            rows.append((tree, hot, sweep))
            print(f"{tree}: {hot['instructions']:,.0f} instructions per request "
                  f"({hot['commands']:,.0f} in commands), {sweep['instructions']:,.0f} per "
                  f"subscriber swept ({sweep['commands']:,.0f}); memory per subscriber "
                  f"{hot['memory_per_subscriber']:,.0f} B active, "
                  f"{sweep['memory_after_per_subscriber']:,.0f} B after the sweep",
                  flush=True)  # fmt: skip
    first = rows[0]
    print(
        "\n| tree | instructions / request (in commands) | ratio | / subscriber swept "
        "(in commands) | ratio | memory / active subscriber, B | after the sweep, B |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for tree, hot, sweep in rows:
        print(f"| {tree} | {hot['instructions']:,.0f} ({hot['commands']:,.0f}) "
              f"| {hot['commands'] / first[1]['commands']:.3f} "
              f"| {sweep['instructions']:,.0f} ({sweep['commands']:,.0f}) "
              f"| {sweep['commands'] / first[2]['commands']:.3f} "
              f"| {hot['memory_per_subscriber']:,.0f} "
              f"| {sweep['memory_after_per_subscriber']:,.0f} |")  # fmt: skip


if __name__ == "__main__":
    cli()
