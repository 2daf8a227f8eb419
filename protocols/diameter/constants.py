"""Command codes, application ids, flags, result codes, enumerations and limits of Diameter.

Sources: RFC 6733 (base protocol), RFC 4006 / RFC 8506 (credit control), RFC 3539 (watchdog),
3GPP TS 32.299 (Gy/Ro). AVP codes live in :mod:`protocols.diameter.dictionary` (the AVP
dictionary is their one home); everything else that is a number on the wire is here.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

# --- header ----------------------------------------------------------------------------------

#: RFC 6733 §3: the only protocol version.
VERSION: Final = 1
#: RFC 6733 §3: version (1) + length (3) + flags (1) + code (3) + application + hop + end.
HEADER_SIZE: Final = 20

#: Command flags (RFC 6733 §3).
FLAG_REQUEST: Final = 0x80
FLAG_PROXIABLE: Final = 0x40
FLAG_ERROR: Final = 0x20
FLAG_RETRANSMIT: Final = 0x10

#: AVP flags (RFC 6733 §4.1).
AVP_FLAG_VENDOR: Final = 0x80
AVP_FLAG_MANDATORY: Final = 0x40
AVP_FLAG_PROTECTED: Final = 0x20
#: The five reserved AVP flag bits: "MUST be set to zero" (RFC 6733 §4.1); set, they are
#: answered DIAMETER_INVALID_AVP_BITS (3009).
AVP_FLAGS_RESERVED: Final = 0x1F

# --- commands (RFC 6733 §3.1, RFC 4006 §3) ---------------------------------------------------

CMD_CAPABILITIES_EXCHANGE: Final = 257  # CER / CEA
CMD_RE_AUTH: Final = 258  # RAR / RAA
CMD_CREDIT_CONTROL: Final = 272  # CCR / CCA
CMD_ABORT_SESSION: Final = 274  # ASR / ASA
CMD_SESSION_TERMINATION: Final = 275  # STR / STA
CMD_DEVICE_WATCHDOG: Final = 280  # DWR / DWA
CMD_DISCONNECT_PEER: Final = 282  # DPR / DPA

#: Short names for logs: (command code, is request) -> "CCR".
COMMAND_NAMES: Final[dict[tuple[int, bool], str]] = {
    (CMD_CAPABILITIES_EXCHANGE, True): "CER",
    (CMD_CAPABILITIES_EXCHANGE, False): "CEA",
    (CMD_RE_AUTH, True): "RAR",
    (CMD_RE_AUTH, False): "RAA",
    (CMD_CREDIT_CONTROL, True): "CCR",
    (CMD_CREDIT_CONTROL, False): "CCA",
    (CMD_ABORT_SESSION, True): "ASR",
    (CMD_ABORT_SESSION, False): "ASA",
    (CMD_SESSION_TERMINATION, True): "STR",
    (CMD_SESSION_TERMINATION, False): "STA",
    (CMD_DEVICE_WATCHDOG, True): "DWR",
    (CMD_DEVICE_WATCHDOG, False): "DWA",
    (CMD_DISCONNECT_PEER, True): "DPR",
    (CMD_DISCONNECT_PEER, False): "DPA",
}

#: Commands of the base protocol's peer layer (application 0, never proxiable).
PEER_COMMANDS: Final = frozenset(
    {CMD_CAPABILITIES_EXCHANGE, CMD_DEVICE_WATCHDOG, CMD_DISCONNECT_PEER}
)

# --- applications and vendors ----------------------------------------------------------------

APP_DIAMETER_COMMON_MESSAGES: Final = 0
APP_CREDIT_CONTROL: Final = 4
#: RFC 6733 §2.4: a relay advertises this and shares every application.
APP_RELAY: Final = 0xFFFFFFFF

VENDOR_IETF: Final = 0
VENDOR_3GPP: Final = 10415

# --- result codes (RFC 6733 §7.1, RFC 4006 §9) ------------------------------------------------

DIAMETER_MULTI_ROUND_AUTH: Final = 1001
DIAMETER_SUCCESS: Final = 2001
DIAMETER_LIMITED_SUCCESS: Final = 2002
# Protocol errors: answered with the E-bit set (RFC 6733 §7.1.3, §7.2).
DIAMETER_COMMAND_UNSUPPORTED: Final = 3001
DIAMETER_UNABLE_TO_DELIVER: Final = 3002
DIAMETER_REALM_NOT_SERVED: Final = 3003
DIAMETER_TOO_BUSY: Final = 3004
DIAMETER_LOOP_DETECTED: Final = 3005
DIAMETER_REDIRECT_INDICATION: Final = 3006
DIAMETER_APPLICATION_UNSUPPORTED: Final = 3007
DIAMETER_INVALID_HDR_BITS: Final = 3008
DIAMETER_INVALID_AVP_BITS: Final = 3009
DIAMETER_UNKNOWN_PEER: Final = 3010
# Transient failures.
DIAMETER_AUTHENTICATION_REJECTED: Final = 4001
DIAMETER_OUT_OF_SPACE: Final = 4002
DIAMETER_ELECTION_LOST: Final = 4003
DIAMETER_END_USER_SERVICE_DENIED: Final = 4010
DIAMETER_CREDIT_CONTROL_NOT_APPLICABLE: Final = 4011
DIAMETER_CREDIT_LIMIT_REACHED: Final = 4012
# Permanent failures.
DIAMETER_AVP_UNSUPPORTED: Final = 5001
DIAMETER_UNKNOWN_SESSION_ID: Final = 5002
DIAMETER_AUTHORIZATION_REJECTED: Final = 5003
DIAMETER_INVALID_AVP_VALUE: Final = 5004
DIAMETER_MISSING_AVP: Final = 5005
DIAMETER_RESOURCES_EXCEEDED: Final = 5006
DIAMETER_CONTRADICTING_AVPS: Final = 5007
DIAMETER_AVP_NOT_ALLOWED: Final = 5008
DIAMETER_AVP_OCCURS_TOO_MANY_TIMES: Final = 5009
DIAMETER_NO_COMMON_APPLICATION: Final = 5010
DIAMETER_UNSUPPORTED_VERSION: Final = 5011
DIAMETER_UNABLE_TO_COMPLY: Final = 5012
DIAMETER_INVALID_BIT_IN_HEADER: Final = 5013
DIAMETER_INVALID_AVP_LENGTH: Final = 5014
DIAMETER_INVALID_MESSAGE_LENGTH: Final = 5015
DIAMETER_INVALID_AVP_BIT_COMBO: Final = 5016
DIAMETER_NO_COMMON_SECURITY: Final = 5017
DIAMETER_USER_UNKNOWN: Final = 5030
DIAMETER_RATING_FAILED: Final = 5031

#: Result code -> RFC name, for logs.
RESULT_CODE_NAMES: Final[dict[int, str]] = {
    value: name
    for name, value in list(globals().items())
    if name.startswith("DIAMETER_") and type(value) is int
}


def is_protocol_error(result_code: int) -> bool:
    """True for 3xxx codes, which are answered with the E-bit set (RFC 6733 §7.2)."""
    return 3000 <= result_code < 4000


# --- enumerations ----------------------------------------------------------------------------


class CcRequestType(IntEnum):
    """CC-Request-Type (RFC 4006 §8.3)."""

    INITIAL_REQUEST = 1
    UPDATE_REQUEST = 2
    TERMINATION_REQUEST = 3
    EVENT_REQUEST = 4


class RequestedAction(IntEnum):
    """Requested-Action (RFC 4006 §8.41)."""

    DIRECT_DEBITING = 0
    REFUND_ACCOUNT = 1
    CHECK_BALANCE = 2
    PRICE_ENQUIRY = 3


class ReportingReason(IntEnum):
    """Reporting-Reason (3GPP TS 32.299 §7.2.175)."""

    THRESHOLD = 0
    QHT = 1
    FINAL = 2
    QUOTA_EXHAUSTED = 3
    VALIDITY_TIME = 4
    OTHER_QUOTA_TYPE = 5
    RATING_CONDITION_CHANGE = 6
    FORCED_REAUTHORISATION = 7
    POOL_EXHAUSTED = 8
    UNUSED_QUOTA_TIMER = 9


class FinalUnitAction(IntEnum):
    """Final-Unit-Action (RFC 4006 §8.35)."""

    TERMINATE = 0
    REDIRECT = 1
    RESTRICT_ACCESS = 2


class SubscriptionIdType(IntEnum):
    """Subscription-Id-Type (RFC 4006 §8.47)."""

    END_USER_E164 = 0
    END_USER_IMSI = 1
    END_USER_SIP_URI = 2
    END_USER_NAI = 3
    END_USER_PRIVATE = 4


class DisconnectCause(IntEnum):
    """Disconnect-Cause (RFC 6733 §5.4.3)."""

    REBOOTING = 0
    BUSY = 1
    DO_NOT_WANT_TO_TALK_TO_YOU = 2


class CcSessionFailover(IntEnum):
    """CC-Session-Failover (RFC 4006 §8.4)."""

    FAILOVER_NOT_SUPPORTED = 0
    FAILOVER_SUPPORTED = 1


class CreditControlFailureHandling(IntEnum):
    """Credit-Control-Failure-Handling (RFC 4006 §8.14)."""

    TERMINATE = 0
    CONTINUE = 1
    RETRY_AND_TERMINATE = 2


class DirectDebitingFailureHandling(IntEnum):
    """Direct-Debiting-Failure-Handling (RFC 4006 §8.15)."""

    TERMINATE_OR_BUFFER = 0
    CONTINUE = 1


class MultipleServicesIndicator(IntEnum):
    """Multiple-Services-Indicator (RFC 4006 §8.40)."""

    MULTIPLE_SERVICES_NOT_SUPPORTED = 0
    MULTIPLE_SERVICES_SUPPORTED = 1


class CheckBalanceResult(IntEnum):
    """Check-Balance-Result (RFC 4006 §8.6)."""

    ENOUGH_CREDIT = 0
    NO_CREDIT = 1


class TariffChangeUsage(IntEnum):
    """Tariff-Change-Usage (RFC 4006 §8.27)."""

    UNIT_BEFORE_TARIFF_CHANGE = 0
    UNIT_AFTER_TARIFF_CHANGE = 1
    UNIT_INDETERMINATE = 2


class UserEquipmentInfoType(IntEnum):
    """User-Equipment-Info-Type (RFC 4006 §8.50)."""

    IMEISV = 0
    MAC = 1
    EUI64 = 2
    MODIFIED_EUI64 = 3


class RedirectAddressType(IntEnum):
    """Redirect-Address-Type (RFC 4006 §8.38)."""

    IPV4_ADDRESS = 0
    IPV6_ADDRESS = 1
    URL = 2
    SIP_URI = 3


class ReAuthRequestType(IntEnum):
    """Re-Auth-Request-Type (RFC 6733 §8.12)."""

    AUTHORIZE_ONLY = 0
    AUTHORIZE_AUTHENTICATE = 1


class AuthSessionState(IntEnum):
    """Auth-Session-State (RFC 6733 §8.11)."""

    STATE_MAINTAINED = 0
    NO_STATE_MAINTAINED = 1


class TerminationCause(IntEnum):
    """Termination-Cause (RFC 6733 §8.15)."""

    DIAMETER_LOGOUT = 1
    DIAMETER_SERVICE_NOT_PROVIDED = 2
    DIAMETER_BAD_ANSWER = 3
    DIAMETER_ADMINISTRATIVE = 4
    DIAMETER_LINK_BROKEN = 5
    DIAMETER_AUTH_EXPIRED = 6
    DIAMETER_USER_MOVED = 7
    DIAMETER_SESSION_TIMEOUT = 8


class InbandSecurityId(IntEnum):
    """Inband-Security-Id (RFC 6733 §6.10)."""

    NO_INBAND_SECURITY = 0
    TLS = 1


class TriggerType(IntEnum):
    """Trigger-Type (3GPP TS 32.299 §7.2.226), the values a Gy OCS uses most."""

    CHANGE_IN_SGSN_IP_ADDRESS = 1
    CHANGE_IN_QOS = 2
    CHANGE_IN_LOCATION = 3
    CHANGE_IN_RAT = 4
    CHANGE_IN_UE_TIMEZONE = 5


# --- limits and timers -----------------------------------------------------------------------

#: Default largest message accepted (header included). Larger: the connection is closed.
DEFAULT_MAX_MESSAGE_SIZE: Final = 64 * 1024
#: Smallest max_message_size a framer accepts: room for a CER/CEA with some addresses.
MIN_MAX_MESSAGE_SIZE: Final = 1024
#: The header's length field has 24 bits.
MAX_MESSAGE_LENGTH_FIELD: Final = 2**24 - 1
#: Deepest nesting of grouped AVPs decoded (Service-Information goes about 5 deep).
MAX_AVP_DEPTH: Final = 16
#: An Error-Message we send is cut to this many characters (it may quote hostile input).
MAX_ERROR_MESSAGE_LEN: Final = 200

#: RFC 3539 §3.4.1: Tw defaults to 30 s, MUST NOT be under 6 s, and gets +-2 s of jitter.
DEFAULT_WATCHDOG_INTERVAL: Final = 30.0
MIN_WATCHDOG_INTERVAL: Final = 6.0
WATCHDOG_JITTER: Final = 2.0
#: Seconds a new connection may take to send its CER before it is closed (local policy:
#: RFC 6733 §5.6 gives the responder no other way out of a silent connection).
DEFAULT_CER_TIMEOUT: Final = 10.0
#: Seconds a started message may wait for the rest of it before the connection is closed.
DEFAULT_FRAME_TIMEOUT: Final = 10.0
#: Seconds to wait for a CEA after sending a CER (the "Timeout" event of RFC 6733 §5.6).
DEFAULT_CEA_TIMEOUT: Final = 10.0
#: Seconds the Closing state waits for a DPA or for the peer to disconnect (RFC 6733 §5.6).
DEFAULT_CLOSING_TIMEOUT: Final = 5.0
