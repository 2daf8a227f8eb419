"""The traffic model: what a population of subscribers does to the network, in simulated time.

* Sessions arrive as a Poisson process (exponential gaps) at each network element.
* A call or data session lasts an exponential holding time (mean ``mean_holding``, 100 s by
  default, as telephone traffic engineering has it); a data session moves octets at a rate of
  its own (exponential, mean ``mean_data_rate``), so its volume is the product.
* The network element reports usage when the granted units are used up or the grant's
  validity ends, whichever comes first, and at the end of the session (RFC 4006 §5.2, what a
  PGW or an MSC with CAMEL does); the last report of a final grant ends the session.
* An SMS is one direct debit.
* Simulated seconds last ``time_factor`` real seconds: 0.05 turns a 100-second call into 5
  real seconds, so a one-minute run sees calls start, report and end. 0 means no waiting at
  all (capacity runs: requests back to back).

Nothing here does I/O; the random source is passed in.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Final

from ocs.constants import MICRO
from ocs.demo.dataset import demo_subscribers
from tariffs import PlanBook, load_plans

KINDS: Final = ("voice", "data", "sms")
#: Diameter identifiers of each kind (the shipped plans map them to their services).
RATING_GROUP: Final = {"voice": 100, "data": 10, "sms": 200}
SERVICE_CONTEXT: Final = {
    "voice": "32260@3gpp.org",
    "data": "32251@3gpp.org",
    "sms": "32274@3gpp.org",
}

#: Called numbers as handsets dial them, with weights: national, mobile, abroad, toll-free.
DESTINATIONS: Final = (
    ("030 1234567", 30),
    ("0171 2345678", 45),
    ("+33 1 23456789", 8),
    ("001 212 5550100", 4),
    ("0800 1234567", 3),
)
#: The same numbers as Diameter carries them (Called-Party-Address, E.164 in a tel: URI).
TEL_URI: Final = {
    "030 1234567": "tel:+49301234567",
    "0171 2345678": "tel:+491712345678",
    "+33 1 23456789": "tel:+33123456789",
    "001 212 5550100": "tel:+12125550100",
    "0800 1234567": "tel:+498001234567",
}
#: Where the subscriber is (MCC+MNC): home, roaming in the EU, further away.
LOCATIONS: Final = (("26201", 92), ("20810", 6), ("310260", 2))
#: SMS recipients.
RECIPIENTS: Final = (("491712345678", 80), ("33612345678", 15), ("12125550100", 5))
#: Top-up amounts (micro-units) and weights.
TOPUPS: Final = ((5 * MICRO, 40), (10 * MICRO, 40), (20 * MICRO, 20))


@dataclass(frozen=True, slots=True)
class Traffic:
    """The shape of the load (what each network element does)."""

    #: Real seconds per simulated second (0: no waits at all).
    time_factor: float = 0.05
    #: Mean holding time of calls and data sessions, simulated seconds.
    mean_holding: float = 100.0
    #: Mean rate of a data session, octets per simulated second.
    mean_data_rate: float = 30_000.0
    #: Relative weights of new voice calls, data sessions and SMS.
    voice: float = 55.0
    data: float = 25.0
    sms: float = 20.0

    def __post_init__(self) -> None:
        if self.time_factor < 0:
            raise ValueError("time factor must be 0 or more")
        if self.mean_holding <= 0 or self.mean_data_rate <= 0:
            raise ValueError("mean holding time and data rate must be positive")
        if min(self.voice, self.data, self.sms) < 0 or self.voice + self.data + self.sms <= 0:
            raise ValueError("the mix needs non-negative weights, not all 0")

    def kind(self, rng: random.Random) -> str:
        """What the next arrival is: voice, data or sms."""
        return rng.choices(KINDS, (self.voice, self.data, self.sms))[0]

    def holding(self, rng: random.Random) -> int:
        """A holding time in whole simulated seconds (at least 1)."""
        return max(1, round(rng.expovariate(1 / self.mean_holding)))

    def data_rate(self, rng: random.Random) -> int:
        """Octets per simulated second of one data session (at least 1)."""
        return max(1, round(rng.expovariate(1 / self.mean_data_rate)))

    def requests_per_session(
        self, voice_quota: int = 60, data_quota: int = 5_000_000, validity: int = 300
    ) -> float:
        """About how many charging requests one arrival makes, for sizing (the shipped
        ``prepaid-basic`` quotas by default): a session reserves, reports once per full grant
        it outlives (E[floor(H/t)] = p/(1-p) with p = exp(-t/mean) for a grant lasting t
        seconds) and releases; an SMS is one request. Refusals make it fewer."""
        import math

        def session(seconds_per_grant: float) -> float:
            p = math.exp(-min(seconds_per_grant, validity) / self.mean_holding)
            return 2 + p / (1 - p)

        total = self.voice + self.data + self.sms
        voice = self.voice * session(voice_quota)
        data = self.data * session(data_quota / self.mean_data_rate)
        return (voice + data + self.sms) / total


def slice_plan(granted: int, left: int, validity: int, rate: int = 1) -> tuple[int, float, bool]:
    """The next report of a session: (units used, simulated seconds until it, session ends).

    ``granted``: units granted now; ``left``: simulated seconds the session still lasts;
    ``validity``: seconds the grant is valid (0: unknown, no limit); ``rate``: units per
    simulated second (1 for voice, octets per second for data). The report comes when the
    grant is used up, the validity ends or the session ends, whichever is first.
    """
    seconds = float(left)
    if rate > 0 and granted >= 0:
        seconds = min(seconds, granted / rate)
    if validity > 0:
        seconds = min(seconds, float(validity))
    used = min(granted, round(seconds * rate))
    ends = seconds >= left
    return used, seconds, ends


def pick(rng: random.Random, table: Sequence[tuple[str, int]]) -> str:
    return rng.choices([v for v, _ in table], [w for _, w in table])[0]


def topup_amount(rng: random.Random) -> int:
    return rng.choices([a for a, _ in TOPUPS], [w for _, w in TOPUPS])[0]


@dataclass(frozen=True, slots=True)
class Subscriber:
    msisdn: str
    plan: str
    balance: int
    credit_limit: int


@cache
def population(count: int) -> tuple[Subscriber, ...]:
    """The load population: the demo's mix at scale (mostly consumer prepaid, some on a monthly
    bundle, some agencies on pay-as-you-use, a quarter nearly out of credit), the same in every
    process for the same ``count``."""
    if count < 1:
        raise ValueError("the population needs at least one subscriber")
    return tuple(
        Subscriber(s.msisdn, s.plan, s.balance, s.credit_limit) for s in demo_subscribers(count)
    )


@cache
def diameter_kinds(plan: str, at_ms: int = 0) -> frozenset[str]:
    """The kinds a plan's services map from Diameter rating groups (a plan without a network
    mapping for SMS or data answers those with 5031, so Diameter sessions avoid them)."""
    book = PlanBook(load_plans())
    version = book.at(plan, at_ms) if at_ms else book.versions(plan)[-1]
    return frozenset(k for k in KINDS if version.service_for(rating_group=RATING_GROUP[k]))
