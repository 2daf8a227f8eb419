"""``ocs serve`` with a timeline of what ran inside it, for finding what makes the tail.

    python bench/traced_serve.py TRACE.json serve --redis-url ... (the rest as for ``ocs``)

Run as a script (not ``-m``) so that it serves whichever tree ``PYTHONPATH`` names
(``bench.compare_trees --open`` runs the old tree and the new one through it). It records,
on ``time.monotonic()`` (the clock the load generator's timeline uses, so the two line up):

* every garbage collection of generation 1 or 2, and any of generation 0 over 1 ms:
  start, duration, generation, objects collected;
* event-loop stalls: a callback due every millisecond that ran more than 2 ms late (a loop
  turn that long handled something: many requests at once, a collection, a periodic pass);
* each pass of the expiry sweeper and the threshold catch-up (start and duration);

and writes them as JSON to TRACE.json when the process exits (SIGTERM included), with the
collector's statistics and the objects it tracks then, per generation. What it adds per
request is nothing: the hooks run per collection, per millisecond and per pass.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import json
import sys
import time
from typing import Any

_events: list[list[Any]] = []
_gc_start: list[float] = [0.0]


def _on_gc(phase: str, info: dict[str, int]) -> None:
    now = time.monotonic()
    if phase == "start":
        _gc_start[0] = now
        return
    took = now - _gc_start[0]
    gen = info["generation"]
    if gen > 0 or took > 0.001:
        _events.append(["gc", _gc_start[0], took, gen, info.get("collected", 0)])


def _watch_loop(loop: asyncio.AbstractEventLoop) -> None:
    period, late = 0.001, 0.002
    due = [time.monotonic() + period]

    def tick() -> None:
        now = time.monotonic()
        lag = now - due[0]
        if lag > late:
            _events.append(["stall", due[0], lag])
        due[0] = now + period
        loop.call_later(period, tick)

    loop.call_later(period, tick)


def _wrap_passes() -> None:
    from ocs.charging import sweeper

    for cls in (sweeper.ExpirySweeper, sweeper.ThresholdCatchUp):
        original = cls.step

        async def step(self: Any, _original: Any = original, _name: str = cls.name) -> None:
            t0 = time.monotonic()
            try:
                await _original(self)
            finally:
                _events.append(["pass", t0, time.monotonic() - t0, _name])

        cls.step = step  # type: ignore[method-assign]


def main() -> None:
    out, argv = sys.argv[1], sys.argv[2:]

    def dump() -> None:
        # (what the collector tracks at the end, by generation: each gen-2 collection walks
        # the third, each gen-1 the first two; gc.get_stats: collections so far)
        tracked = [len(gc.get_objects(g)) for g in range(3)]
        with open(out, "w") as f:
            json.dump({"gc_threshold": gc.get_threshold(), "gc_stats": gc.get_stats(),
                       "tracked": tracked, "frozen": gc.get_freeze_count(),
                       "events": _events}, f)  # fmt: skip

    atexit.register(dump)
    gc.callbacks.append(_on_gc)
    _wrap_passes()
    from ocs import clikit

    original_run = clikit.run

    def run(coro: Any) -> Any:
        async def traced() -> Any:
            _watch_loop(asyncio.get_running_loop())
            return await coro

        return original_run(traced())

    clikit.run = run  # type: ignore[assignment]
    import ocs.cli

    ocs.cli._run = run  # type: ignore[attr-defined]
    sys.exit(ocs.cli.main(argv))


if __name__ == "__main__":
    main()
