"""The demo data set: a few hundred subscribers on the shipped plans."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from ocs.constants import MICRO
from ocs.store.store import Store, UnitBucket


@dataclass(frozen=True, slots=True)
class DemoSubscriber:
    msisdn: str
    plan: str
    balance: int
    credit_limit: int
    buckets: tuple[UnitBucket, ...] = ()


def demo_subscribers(count: int, seed: int = 7) -> Iterator[DemoSubscriber]:
    """Mostly consumer prepaid, some agencies on PAYU, and some nearly out of credit, so the
    demo shows refusals within seconds."""
    rng = random.Random(seed)
    for i in range(count):
        msisdn = f"4917{i:08d}"
        if i % 10 == 0:
            yield DemoSubscriber(msisdn, "gov-payu", 50 * MICRO, 10 * MICRO)
        elif i % 4 == 0:
            # Nearly out of credit: a few calls and it is refused.
            yield DemoSubscriber(msisdn, "prepaid-basic", rng.randrange(5, 40) * MICRO // 100, 0)
        else:
            buckets = (UnitBucket("bonus-minutes", "voice", 120),) if i % 3 == 0 else ()
            yield DemoSubscriber(
                msisdn, "prepaid-basic", rng.randrange(100, 2000) * MICRO // 100, 0, buckets
            )


async def load_demo_data(store: Store, count: int, now: int) -> list[DemoSubscriber]:
    subs = list(demo_subscribers(count))
    for s in subs:
        await store.create_subscriber(
            s.msisdn, plan=s.plan, balance=s.balance, credit_limit=s.credit_limit,
            state="active", buckets=s.buckets, now=now,
        )  # fmt: skip
    return subs
