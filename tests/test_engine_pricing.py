"""The engine rates each request at most once past the session's money cursor (issue 17):
the cost at the cursor the previous request ended on is remembered, so a commit rates its
usage and its next slice (2 cost() calls, was 4) and a release its usage (1, was 2), and the
amounts are the same as rating from scratch. The cost where the last slice ends is kept too,
so a report of the whole slice rates only the next one (1 call; a release, none)."""

from __future__ import annotations

from typing import Any

from test_engine import RATER, T0, Clock, add

from ocs.charging.engine import ChargingConfig, ChargingEngine
from ocs.charging.types import CommitRequest, ReleaseRequest, ReserveRequest
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


async def test_a_request_rates_at_most_once_past_the_cursor(store: Store) -> None:
    rater = CountingRater()
    engine = ChargingEngine(store, rater, ChargingConfig(validity=60, grace=10), clock=Clock())
    plain = ChargingEngine(store, RATER, ChargingConfig(validity=60, grace=10), clock=Clock())
    await add(store, "4900", 10_000_000, plan="per-minute")
    await add(store, "4901", 10_000_000, plan="per-minute")
    for e, sub in ((plain, "4901"), (engine, "4900")):
        await e.reserve(ReserveRequest(f"w{sub}", sub, "voice", f"w{sub}/0"))  # learns plans
    results = {}
    for e, sub in ((plain, "4901"), (engine, "4900")):
        sid = f"s{sub}"
        out = [await e.reserve(ReserveRequest(sid, sub, "voice", f"{sid}/0", units=60))]
        calls = []
        for i, used in enumerate((45, 70, 15), 1):
            before = rater.costs
            out.append(await e.commit(CommitRequest(sid, f"{sid}/{i}", used=used)))
            calls.append(rater.costs - before)
        before = rater.costs
        out.append(await e.release(ReleaseRequest(sid, f"{sid}/4", used=20)))
        calls.append(rater.costs - before)
        results[sub] = (out, calls)
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
    rater = CountingRater()
    engine = ChargingEngine(store, rater, ChargingConfig(validity=60, grace=10), clock=Clock())
    plain = ChargingEngine(store, RATER, ChargingConfig(validity=60, grace=10), clock=Clock())
    await add(store, "4910", 10_000_000, plan="per-minute")
    await add(store, "4911", 10_000_000, plan="per-minute")
    for e, sub in ((plain, "4911"), (engine, "4910")):
        await e.reserve(ReserveRequest(f"w{sub}", sub, "voice", f"w{sub}/0"))  # learns plans
    results = {}
    for e, sub in ((plain, "4911"), (engine, "4910")):
        sid = f"s{sub}"
        out = [await e.reserve(ReserveRequest(sid, sub, "voice", f"{sid}/0", units=60))]
        calls = []
        for i in (1, 2):
            before = rater.costs
            used = out[-1].granted  # the whole slice
            out.append(await e.commit(CommitRequest(sid, f"{sid}/{i}", used=used)))
            calls.append(rater.costs - before)
        before = rater.costs
        out.append(await e.release(ReleaseRequest(sid, f"{sid}/3", used=out[-1].granted)))
        calls.append(rater.costs - before)
        results[sub] = (out, calls)
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
