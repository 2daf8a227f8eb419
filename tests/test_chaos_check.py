"""The chaos benchmark's money check (bench/chaos.py, ``check_money``) on a real Redis: the
driver's ledger agrees with what was applied, or the difference is counted to the
micro-unit, and an acknowledged request without its event is counted as lost."""

from __future__ import annotations

from bench.chaos import OPENING, Failover, Ledger, check_money
from ocs.store.store import Store


async def test_the_check_counts_what_the_ledger_and_the_balances_disagree_by(
    store: Store, redis_url: str
) -> None:
    for sub in ("1", "2", "3"):
        a = await store.create_subscriber(sub, plan="p", balance=OPENING, credit_limit=0,
                                          state="active", now=1)  # fmt: skip
        assert a.status == "OK"
    applied = await store.credit("1", kind="topup", amount=5, reference="topup:r1", now=2)
    assert applied.status == "OK"
    ledger = Ledger()
    # 1: the top-up the driver saw applied is there.
    ledger.topped["1"] += 5
    ledger.acked["1"] = ["topup:r1"]
    # 2: a top-up answered success that the balance does not have (the balance is lower
    # than the answers say).
    ledger.topped["2"] += 7
    ledger.acked["2"] = ["topup:r2"]
    # 3: a charge of 11 answered success that is not there (money lost to the operator).
    ledger.charged["3"] += 11
    ledger.acked["3"] = ["s-1/1"]
    out = Failover("one", "local")
    await check_money(redis_url, ["1", "2", "3"], ledger, out)
    assert (out.money_lost, out.money_over, out.subscribers_off) == (11, 7, 2)
    assert out.acked_lost == 2
    assert {p.split(":", 1)[0] for p in out.problems} == {"2", "3"}
    clean = Failover("one", "local")
    ledger.topped["2"] -= 7
    ledger.charged["3"] -= 11
    ledger.acked["2"] = ledger.acked["3"] = []
    await check_money(redis_url, ["1", "2", "3"], ledger, clean)
    assert (clean.money_lost, clean.money_over, clean.acked_lost, clean.problems) == (0, 0, 0, [])
