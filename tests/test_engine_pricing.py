"""The engine rates each request at most once past the session's money cursor (issue 17):
the cost at the cursor the previous request ended on is remembered, so a commit rates its
usage and its next slice (2 cost() calls, was 4) and a release its usage (1, was 2), and the
amounts are the same as rating from scratch. The cost where the last slice ends is kept too,
so a report of the whole slice rates only the next one (1 call; a release, none)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from test_engine import RATER, T0, Clock, add

from ocs.charging.engine import ChargingConfig, ChargingEngine
from ocs.charging.types import ChargeResult, CommitRequest, ReleaseRequest, ReserveRequest
from ocs.store.store import Store
from tariffs.interface import UsageContext


class CountingRater:
    """The test rater, counting cost() calls."""

    def __init__(self) -> None:
        self.costs = 0

    def cost(self, ctx: UsageContext, units: int) -> int:
        self.costs += 1
        return RATER.cost(ctx, units)

    def __getattr__(self, name: str) -> Any:
        return getattr(RATER, name)


async def counted_and_plain(
    store: Store, counted: str, plain: str
) -> tuple[CountingRater, list[tuple[ChargingEngine, str]]]:
    """An engine rating through a CountingRater for subscriber ``counted`` and one rating
    plainly for ``plain`` (the reference), each having learnt its subscriber's plan."""
    rater = CountingRater()
    config = ChargingConfig(validity=60, grace=10)
    pairs = [
        (ChargingEngine(store, RATER, config, clock=Clock()), plain),
        (ChargingEngine(store, rater, config, clock=Clock()), counted),
    ]
    for e, sub in pairs:
        await add(store, sub, 10_000_000, plan="per-minute")
        await e.reserve(ReserveRequest(f"w{sub}", sub, "voice", f"w{sub}/0"))  # learns plans
    return rater, pairs


async def run_session(
    e: ChargingEngine, sub: str, rater: CountingRater, usages: list[Callable[[ChargeResult], int]]
) -> tuple[list[ChargeResult], list[int]]:
    """Reserve 60 units, then a commit for each of ``usages`` but the last and a release for
    the last (each gives the usage from the previous answer): the answers, and the cost()
    calls of each request after the reserve."""
    sid = f"s{sub}"
    out = [await e.reserve(ReserveRequest(sid, sub, "voice", f"{sid}/0", units=60))]
    calls = []
    for i, usage in enumerate(usages, 1):
        before = rater.costs
        used = usage(out[-1])
        if i < len(usages):
            out.append(await e.commit(CommitRequest(sid, f"{sid}/{i}", used=used)))
        else:
            out.append(await e.release(ReleaseRequest(sid, f"{sid}/{i}", used=used)))
        calls.append(rater.costs - before)
    return out, calls


async def test_a_request_rates_at_most_once_past_the_cursor(store: Store) -> None:
    rater, pairs = await counted_and_plain(store, "4900", "4901")
    results = {
        sub: await run_session(e, sub, rater, [lambda _, n=n: n for n in (45, 70, 15, 20)])
        for e, sub in pairs
    }
    (plain_out, _), (out, calls) = results["4901"], results["4900"]
    assert [(r.outcome, r.granted, r.charged) for r in out] == [
        (r.outcome, r.granted, r.charged) for r in plain_out
    ]
    assert sum(r.charged for r in out) == RATER.cost(
        UsageContext(plan="per-minute", service="voice", subscriber="4900", started_at=T0),
        45 + 70 + 15 + 20,
    )
    assert calls == [2, 2, 2, 1]
    a = await store.get_account("4900")
    assert a is not None and a.balance == 10_000_000 - sum(r.charged for r in out)


async def test_a_commit_that_used_its_whole_slice_rates_once(store: Store) -> None:
    """The cost where the slice granted last ends is remembered too: a commit that used all
    of it rates only its next slice (1 call), and the amounts are those rated from scratch."""
    rater, pairs = await counted_and_plain(store, "4910", "4911")
    whole: Callable[[ChargeResult], int] = lambda last: last.granted  # noqa: E731
    results = {sub: await run_session(e, sub, rater, [whole] * 3) for e, sub in pairs}
    (plain_out, _), (out, calls) = results["4911"], results["4910"]
    assert [(r.outcome, r.granted, r.charged) for r in out] == [
        (r.outcome, r.granted, r.charged) for r in plain_out
    ]
    used = out[0].granted + out[1].granted + out[2].granted
    assert sum(r.charged for r in out) == RATER.cost(
        UsageContext(plan="per-minute", service="voice", subscriber="4910", started_at=T0), used
    )
    assert calls == [1, 1, 0]
    a = await store.get_account("4910")
    assert a is not None and a.balance == 10_000_000 - sum(r.charged for r in out)
