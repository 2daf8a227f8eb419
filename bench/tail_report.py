"""What ran when the tail happened: the timelines ``bench.compare_trees --open --trace DIR``
wrote, read side by side.

    .venv/bin/python -m bench.tail_report DIR [--worst N]

For each open-loop run (``gen-r<round>t<tree>-<rate>.json``, the generator's view: latency
per 100 ms, sessions it started late, Redis's AOF rewrite state) and the OCS of its tree
(``ocs-<tree>.json``, from ``bench/traced_serve.py``: garbage collections, event-loop stalls,
periodic passes), one line: the median and worst of the per-window p99, the collections by
generation (count, total and longest pause), the stalls, the generator's lateness, whether an
AOF rewrite ran. Then per tree, the same summed over its runs; and with ``--worst N``, the N
slowest windows of each run with what overlapped them.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_RUN = re.compile(r"gen-r(\d+)t(\d+)-(\d+)\.json")


@dataclass
class Tally:
    """Events of one kind inside the measured windows: how many, their time, the longest."""

    count: Counter[str] = field(default_factory=Counter)
    total: Counter[str] = field(default_factory=Counter)
    longest: Counter[str] = field(default_factory=Counter)

    def add(self, kind: str, seconds: float) -> None:
        self.count[kind] += 1
        self.total[kind] += seconds
        self.longest[kind] = max(self.longest[kind], seconds)

    def merge(self, other: Tally) -> None:
        for k in other.count:
            self.count[k] += other.count[k]
            self.total[k] += other.total[k]
            self.longest[k] = max(self.longest[k], other.longest[k])

    def text(self) -> str:
        return "  ".join(
            f"{k} {self.count[k]}x {self.total[k] * 1e3:.0f} ms (max {self.longest[k] * 1e3:.1f})"
            for k in sorted(self.count)
        )


def _kind(event: list[Any]) -> str:
    return f"gc{event[3]}" if event[0] == "gc" else str(event[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("dir", type=Path)
    parser.add_argument("--worst", type=int, default=0, help="the N slowest windows per run")
    ns = parser.parse_args()
    ocs: dict[int, list[list[Any]]] = {}
    for path in ns.dir.glob("ocs-*.json"):
        ocs[int(path.stem.split("-")[1])] = json.loads(path.read_text())["events"]
    per_tree: dict[tuple[int, int], Tally] = {}
    seconds: Counter[tuple[int, int]] = Counter()
    runs = sorted((tuple(map(int, m.groups())), p) for p in ns.dir.glob("gen-*.json")
                  if (m := _RUN.fullmatch(p.name)))  # fmt: skip
    for (rnd, tree, rate), path in runs:
        gen = json.loads(path.read_text())
        start, end = gen["start"], gen["end"]
        events = [e for e in ocs.get(tree, []) if start <= e[1] < end]
        tally = Tally()
        for e in events:
            tally.add(_kind(e), e[2])
        per_tree.setdefault((tree, rate), Tally()).merge(tally)
        seconds[(tree, rate)] += end - start
        bins = gen["bins"]
        late = [s for _, s in gen["late"]]
        rewrite = any(r[1] for r in gen["redis"])
        print(f"round {rnd + 1} tree {tree} at {rate}/s: window p99 median "
              f"{statistics.median(b[3] for b in bins):.1f} ms, worst window max "
              f"{max(b[4] for b in bins):.1f} ms; {tally.text()}; generator late "
              f"{len(late)}x (max {max(late, default=0) * 1e3:.0f} ms)"
              f"{'; AOF REWRITE' if rewrite else ''}")  # fmt: skip
        for b in sorted(sorted(bins, key=lambda b: -b[4])[: ns.worst]):
            t = b[0]
            near = [e for e in events if t - 0.15 <= e[1] <= t + 0.1]
            what = ", ".join(f"{_kind(e)} {e[2] * 1e3:.1f} ms at {(e[1] - t) * 1e3:+.0f}"
                             for e in near if e[0] != "stall" or e[2] > 0.004)  # fmt: skip
            print(f"    +{t - start:5.1f} s: {b[1]} requests, p50 {b[2]:.1f}, p99 {b[3]:.1f}, "
                  f"max {b[4]:.1f} ms | {what or '-'}")  # fmt: skip
    for (tree, rate), tally in sorted(per_tree.items()):
        print(f"tree {tree} at {rate}/s, {seconds[(tree, rate)]:.0f} s measured: {tally.text()}")


if __name__ == "__main__":
    main()
