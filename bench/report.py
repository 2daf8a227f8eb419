"""One section of bench/RESULTS.md for a library comparison: when, which commit, on what
machine and how loaded, then the run's own lines (tables, same-run ratios)."""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence

from bench.charging import RESULTS, git_commit, machine


def append_section(title: str, lines: Sequence[str], *, libraries: Sequence[str] = ()) -> None:
    """Append ``## title: <time> (commit ...)``, the machine line and ``lines``; print where."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    m = machine()
    load1, _, _ = os.getloadavg()
    versions = "".join(f", {name} {m[name]}" for name in libraries if name in m)
    head = [
        f"## {title}: {now} (commit {git_commit()})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, load average {load1:.1f} at the end (shared, "
        f"noisy: read the same-run ratios); Python {m['python']}{versions}.",
        "",
    ]
    with open(RESULTS, "a", encoding="utf-8") as f:
        f.write("\n" + "\n".join([*head, *lines]) + "\n")
    print(f"appended to {RESULTS}")
