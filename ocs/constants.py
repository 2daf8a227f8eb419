"""Key prefixes, stream names and default limits of the OCS, in one place."""

from __future__ import annotations

from typing import Final

#: Money is an integer count of micro-units (10^-6 of the currency unit).
MICRO: Final = 1_000_000
#: Decimal places accepted when a human writes an amount ("12.50", "0.000001").
MONEY_DECIMALS: Final = 6
#: Largest absolute amount or unit count accepted anywhere (10^15 micro-units = 10^9 currency
#: units). Lua numbers are doubles, exact to 2^53; this keeps every sum far below that.
MAX_AMOUNT: Final = 10**15
MAX_UNITS: Final = 10**15

#: Subscribers are spread over a fixed number of buckets; each key carries the bucket's hash
#: tag `{b<N>}` so that one subscriber's keys, its bucket's outbox and expiry index share one
#: Redis Cluster slot. Changing this number re-homes every subscriber: treat it as fixed.
BUCKET_COUNT: Final = 64
KEY_PREFIX: Final = "ocs"

#: Idempotency answers are kept this long (seconds): long enough for any retransmission or
#: failover of a session request, long for references that people type (top-ups).
IDEMPOTENCY_TTL_SESSION: Final = 900
IDEMPOTENCY_TTL_REFERENCE: Final = 7 * 24 * 3600

#: Hot billing's plausibility limits (seconds): a call longer than this is not believed, nor
#: one whose callDuration differs from its release minus answer time by more than the
#: tolerance (TS 32.298 TimeStamps have second precision).
MAX_CALL_DURATION: Final = 4 * 3600
DURATION_TOLERANCE: Final = 2

#: Subscriber states.
STATE_ACTIVE: Final = "active"
STATE_BARRED_OUTGOING: Final = "barred-outgoing"
STATE_BARRED_ALL: Final = "barred-all"
STATE_SUSPENDED: Final = "suspended"
STATES: Final = (STATE_ACTIVE, STATE_BARRED_OUTGOING, STATE_BARRED_ALL, STATE_SUSPENDED)

#: Default listener ports.
NATIVE_PORT: Final = 3869
HTTP_PORT: Final = 8080
#: Seconds an HTTP connection may go without a complete request (from its start or its last
#: answer), and seconds a request body may take to arrive.
HTTP_IDLE_TIMEOUT: Final = 75.0
HTTP_BODY_TIMEOUT: Final = 30.0
DIAMETER_PORT: Final = 3868

#: Default reservation validity (seconds) and sweeper cadence.
DEFAULT_VALIDITY: Final = 300
SWEEP_INTERVAL: Final = 1.0
#: After a reservation's validity, how long it is kept before it is released (seconds): the
#: gateway may be a little late with its report.
EXPIRY_GRACE: Final = 30

#: The levels of the government hierarchy billing and the dashboard add figures up by, from
#: the top (a region holds agencies, an agency accounts).
SCOPE_LEVELS: Final = ("national", "region", "agency", "account")
