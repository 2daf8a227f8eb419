"""The cost of counting one charging request: ocs.metrics.Metrics.observe (plain dicts) against
prometheus_client's Counter + Histogram with cached label children, the cheapest way to use the
library, and against the library in multiprocess mode (PROMETHEUS_MULTIPROC_DIR, what
``--workers N`` would need with it). One process, the same labels; the variants alternate over
R rounds and the medians of CPU time per observation (``time.process_time``) are reported, with
their ratio to ours. ``python -m bench.metrics [--rounds R] [--n N]``; appends to
bench/RESULTS.md unless ``--no-record``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from ocs.metrics import LATENCY_BUCKETS, Metrics

RESULTS = Path(__file__).with_name("RESULTS.md")
#: (protocol, verb, outcome) tuples a busy OCS sees, cycled through.
LABELS = [("native", v, o) for v in ("reserve", "commit", "release", "debit")
          for o in ("success", "credit_limit_reached")]  # fmt: skip


def ours() -> Callable[[int], None]:
    m = Metrics()

    def run(n: int) -> None:
        observe, labels, k = m.observe, LABELS, len(LABELS)
        for i in range(n):
            p, v, o = labels[i % k]
            observe(p, v, o, 0.0003)

    return run


def library() -> Callable[[int], None]:
    from prometheus_client import CollectorRegistry, Counter, Histogram

    reg = CollectorRegistry()
    c = Counter("b_requests", "x", ("protocol", "verb", "outcome"), registry=reg)
    h = Histogram("b_seconds", "x", ("protocol", "verb"), buckets=LATENCY_BUCKETS, registry=reg)
    children = {lab: (c.labels(*lab), h.labels(lab[0], lab[1])) for lab in LABELS}

    def run(n: int) -> None:
        labels, k = LABELS, len(LABELS)
        for i in range(n):
            cc, hh = children[labels[i % k]]
            cc.inc()
            hh.observe(0.0003)

    return run


VARIANTS: dict[str, Callable[[], Callable[[int], None]]] = {
    "ocs.metrics": ours,
    "prometheus_client": library,
}


def _time(fn: Callable[[int], None], n: int) -> float:
    fn(1000)  # warm
    t0 = time.process_time()
    fn(n)
    return (time.process_time() - t0) / n * 1e6


def _multiprocess(n: int) -> float:
    """The library in multiprocess mode, in a child (the mode is chosen at import)."""
    with tempfile.TemporaryDirectory() as d:
        code = "import sys, bench.metrics as b; print(b._time(b.library(), int(sys.argv[1])))"
        out = subprocess.run([sys.executable, "-c", code, str(n)], check=True, text=True,
                             capture_output=True, env={**os.environ,
                                                       "PROMETHEUS_MULTIPROC_DIR": d})  # fmt: skip
        return float(out.stdout.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    results: dict[str, list[float]] = {name: [] for name in (*VARIANTS, "multiprocess")}
    for _ in range(args.rounds):
        for name, make in VARIANTS.items():
            results[name].append(_time(make(), args.n))
        results["multiprocess"].append(_multiprocess(args.n // 4))
    med = {k: statistics.median(v) for k, v in results.items()}
    base = med["ocs.metrics"]
    rows = [f"| {k} | {med[k]:.2f} | {med[k] / base:.1f}x | "
            f"{', '.join(f'{x:.2f}' for x in results[k])} |" for k in results]  # fmt: skip
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()  # fmt: skip
    text = "\n".join(
        [
            f"\n## {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: metrics observation cost "
            f"(commit {commit})",
            "",
            f"`python -m bench.metrics`: CPU µs per observed request (one counter increment and "
            f"one histogram observation, {len(LABELS)} label sets cycled), median of "
            f"{args.rounds} alternating rounds of {args.n:,} (multiprocess: {args.n // 4:,}); "
            f"Python {platform.python_version()}, {platform.machine()}, shared noisy machine.",
            "",
            "| variant | µs/observation (median) | vs ocs.metrics | rounds |",
            "|---|---:|---:|---|",
            *rows,
            "",
        ]
    )
    print(text)
    if not args.no_record:
        with RESULTS.open("a", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
