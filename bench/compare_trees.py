"""The OCS's CPU per request for two (or more) source trees, in the same run.

One private redis-server (AOF everysec) holds N subscribers; an ``ocs serve`` runs from each
tree (``PYTHONPATH`` and the working directory set to it, the same interpreter and packages),
is primed with one debit per subscriber, then the trees take turns (the order alternating
by round) under the same closed-loop load as ``bench.charging`` (native reserve -> commit ->
release) or ``bench.diameter`` (CCR-I/U/T, ``--diameter``). Each run prints the OCS's CPU per
request (``/proc/<pid>/stat`` over the measured window) and its user/system split over the
whole run; the medians and their ratio to the first tree end the output, and so do those of
the OCS's CPU over Redis's per request (Redis serves every tree the same scripts, so its CPU
per request says how slow the shared machine was in that round: the ratio is the steadier
figure when the load swings between rounds). On a machine shared
with other work, CPU per request of two trees in one run is the figure to compare
(docs/architecture.md, Performance, point 6); requests/s are shown but not compared.

    .venv/bin/python -m bench.compare_trees /work/main . [--diameter] [--rounds R]
        [--duration S] [--subscribers N] [--inflight N] [--profile PREFIX]

``--profile PREFIX`` records each tree's OCS with py-spy (installed separately) during the
first round, as raw stacks in ``PREFIX-<i>.txt``. Nothing is appended to bench/RESULTS.md.

``--open RATE [RATE ...]`` compares the tail instead: each tree's OCS at those offered
loads (bench.charging's open loop, native), trees and rates in turns, Redis's AOF rewritten
before every run; medians and ranges of p99, p99.9 and max. ``--trace DIR`` runs each OCS
through ``bench/traced_serve.py`` (its collections, loop stalls and periodic passes) and
writes each run's timeline (latency per 100 ms, the generator's lateness, Redis's rewrites)
to DIR, for ``python -m bench.tail_report DIR``.

    .venv/bin/python -m bench.compare_trees /work/main . --open 6000 9000 --rounds 5 \
        [--trace DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import uvloop

from bench import charging as bc
from bench import diameter as bd
from bench.credentials import ocs_env
from ocs.redis_server import EmbeddedRedis

#: Runs ``ocs serve`` and records what ran inside it (``--trace``).
TRACED_SERVE: Final = Path(__file__).with_name("traced_serve.py")


@contextlib.contextmanager
def ocs_from(
    tree: Path, url: str, work: Path, tag: str, trace: Path | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    """`ocs serve` with ``tree``'s code: (process, native port, Diameter port); with
    ``trace``, through ``bench/traced_serve.py``, which writes its timeline there on exit."""
    native, diameter = bc.free_port(), bc.free_port()
    log = work / f"ocs-{tag}.log"
    entry = [str(TRACED_SERVE), str(trace)] if trace else ["-m", "ocs.cli"]
    argv = [sys.executable, *entry, "serve", "--redis-url", url,
            "--native-port", str(native), "--http-port", "0"]  # fmt: skip
    env = {**os.environ, **ocs_env(), "OCS_DATA_DIR": str(work / f"data-{tag}"),
           "PYTHONPATH": str(tree), "OCS_DIAMETER_PORT": str(diameter),
           "OCS_LOG_LEVEL": "WARNING"}  # fmt: skip
    with open(log, "wb") as out:
        proc = bc._spawn(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tree)
    try:
        uvloop.run(bc._wait_ready(proc, native, log))
        yield proc, native, diameter
    finally:
        bc._stop(proc, 15)


def start_trees(
    trees: list[Path],
    ns: argparse.Namespace,
    work: Path,
    stack: contextlib.ExitStack,
    common: dict[str, Any],
    trace: Path | None = None,
) -> tuple[EmbeddedRedis, dict[Path, tuple[subprocess.Popen[bytes], int, int]]]:
    """One private redis-server (AOF everysec) with the subscribers, and an ``ocs serve``
    from each tree, primed with one debit per subscriber; all stopped by ``stack``."""
    server = EmbeddedRedis(work / "redis", extra_args=("--appendfsync", "everysec"))
    server.start()
    stack.callback(server.stop)
    uvloop.run(bc.load_subscribers(server.url, ns.subscribers))
    procs = {}
    for i, tree in enumerate(trees):
        traced = trace / f"ocs-{i}.json" if trace else None
        procs[tree] = proc, native, _ = stack.enter_context(
            ocs_from(tree, server.url, work, f"{i}", traced)
        )
        bc.run_worker(bc.Spec("prime", server.url, prefix=f"p{i}-", ocs_port=native,
                              ocs_pid=proc.pid, **common))  # fmt: skip
    return server, procs


def user_system(pid: int) -> tuple[float, float]:
    rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(rest[11]) / bc.CLK_TCK, int(rest[12]) / bc.CLK_TCK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("trees", nargs="+", type=Path, help="source trees (the first: base)")
    parser.add_argument("--diameter", action="store_true", help="Gy CCRs instead of native")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--profile", default="", help="py-spy raw stacks to PREFIX-<i>.txt")
    parser.add_argument("--open", type=float, nargs="+", default=[], metavar="RATE",
                        help="instead: open-loop runs at these offered requests/s, native; "
                        "the trees' p99, p99.9 and max compared")  # fmt: skip
    parser.add_argument("--trace", type=Path, default=None, metavar="DIR",
                        help="with --open: each OCS through bench/traced_serve.py, and each "
                        "run's timeline, as JSON files in DIR")  # fmt: skip
    ns = parser.parse_args()
    if ns.open:
        open_loop(ns)
        return
    trees = [t.resolve() for t in ns.trees]
    common = {"subscribers": ns.subscribers, "inflight": ns.inflight, "warmup": 2.0,
              "duration": ns.duration}  # fmt: skip
    cpu: dict[Path, list[float]] = {t: [] for t in trees}
    #: OCS CPU / Redis CPU per request, each round: Redis does the same work for every tree,
    #: so its CPU per request gauges how slow the shared machine was in that round.
    rel: dict[Path, list[float]] = {t: [] for t in trees}
    p99: dict[Path, list[float]] = {t: [] for t in trees}
    with tempfile.TemporaryDirectory(prefix="ocs-compare-") as tmp, contextlib.ExitStack() as st:
        server, procs = start_trees(trees, ns, Path(tmp), st, common)
        for rnd in range(ns.rounds):
            for tree in trees if rnd % 2 == 0 else trees[::-1]:
                i = trees.index(tree)
                proc, native, diameter = procs[tree]
                spy = None
                if ns.profile and rnd == 0:
                    spy = subprocess.Popen(
                        ["py-spy", "record", "-p", str(proc.pid), "-d", str(int(ns.duration)),
                         "-r", "250", "-f", "raw", "-o", f"{ns.profile}-{i}.txt",
                         "--nonblocking"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    )  # fmt: skip
                before = user_system(proc.pid)
                prefix, seed = f"r{rnd}t{i}-", 100 + rnd
                if ns.diameter:
                    spec = bc.Spec("diameter", server.url, prefix=prefix, seed=seed,
                                   ocs_port=diameter, ocs_pid=proc.pid, **common)  # fmt: skip
                    r = bd.run_diameter_worker(spec)
                else:
                    spec = bc.Spec("closed", server.url, prefix=prefix, seed=seed,
                                   ocs_port=native, ocs_pid=proc.pid, **common)  # fmt: skip
                    r = bc.run_worker(spec)
                after = user_system(proc.pid)
                if spy is not None:
                    spy.wait()
                us = r.per_request_us(r.ocs_cpu)
                cpu[tree].append(us)
                p99[tree].append(r.p99_ms)
                rel[tree].append(us / max(r.per_request_us(r.redis_cpu), 1e-9))
                user, system = ((a - b) / max(r.total_requests, 1) * 1e6
                                for a, b in zip(after, before, strict=True))  # fmt: skip
                print(f"round {rnd + 1} {tree}: {r.rate:8,.0f} req/s  p99 {r.p99_ms:6.2f} ms  "
                      f"OCS {us:6.1f} µs/req "
                      f"(whole run: user {user:.1f}, system {system:.1f})  Redis "
                      f"{r.per_request_us(r.redis_cpu):5.1f} µs/req  failures {r.failures}",
                      flush=True)  # fmt: skip
    base = statistics.median(cpu[trees[0]])
    base_rel = statistics.median(rel[trees[0]])
    for tree in trees:
        m, q = statistics.median(cpu[tree]), statistics.median(rel[tree])
        print(f"{tree}: median OCS CPU {m:.1f} µs/req, {m / base:.2f}x the first tree; "
              f"OCS/Redis CPU {q:.3f}, {q / base_rel:.2f}x; p99 {_spread(p99[tree])} ms "
              "(closed loop)")  # fmt: skip


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def open_loop(ns: argparse.Namespace) -> None:
    """``--open``: each tree's OCS at fixed offered loads (bench.charging's open loop), the
    trees and the rates taking turns, the order alternating by round; per tree and rate the
    medians (and ranges) of p99, p99.9 and max latency, and of the OCS's CPU per request.
    Redis rewrites its AOF before each run (``rewrite_aof_now``), so that no automatic
    rewrite lands in one tree's window and not the other's."""
    trees = [t.resolve() for t in ns.trees]
    common = {"subscribers": ns.subscribers, "inflight": ns.inflight, "warmup": 2.0,
              "duration": ns.duration}  # fmt: skip
    runs: dict[tuple[Path, float], list[bc.Outcome]] = {(t, r): [] for t in trees for r in ns.open}
    if ns.trace:
        ns.trace.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ocs-compare-") as tmp, contextlib.ExitStack() as st:
        server, procs = start_trees(trees, ns, Path(tmp), st, common, ns.trace)
        for rnd in range(ns.rounds):
            for tree in trees if rnd % 2 == 0 else trees[::-1]:
                i = trees.index(tree)
                proc, native, _ = procs[tree]
                for rate in ns.open:
                    name = f"r{rnd}t{i}-{rate:.0f}"
                    timeline = str(ns.trace / f"gen-{name}.json") if ns.trace else ""
                    spec = bc.Spec("open", server.url, prefix=f"{name}-", seed=100 + rnd,
                                   ocs_port=native, ocs_pid=proc.pid, rate=rate,
                                   timeline=timeline, **common)  # fmt: skip
                    uvloop.run(bc.rewrite_aof_now(server.url))
                    r = bc.run_worker(spec)
                    runs[(tree, rate)].append(r)
                    print(f"round {rnd + 1} {tree} at {rate:,.0f}/s: {r.rate:8,.0f} req/s  "
                          f"p50 {r.p50_ms:.2f}  p99 {r.p99_ms:.2f} (from due {r.p99_due_ms:.2f})  "
                          f"p99.9 {r.p999_ms:.2f}  "
                          f"max {r.max_ms:.1f} ms  OCS {r.per_request_us(r.ocs_cpu):.1f} µs/req  "
                          f"dropped {r.dropped}  AOF rewrite {r.aof_rewrites}  "
                          f"load {os.getloadavg()[0]:.1f}  failures {r.failures}",
                          flush=True)  # fmt: skip
    for rate in ns.open:
        base = statistics.median(r.p99_ms for r in runs[(trees[0], rate)])
        for tree in trees:
            rs = runs[(tree, rate)]
            p99 = [r.p99_ms for r in rs]
            print(f"{rate:,.0f}/s {tree}: p99 {_spread(p99)} ms "
                  f"({statistics.median(p99) / base:.2f}x the first tree; from the sessions' due "
                  f"times {_spread([r.p99_due_ms for r in rs])}), "
                  f"p99.9 {_spread([r.p999_ms for r in rs])}, "
                  f"max {_spread([r.max_ms for r in rs])}, "
                  f"OCS {_spread([r.per_request_us(r.ocs_cpu) for r in rs])} µs/req, "
                  f"achieved {statistics.median(r.rate for r in rs):,.0f}/s "
                  f"(median of {len(rs)}; ranges in brackets)")  # fmt: skip


if __name__ == "__main__":
    main()
