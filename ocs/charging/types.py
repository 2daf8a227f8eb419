"""The charging vocabulary shared by every protocol: requests, results and outcomes.

Agents (native, Diameter, CAMEL-like) translate their messages into these values and back;
nothing here knows a protocol or a Redis key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from ocs.constants import DEFAULT_VALIDITY, EXPIRY_GRACE


class Outcome(StrEnum):
    """The result of a charging request. Every reply carries exactly one."""

    SUCCESS = "success"
    #: Not enough credit (balance + credit limit - held) for even one unit.
    CREDIT_LIMIT_REACHED = "credit-limit-reached"
    USER_UNKNOWN = "user-unknown"
    #: Barred or suspended for this service.
    SERVICE_DENIED = "service-denied"
    RATING_FAILED = "rating-failed"
    UNKNOWN_SESSION = "unknown-session"
    INVALID_REQUEST = "invalid-request"
    STORE_UNAVAILABLE = "store-unavailable"


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """Optional rating inputs that arrive with a session's first request."""

    destination: str = ""
    location: str = ""


@dataclass(frozen=True, slots=True)
class ReserveRequest:
    """Start a session (or add a slice to it): hold credit for up to ``units`` units.

    ``units`` None means "the server decides" (the service's default quota).
    ``request_key`` makes the request idempotent: a replay returns the first answer.
    """

    session_id: str
    subscriber: str
    service: str
    request_key: str
    units: int | None = None
    info: SessionInfo = SessionInfo()
    #: Unix ms; None = now.
    at: int | None = None
    #: The agent's protocol (native, diameter, camel): the label of the session's hold in
    #: the metrics (:meth:`ChargingEngine.holds`); nothing else reads it.
    protocol: str = ""


@dataclass(frozen=True, slots=True)
class CommitRequest:
    """Report ``used`` units of a session (debit them) and, unless ``next_units`` is 0,
    reserve the next slice in the same step. ``next_units`` None = the default quota."""

    session_id: str
    request_key: str
    used: int
    next_units: int | None = None
    at: int | None = None
    #: As in :class:`ReserveRequest` (a session this process did not open takes it from here).
    protocol: str = ""


@dataclass(frozen=True, slots=True)
class ReleaseRequest:
    """End a session: debit the final ``used`` units and free what is left of the hold."""

    session_id: str
    request_key: str
    used: int = 0
    at: int | None = None


@dataclass(frozen=True, slots=True)
class DebitRequest:
    """A one-shot event (an SMS, a content purchase): rate and debit ``units`` at once.

    ``force`` debits even past the credit limit: the usage already happened (CDRs).
    """

    subscriber: str
    service: str
    request_key: str
    units: int = 1
    info: SessionInfo = SessionInfo()
    force: bool = False
    at: int | None = None


@dataclass(slots=True)
class ChargeResult:
    """The answer to reserve, commit, release and debit (read-only by convention: it is built
    once per request on the hot path, where a frozen dataclass costs measurably more).

    ``granted``: units granted for the next slice (0 when none); ``final``: the grant is the
    last one the credit allows (Diameter Final-Unit-Indication); ``charged``: money debited
    by this request; ``from_buckets``: units taken from unit buckets by this request;
    ``balance``: the balance after the request; ``validity``: seconds the grant is valid.
    """

    outcome: Outcome
    granted: int = 0
    final: bool = False
    charged: int = 0
    from_buckets: int = 0
    balance: int = 0
    validity: int = 0
    detail: str = ""
    #: The answer is the stored one of an earlier request under the same key (nothing was
    #: done now). Not compared: a replay equals the answer it repeats.
    replayed: bool = field(default=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.SUCCESS


@dataclass(slots=True)
class BalanceResult:
    outcome: Outcome
    balance: int = 0
    reserved: int = 0
    available: int = 0
    credit_limit: int = 0
    state: str = ""
    plan: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ChargingConfig:
    """The charging engine's settings (here, not in the engine's module, so that reading the
    configuration does not import the engine, the store and their Redis clients)."""

    #: Seconds a grant is valid (Diameter Validity-Time).
    validity: int = DEFAULT_VALIDITY
    #: Seconds past validity before an unreported grant is released.
    grace: int = EXPIRY_GRACE
    #: Entries in each of the plan and session caches before their oldest sixteenth goes.
    cache_size: int = 200_000
