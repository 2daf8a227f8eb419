"""Numbers of the SIGTRAN stack under CAP: M3UA (RFC 4666), SCCP (ITU-T Q.713), TCAP
(ITU-T Q.773) and CAP (3GPP TS 29.078). One place for every code, as the Diameter codec has."""

from __future__ import annotations

from enum import IntEnum
from typing import Final

# -- SCTP (RFC 4960 / RFC 6951) -------------------------------------------------------------------

#: Payload Protocol Identifier of M3UA (RFC 4666 §1.4.7).
M3UA_PPID: Final = 3
#: The registered M3UA port (RFC 4666 §1.4.8) and the SCTP-over-UDP port (RFC 6951 §5.1).
M3UA_PORT: Final = 2905
SCTP_UDP_PORT: Final = 9899

# -- M3UA (RFC 4666 §3) -----------------------------------------------------------------------

M3UA_VERSION: Final = 1
M3UA_HEADER: Final = 8
#: Largest M3UA message we accept (a DATA carries one SCCP message of at most ~4 kB).
M3UA_MAX_MESSAGE: Final = 65_536


class MsgClass(IntEnum):
    MGMT = 0
    TRANSFER = 1
    SSNM = 2
    ASPSM = 3
    ASPTM = 4
    RKM = 9


#: (class, type) of each message we know.
ERR: Final = (MsgClass.MGMT, 0)
NTFY: Final = (MsgClass.MGMT, 1)
DATA: Final = (MsgClass.TRANSFER, 1)
DUNA: Final = (MsgClass.SSNM, 1)
DAVA: Final = (MsgClass.SSNM, 2)
DAUD: Final = (MsgClass.SSNM, 3)
SCON: Final = (MsgClass.SSNM, 4)
DUPU: Final = (MsgClass.SSNM, 5)
DRST: Final = (MsgClass.SSNM, 6)
ASPUP: Final = (MsgClass.ASPSM, 1)
ASPDN: Final = (MsgClass.ASPSM, 2)
BEAT: Final = (MsgClass.ASPSM, 3)
ASPUP_ACK: Final = (MsgClass.ASPSM, 4)
ASPDN_ACK: Final = (MsgClass.ASPSM, 5)
BEAT_ACK: Final = (MsgClass.ASPSM, 6)
ASPAC: Final = (MsgClass.ASPTM, 1)
ASPIA: Final = (MsgClass.ASPTM, 2)
ASPAC_ACK: Final = (MsgClass.ASPTM, 3)
ASPIA_ACK: Final = (MsgClass.ASPTM, 4)

MESSAGE_NAMES: Final[dict[tuple[int, int], str]] = {
    ERR: "ERR", NTFY: "NTFY", DATA: "DATA", DUNA: "DUNA", DAVA: "DAVA", DAUD: "DAUD",
    SCON: "SCON", DUPU: "DUPU", DRST: "DRST", ASPUP: "ASPUP", ASPDN: "ASPDN", BEAT: "BEAT",
    ASPUP_ACK: "ASPUP_ACK", ASPDN_ACK: "ASPDN_ACK", BEAT_ACK: "BEAT_ACK", ASPAC: "ASPAC",
    ASPIA: "ASPIA", ASPAC_ACK: "ASPAC_ACK", ASPIA_ACK: "ASPIA_ACK",
}  # fmt: skip


class Tag(IntEnum):
    """Parameter tags (RFC 4666 §3.2)."""

    INFO_STRING = 0x0004
    ROUTING_CONTEXT = 0x0006
    DIAGNOSTIC_INFO = 0x0007
    HEARTBEAT_DATA = 0x0009
    TRAFFIC_MODE = 0x000B
    ERROR_CODE = 0x000C
    STATUS = 0x000D
    ASP_IDENTIFIER = 0x0011
    AFFECTED_POINT_CODE = 0x0012
    CORRELATION_ID = 0x0013
    NETWORK_APPEARANCE = 0x0200
    USER_CAUSE = 0x0204
    CONGESTION = 0x0205
    CONCERNED_DESTINATION = 0x0206
    ROUTING_KEY = 0x0207
    PROTOCOL_DATA = 0x0210


class ErrorCode(IntEnum):
    """M3UA Error Codes (RFC 4666 §3.8.1)."""

    INVALID_VERSION = 0x01
    UNSUPPORTED_MESSAGE_CLASS = 0x03
    UNSUPPORTED_MESSAGE_TYPE = 0x04
    UNSUPPORTED_TRAFFIC_MODE = 0x05
    UNEXPECTED_MESSAGE = 0x06
    PROTOCOL_ERROR = 0x07
    INVALID_STREAM_IDENTIFIER = 0x09
    REFUSED_MANAGEMENT_BLOCKING = 0x0D
    ASP_IDENTIFIER_REQUIRED = 0x0E
    INVALID_ASP_IDENTIFIER = 0x0F
    INVALID_PARAMETER_VALUE = 0x11
    PARAMETER_FIELD_ERROR = 0x12
    UNEXPECTED_PARAMETER = 0x13
    DESTINATION_STATUS_UNKNOWN = 0x14
    INVALID_NETWORK_APPEARANCE = 0x15
    MISSING_PARAMETER = 0x16
    INVALID_ROUTING_CONTEXT = 0x19
    NO_CONFIGURED_AS = 0x1A


#: NTFY Status Type / Information (RFC 4666 §3.8.2).
STATUS_AS_STATE_CHANGE: Final = 1
AS_INACTIVE: Final = 2
AS_ACTIVE: Final = 3
#: Traffic Mode Type: override.
TRAFFIC_OVERRIDE: Final = 1
#: Service Indicator of SCCP in the MTP3 routing label (Q.704 §14.2.1).
SI_SCCP: Final = 3
#: Network Indicator: international (0), national (2).
NI_INTERNATIONAL: Final = 0
NI_NATIONAL: Final = 2

# -- SCCP (Q.713) -----------------------------------------------------------------------------


class SccpType(IntEnum):
    UDT = 0x09
    UDTS = 0x0A
    XUDT = 0x11
    XUDTS = 0x12


#: Subsystem numbers (3GPP TS 23.003 §8.2): the gsmSCF, and the MSC/VLR as gsmSSF peers.
SSN_HLR: Final = 6
SSN_VLR: Final = 7
SSN_MSC: Final = 8
SSN_GSMSCF: Final = 146
SSN_GSMSSF: Final = 147
#: Protocol class 0 (basic connectionless) with "return message on error" (Q.713 §3.6).
CLASS0_RETURN: Final = 0x80
#: Global title indicator 0100: translation type, numbering plan, encoding, nature of address.
GTI_FULL: Final = 4
NP_E164: Final = 1
NAI_INTERNATIONAL: Final = 4
#: Return causes (Q.713 §3.12).
RC_NO_TRANSLATION_SPECIFIC: Final = 1
RC_SUBSYSTEM_FAILURE: Final = 3
RC_UNEQUIPPED_USER: Final = 4
RC_UNQUALIFIED: Final = 7
RC_ERROR_IN_MESSAGE_TRANSPORT: Final = 8
RC_ERROR_IN_LOCAL_PROCESSING: Final = 9

# -- TCAP (Q.773) ---------------------------------------------------------------------------------

#: The dialogue-as object identifier of the structured dialogue (Q.773 §4.2.3).
DIALOGUE_AS_ID: Final = (0, 0, 17, 773, 1, 1, 1)


class PAbortCause(IntEnum):
    UNRECOGNIZED_MESSAGE_TYPE = 0
    UNRECOGNIZED_TRANSACTION_ID = 1
    BADLY_FORMATTED_TRANSACTION_PORTION = 2
    INCORRECT_TRANSACTION_PORTION = 3
    RESOURCE_LIMITATION = 4


class GeneralProblem(IntEnum):
    UNRECOGNIZED_COMPONENT = 0
    MISTYPED_COMPONENT = 1
    BADLY_STRUCTURED_COMPONENT = 2


class InvokeProblem(IntEnum):
    DUPLICATE_INVOCATION = 0
    UNRECOGNIZED_OPERATION = 1
    MISTYPED_ARGUMENT = 2
    RESOURCE_LIMITATION = 3
    RELEASE_IN_PROGRESS = 4
    UNRECOGNIZED_LINKED_ID = 5
    LINKED_RESPONSE_UNEXPECTED = 6
    UNEXPECTED_LINKED_OPERATION = 7


# -- CAP (TS 29.078) ------------------------------------------------------------------------------


class Phase(IntEnum):
    """CAMEL phases by the application context the gsmSSF opens the dialogue with."""

    V2 = 2
    V3 = 3
    V4 = 4


#: gsmSSF-to-gsmSCF application contexts (TS 29.078 §5.4 / §6.5 / §7.5 object identifiers).
APPLICATION_CONTEXTS: Final[dict[tuple[int, ...], Phase]] = {
    (0, 4, 0, 0, 1, 0, 50, 1): Phase.V2,
    (0, 4, 0, 0, 1, 21, 3, 4): Phase.V3,
    (0, 4, 0, 0, 1, 22, 3, 4): Phase.V4,
}
AC_OF_PHASE: Final = {phase: oid for oid, phase in APPLICATION_CONTEXTS.items()}


class Op(IntEnum):
    """CAP operation codes (TS 29.078 CAP-operationcodes)."""

    INITIAL_DP = 0
    CONNECT = 20
    RELEASE_CALL = 22
    REQUEST_REPORT_BCSM_EVENT = 23
    EVENT_REPORT_BCSM = 24
    CONTINUE = 31
    APPLY_CHARGING = 35
    APPLY_CHARGING_REPORT = 36


#: The pycrate argument type of each operation (None: no argument).
ARGUMENT_TYPES: Final[dict[int, str | None]] = {
    Op.INITIAL_DP: "InitialDPArg",
    Op.CONNECT: "ConnectArg",
    Op.RELEASE_CALL: "ReleaseCallArg",
    Op.REQUEST_REPORT_BCSM_EVENT: "RequestReportBCSMEventArg",
    Op.EVENT_REPORT_BCSM: "EventReportBCSMArg",
    Op.CONTINUE: None,
    Op.APPLY_CHARGING: "ApplyChargingArg",
    Op.APPLY_CHARGING_REPORT: "ApplyChargingReportArg",
}

#: EventTypeBCSM values (TS 29.078 CAP-datatypes).
O_COLLECTED_INFO: Final = "collectedInfo"
T_ATTEMPT_AUTHORIZED: Final = "termAttemptAuthorized"
#: The events the gsmSCF arms for a prepaid call, per leg: (event, leg) -- leg 1 is the
#: calling party, leg 2 the called party (TS 23.078 §4.4.2).
O_EVENTS: Final = (
    ("routeSelectFailure", 2), ("oCalledPartyBusy", 2), ("oNoAnswer", 2), ("oAnswer", 2),
    ("oDisconnect", 1), ("oDisconnect", 2), ("oAbandon", 1),
)  # fmt: skip
T_EVENTS: Final = (
    ("tBusy", 2), ("tNoAnswer", 2), ("tAnswer", 2), ("tDisconnect", 1), ("tDisconnect", 2),
    ("tAbandon", 1),
)  # fmt: skip
#: Events that end a call that was never answered (nothing to charge).
UNANSWERED: Final = frozenset({
    "routeSelectFailure", "oCalledPartyBusy", "oNoAnswer", "oAbandon", "tBusy", "tNoAnswer",
    "tAbandon",
})  # fmt: skip
DISCONNECTS: Final = frozenset({"oDisconnect", "tDisconnect"})
ANSWERS: Final = frozenset({"oAnswer", "tAnswer"})

#: Q.850 cause values for ReleaseCall.
CAUSE_NORMAL_UNSPECIFIED: Final = 31
CAUSE_CALL_REJECTED: Final = 21
CAUSE_USER_BUSY: Final = 17
