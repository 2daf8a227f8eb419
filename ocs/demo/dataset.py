"""The demo data set: a few hundred subscribers on the shipped plans."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

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


def demo_subscribers(count: int, seed: int = 7) -> Iterator[DemoSubscriber]:
    """Mostly consumer prepaid, some on a monthly bundle, some agencies on PAYU, and a quarter
    nearly out of credit, so the demo shows refusals within seconds."""
    rng = random.Random(seed)
    for i in range(count):
        msisdn = f"4917{i:08d}"
        if i % 10 == 0:
            yield DemoSubscriber(msisdn, "gov-payu", 50 * MICRO, 10 * MICRO)
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
