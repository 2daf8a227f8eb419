"""The small interface between the charging engine and rating.

Rating is cumulative by design: ``cost(ctx, n)`` is the price of a session's first ``n`` units,
so the engine debits ``cost(n_total) - cost(n_previous)`` for each report, and a session cut
into any number of reports costs exactly what one report of the same total costs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class UnitKind(StrEnum):
    """What a service counts."""

    SECONDS = "seconds"
    OCTETS = "octets"
    EVENTS = "events"


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """What the engine needs to know of a service under a plan."""

    name: str
    unit: UnitKind
    #: Units granted per reservation when the request does not say (or asks for more).
    default_quota: int
    #: Outgoing services are refused while the subscriber is barred-outgoing.
    outgoing: bool = True
    #: The service costs nothing under this plan (a grant is still given, nothing is held).
    free: bool = False


@dataclass(frozen=True, slots=True)
class UsageContext:
    """Everything rating may look at for one session or event. Times are Unix milliseconds."""

    plan: str
    service: str
    subscriber: str = ""
    started_at: int = 0
    destination: str = ""
    location: str = ""
    extra: tuple[tuple[str, str], ...] = field(default=())


class Rater(Protocol):
    """Rating as the charging engine sees it. Implementations are pure and synchronous."""

    def service(self, ctx: UsageContext) -> ServiceSpec:
        """The service's spec under the context's plan; raises RatingError if there is none."""
        ...

    def cost(self, ctx: UsageContext, units: int) -> int:
        """Cumulative cost in micro-units of the first ``units`` units of a session."""
        ...

    def affordable(self, ctx: UsageContext, money: int, used: int, limit: int | None = None) -> int:
        """The largest ``n <= limit`` with ``cost(used + n) - cost(used) <= money`` (exact: one
        more unit would not fit). Without a limit, a large bound stands in when units are
        free."""
        ...

    def forget(self, ctx: UsageContext) -> None:
        """The caller is done with ``ctx`` (its session ended, its event is charged): drop
        what was kept to rate it again, so that what a rater holds is bounded by the open
        sessions, not by the sessions seen. Rating ``ctx`` afterwards still works."""
        ...
