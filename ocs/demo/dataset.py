"""The demo data set: a few hundred subscribers on the shipped plans."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from ocs.charging.tariffs import bundle_buckets
from ocs.constants import MICRO
from ocs.store.store import Store
from tariffs import PlanBook


@dataclass(frozen=True, slots=True)
class DemoSubscriber:
    msisdn: str
    plan: str
    balance: int
    credit_limit: int


#: The overdraft the demo's overdraft subscribers may use (prepaid-basic bars outgoing calls
#: below -5.00 and lifts the bar above 0.00: tariffs/plans/prepaid-basic.toml).
OVERDRAFT: Final = 10 * MICRO


def overdrawn(s: DemoSubscriber) -> bool:
    """One of the subscribers who start in overdraft (see :func:`demo_subscribers`)."""
    return s.plan == "prepaid-basic" and s.credit_limit == OVERDRAFT


def demo_subscribers(count: int, seed: int = 7) -> Iterator[DemoSubscriber]:
    """Mostly consumer prepaid, some on a monthly bundle, some agencies on PAYU, and a quarter
    nearly out of credit, so the demo shows refusals within seconds; one in ten prepaid ones
    already in overdraft (-3.00 to -4.90 of a 10.00 credit limit), so that their real-time
    calls take them past -5.00 within seconds and the HLR bars them, until a top-up."""
    rng = random.Random(seed)
    for i in range(count):
        msisdn = f"4917{i:08d}"
        if i % 10 == 0:
            yield DemoSubscriber(msisdn, "gov-payu", 50 * MICRO, 10 * MICRO)
        elif i % 10 == 5:
            yield DemoSubscriber(
                msisdn, "prepaid-basic", -rng.randrange(300, 491) * MICRO // 100, OVERDRAFT
            )
        elif i % 4 == 0:
            yield DemoSubscriber(msisdn, "prepaid-basic", rng.randrange(5, 40) * MICRO // 100, 0)
        elif i % 3 == 0:
            yield DemoSubscriber(msisdn, "bundle-10", rng.randrange(0, 500) * MICRO // 100, 0)
        else:
            yield DemoSubscriber(
                msisdn, "prepaid-basic", rng.randrange(100, 2000) * MICRO // 100, 0
            )


async def load_demo_data(
    store: Store, count: int, now: int, book: PlanBook
) -> list[DemoSubscriber]:
    subs = list(demo_subscribers(count))
    for s in subs:
        await store.create_subscriber(
            s.msisdn, plan=s.plan, balance=s.balance, credit_limit=s.credit_limit,
            state="active", buckets=bundle_buckets(book, s.plan, now), now=now,
        )  # fmt: skip
    return subs
