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

import uvloop

from bench import charging as bc
from bench import diameter as bd
from bench.credentials import ocs_env
from ocs.redis_server import EmbeddedRedis


@contextlib.contextmanager
def ocs_from(
    tree: Path, url: str, work: Path, tag: str
) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    """`ocs serve` with ``tree``'s code: (process, native port, Diameter port)."""
    native, diameter = bc.free_port(), bc.free_port()
    log = work / f"ocs-{tag}.log"
    argv = [sys.executable, "-m", "ocs.cli", "serve", "--redis-url", url,
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
    ns = parser.parse_args()
    trees = [t.resolve() for t in ns.trees]
    common = {"subscribers": ns.subscribers, "inflight": ns.inflight, "warmup": 2.0,
              "duration": ns.duration}  # fmt: skip
    cpu: dict[Path, list[float]] = {t: [] for t in trees}
    #: OCS CPU / Redis CPU per request, each round: Redis does the same work for every tree,
    #: so its CPU per request gauges how slow the shared machine was in that round.
    rel: dict[Path, list[float]] = {t: [] for t in trees}
    with tempfile.TemporaryDirectory(prefix="ocs-compare-") as tmp, contextlib.ExitStack() as st:
        work = Path(tmp)
        server = EmbeddedRedis(work / "redis", extra_args=("--appendfsync", "everysec"))
        server.start()
        st.callback(server.stop)
        uvloop.run(bc.load_subscribers(server.url, ns.subscribers))
        procs = {}
        for i, tree in enumerate(trees):
            procs[tree] = proc, native, _ = st.enter_context(
                ocs_from(tree, server.url, work, f"{i}")
            )
            bc.run_worker(bc.Spec("prime", server.url, prefix=f"p{i}-", ocs_port=native,
                                  ocs_pid=proc.pid, **common))  # fmt: skip
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
                rel[tree].append(us / max(r.per_request_us(r.redis_cpu), 1e-9))
                user, system = ((a - b) / max(r.total_requests, 1) * 1e6
                                for a, b in zip(after, before, strict=True))  # fmt: skip
                print(f"round {rnd + 1} {tree}: {r.rate:8,.0f} req/s  OCS {us:6.1f} µs/req "
                      f"(whole run: user {user:.1f}, system {system:.1f})  Redis "
                      f"{r.per_request_us(r.redis_cpu):5.1f} µs/req  failures {r.failures}",
                      flush=True)  # fmt: skip
    base = statistics.median(cpu[trees[0]])
    base_rel = statistics.median(rel[trees[0]])
    for tree in trees:
        m, q = statistics.median(cpu[tree]), statistics.median(rel[tree])
        print(f"{tree}: median OCS CPU {m:.1f} µs/req, {m / base:.2f}x the first tree; "
              f"OCS/Redis CPU {q:.3f}, {q / base_rel:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
