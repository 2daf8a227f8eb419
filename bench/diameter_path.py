"""The Diameter side of a CCR alone: CPU per CCR in one process, no Redis, no sockets.

What ``bench.diameter`` measures end to end includes the engine, rating, the store and the
Redis client, which the native protocol pays as well (docs/native-protocol.md, Speed). This
takes them out, to compare the Diameter side of two source trees on a busy machine where the
end-to-end figure wanders: bench.diameter's CCR-I/U/T (new Session-Id and a random subscriber
of 20,000 in every session) go through ``Framer.next_message``, ``validate`` and the real
``DiameterAgent`` (its plan lookups and rating calls on the shipped plans) over a stand-in for
the engine that grants what is asked at once, and the answer through ``Framer.send``. Each
tree runs in its own process (``PYTHONPATH``), the trees alternating; each figure is the best
of the rounds (``time.process_time``), the least disturbed by other work.

    .venv/bin/python -m bench.diameter_path BASE NEW [--rounds R] [--sessions N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TOP = 20_000


def _worker(sessions: int, rounds: int) -> list[float]:
    import random

    from bench.diameter import ccr
    from ocs.agents.diameter import DiameterAgent, GyConfig
    from ocs.charging.types import ChargeResult, Outcome
    from ocs.config import Settings
    from ocs.service import base_plans
    from protocols.diameter import Framer, RemotePeer, validate
    from tariffs import PlanBook, TariffRater

    rater = TariffRater(PlanBook(base_plans(Settings())))
    granted = ChargeResult(Outcome.SUCCESS, granted=60, validity=300)

    class Engine:
        """Grants what is asked, at once (the coroutines never wait)."""

        def __init__(self) -> None:
            self.rater = rater

        async def plan_of(self, subscriber: str) -> str:
            return "prepaid-basic"

        async def reserve_units(self, *args: Any, **kwargs: Any) -> ChargeResult:
            return granted

        async def settle(self, *args: Any, **kwargs: Any) -> ChargeResult:
            return granted

    agent = DiameterAgent(
        Engine(),  # type: ignore[arg-type]
        rater.book.at,
        GyConfig("ocs.bench", "bench"),
        clock=lambda: 1_800_000_000_000,
    )
    peer = RemotePeer("pgw.bench", "bench", (), 0, "bench", frozenset({4}), frozenset())
    rng = random.Random(7)
    data = []
    for s in range(sessions):
        sid, sub = f"pgw.bench;{rng.getrandbits(40)};{s}", f"4670{rng.randrange(TOP):07d}"
        for kind, number, used, rsu in ((1, 0, None, True), (2, 1, 30, True), (3, 2, 20, False)):
            m = ccr(sid, sub, kind, number, used, rsu)
            m.hop_by_hop = m.end_to_end = s
            data.append(m.to_bytes())
    framer = Framer(1 << 20)
    out = []
    for _ in range(rounds):
        t0 = time.process_time()
        for b in data:
            framer.receive_data(b)
            request = framer.next_message()
            assert not validate(request)  # type: ignore[arg-type]
            coro = agent(request, peer)  # type: ignore[arg-type]
            try:
                coro.send(None)
            except StopIteration as done:
                answer = done.value
            else:
                raise SystemExit("the agent waited for something")
            framer.send(answer)
        out.append((time.process_time() - t0) / len(data) * 1e6)
    assert answer.result_code == 2001, answer
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("trees", nargs="*", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=4000)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.worker:
        print(json.dumps(_worker(ns.sessions, 1)))
        return
    trees = [t.resolve() for t in ns.trees] or [Path.cwd()]
    best: dict[Path, list[float]] = {t: [] for t in trees}
    for rnd in range(ns.rounds):
        for tree in trees if rnd % 2 == 0 else trees[::-1]:
            env = {**os.environ, "PYTHONPATH": str(tree)}
            argv = [sys.executable, "-m", "bench.diameter_path", "--worker",
                    "--sessions", str(ns.sessions)]  # fmt: skip
            out = subprocess.run(argv, env=env, cwd=tree, capture_output=True, check=True)
            best[tree] += json.loads(out.stdout.decode().strip().splitlines()[-1])
    base = min(best[trees[0]])
    for tree in trees:
        b = min(best[tree])
        runs = ", ".join(f"{x:.1f}" for x in best[tree])
        print(f"{tree}: best {b:.1f} µs/CCR ({b / base:.2f}x the first tree; rounds {runs})")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
