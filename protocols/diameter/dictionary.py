"""The AVP dictionary, as data: code, vendor, name, type and the rule for the M-bit.

Three tables: the RFC 6733 base AVPs, the RFC 4006 / RFC 8506 credit-control AVPs (with the few
RADIUS-derived AVPs that Gy carries), and the 3GPP AVPs (vendor 10415) of TS 32.299 (Gy, the
Service-Information tree for PS, IMS, SMS and MMTel), TS 29.061 (3GPP-* attributes) and the
TS 29.212 QoS AVPs that PS-Information holds. Every grouped AVP here has its members here too:
the decoder walks into known grouped AVPs, and an unknown member sent with the M-bit is answered
with 5001 (RFC 6733 §4.1), so a grouped AVP without its members would do harm.

Codes and types were cross-checked against python-diameter's dictionary and Wireshark's
(``tests/test_diameter_codec.py`` and ``tests/test_diameter_wireshark.py`` keep them so).
Names follow the RFC or TS (Wireshark says ``3GPP-Reporting-Reason`` for TS 32.299's
``Reporting-Reason``).

The M-bit rule is what we *send*: ``MUST`` sets the bit, ``MAY`` and ``MUST_NOT`` leave it
clear. On receipt the bit is not checked against the rule (RFC 6733 §4.1 only makes an
unknown M-bit AVP an error).

Occurrence rules (:data:`COMMAND_RULES`, :data:`GROUPED_RULES`) are the command and grouped-AVP
ABNF of RFC 6733, RFC 4006 / RFC 8506 and TS 32.299, written here as the specifications write
them (``{ Origin-Host }``, ``*[ Subscription-Id ]``, ``1*{ Host-IP-Address }``) and read by
:func:`abnf` (RFC 6733 §3.2 grammar). ``validate`` in the codec checks every message against
them, members of grouped AVPs included: too few is 5005, too many 5009 (RFC 6733 §7.1.5).
Every rule set ends in ``*[ AVP ]`` in the specifications (other AVPs may follow), so only the
AVPs named are counted. The TS 32.299 information groups list the members this OCS reads and
the ones beside them whose occurrence is plain; a member left out is not counted.
:data:`ENUMERATIONS` holds the values of the enumerated AVPs the OCS acts on (5004 otherwise).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

from protocols.diameter.constants import (
    AVP_FLAG_MANDATORY,
    AVP_FLAG_VENDOR,
    CMD_ABORT_SESSION,
    CMD_CAPABILITIES_EXCHANGE,
    CMD_CREDIT_CONTROL,
    CMD_DEVICE_WATCHDOG,
    CMD_DISCONNECT_PEER,
    CMD_RE_AUTH,
    VENDOR_3GPP,
    CcRequestType,
    DisconnectCause,
    MultipleServicesIndicator,
    ReAuthRequestType,
    RequestedAction,
    SubscriptionIdType,
)

__all__ = [
    "AVPS",
    "BY_KEY",
    "BY_NAME",
    "COMMAND_RULES",
    "ENUMERATIONS",
    "ERROR_ANSWER_RULES",
    "FIXED_SIZES",
    "GROUPED_RULES",
    "UNBOUNDED",
    "AvpDef",
    "AvpType",
    "MRule",
    "Occurs",
    "abnf",
    "avp_key",
    "lookup",
]


class AvpType(IntEnum):
    """The RFC 6733 §4.2-4.3 data formats (derived ones where they decode differently)."""

    OCTET_STRING = 0
    INTEGER32 = 1
    INTEGER64 = 2
    UNSIGNED32 = 3
    UNSIGNED64 = 4
    FLOAT32 = 5
    FLOAT64 = 6
    GROUPED = 7
    ADDRESS = 8
    TIME = 9
    UTF8STRING = 10
    DIAMETER_IDENTITY = 11
    DIAMETER_URI = 12
    ENUMERATED = 13
    IP_FILTER_RULE = 14


#: Data size of the fixed-size types (RFC 6733 §4.2-4.3).
FIXED_SIZES: Final[dict[AvpType, int]] = {
    AvpType.INTEGER32: 4,
    AvpType.INTEGER64: 8,
    AvpType.UNSIGNED32: 4,
    AvpType.UNSIGNED64: 8,
    AvpType.FLOAT32: 4,
    AvpType.FLOAT64: 8,
    AvpType.TIME: 4,
    AvpType.ENUMERATED: 4,
}


class MRule(IntEnum):
    """The AVP's rule for the M-bit (the "AVP Flag rules" tables of each specification)."""

    MUST = 0
    MAY = 1
    MUST_NOT = 2


def avp_key(code: int, vendor: int = 0) -> int:
    """One int naming an AVP: the vendor id above the code (both are 32-bit)."""
    return (vendor << 32) | code


@dataclass(frozen=True, slots=True)
class AvpDef:
    """One AVP of the dictionary."""

    code: int
    name: str
    type: AvpType
    vendor: int = 0
    m: MRule = MRule.MUST
    #: ``avp_key(code, vendor)``.
    key: int = field(init=False, repr=False, compare=False)
    #: The AVP flags we send: V when there is a vendor, M when the rule is MUST.
    flags: int = field(init=False, repr=False, compare=False)
    #: The data size of a fixed-size type (4 or 8 bytes); 0 for the others.
    size: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", avp_key(self.code, self.vendor))
        flags = (AVP_FLAG_VENDOR if self.vendor else 0) | (
            AVP_FLAG_MANDATORY if self.m is MRule.MUST else 0
        )
        object.__setattr__(self, "flags", flags)
        object.__setattr__(self, "size", FIXED_SIZES.get(self.type, 0))


_O = AvpType.OCTET_STRING
_I32 = AvpType.INTEGER32
_I64 = AvpType.INTEGER64
_U32 = AvpType.UNSIGNED32
_U64 = AvpType.UNSIGNED64
_F32 = AvpType.FLOAT32
_F64 = AvpType.FLOAT64
_G = AvpType.GROUPED
_A = AvpType.ADDRESS
_T = AvpType.TIME
_S = AvpType.UTF8STRING
_ID = AvpType.DIAMETER_IDENTITY
_URI = AvpType.DIAMETER_URI
_E = AvpType.ENUMERATED
_IPF = AvpType.IP_FILTER_RULE
_MUST = MRule.MUST
_MAY = MRule.MAY
_NOT = MRule.MUST_NOT

#: RFC 6733 §4.5 (and the RADIUS attributes it reuses): name, code, type, M-bit rule.
_BASE: Final[tuple[tuple[str, int, AvpType, MRule], ...]] = (
    ("User-Name", 1, _S, _MUST),
    ("Class", 25, _O, _MUST),
    ("Session-Timeout", 27, _U32, _MUST),
    ("Proxy-State", 33, _O, _MUST),
    ("Acct-Session-Id", 44, _O, _MUST),
    ("Acct-Multi-Session-Id", 50, _S, _MUST),
    ("Event-Timestamp", 55, _T, _MUST),
    ("Acct-Interim-Interval", 85, _U32, _MUST),
    ("Host-IP-Address", 257, _A, _MUST),
    ("Auth-Application-Id", 258, _U32, _MUST),
    ("Acct-Application-Id", 259, _U32, _MUST),
    ("Vendor-Specific-Application-Id", 260, _G, _MUST),
    ("Redirect-Host-Usage", 261, _E, _MUST),
    ("Redirect-Max-Cache-Time", 262, _U32, _MUST),
    ("Session-Id", 263, _S, _MUST),
    ("Origin-Host", 264, _ID, _MUST),
    ("Supported-Vendor-Id", 265, _U32, _MUST),
    ("Vendor-Id", 266, _U32, _MUST),
    ("Firmware-Revision", 267, _U32, _NOT),
    ("Result-Code", 268, _U32, _MUST),
    ("Product-Name", 269, _S, _NOT),
    ("Session-Binding", 270, _U32, _MUST),
    ("Session-Server-Failover", 271, _E, _MUST),
    ("Multi-Round-Time-Out", 272, _U32, _MUST),
    ("Disconnect-Cause", 273, _E, _MUST),
    ("Auth-Request-Type", 274, _E, _MUST),
    ("Auth-Grace-Period", 276, _U32, _MUST),
    ("Auth-Session-State", 277, _E, _MUST),
    ("Origin-State-Id", 278, _U32, _MUST),
    ("Failed-AVP", 279, _G, _MUST),
    ("Proxy-Host", 280, _ID, _MUST),
    ("Error-Message", 281, _S, _NOT),
    ("Route-Record", 282, _ID, _MUST),
    ("Destination-Realm", 283, _ID, _MUST),
    ("Proxy-Info", 284, _G, _MUST),
    ("Re-Auth-Request-Type", 285, _E, _MUST),
    ("Accounting-Sub-Session-Id", 287, _U64, _MUST),
    ("Authorization-Lifetime", 291, _U32, _MUST),
    ("Redirect-Host", 292, _URI, _MUST),
    ("Destination-Host", 293, _ID, _MUST),
    ("Error-Reporting-Host", 294, _ID, _NOT),
    ("Termination-Cause", 295, _E, _MUST),
    ("Origin-Realm", 296, _ID, _MUST),
    ("Experimental-Result", 297, _G, _MUST),
    ("Experimental-Result-Code", 298, _U32, _MUST),
    ("Inband-Security-Id", 299, _U32, _MUST),
    ("Accounting-Record-Type", 480, _E, _MUST),
    ("Accounting-Realtime-Required", 483, _E, _MUST),
    ("Accounting-Record-Number", 485, _U32, _MUST),
)

#: RFC 4006 §12 / RFC 8506 §12 (every one M-bit MUST, V-bit MUST NOT), and the RADIUS and
#: NASREQ (RFC 7155) attributes that Gy messages carry.
_CREDIT_CONTROL: Final[tuple[tuple[str, int, AvpType, MRule], ...]] = (
    ("Filter-Id", 11, _S, _MUST),
    ("Called-Station-Id", 30, _S, _MUST),
    ("Accounting-Input-Octets", 363, _U64, _MUST),
    ("Accounting-Output-Octets", 364, _U64, _MUST),
    ("Accounting-Input-Packets", 365, _U64, _MUST),
    ("Accounting-Output-Packets", 366, _U64, _MUST),
    ("CC-Correlation-Id", 411, _O, _MUST),
    ("CC-Input-Octets", 412, _U64, _MUST),
    ("CC-Money", 413, _G, _MUST),
    ("CC-Output-Octets", 414, _U64, _MUST),
    ("CC-Request-Number", 415, _U32, _MUST),
    ("CC-Request-Type", 416, _E, _MUST),
    ("CC-Service-Specific-Units", 417, _U64, _MUST),
    ("CC-Session-Failover", 418, _E, _MUST),
    ("CC-Sub-Session-Id", 419, _U64, _MUST),
    ("CC-Time", 420, _U32, _MUST),
    ("CC-Total-Octets", 421, _U64, _MUST),
    ("Check-Balance-Result", 422, _E, _MUST),
    ("Cost-Information", 423, _G, _MUST),
    ("Cost-Unit", 424, _S, _MUST),
    ("Currency-Code", 425, _U32, _MUST),
    ("Credit-Control", 426, _E, _MUST),
    ("Credit-Control-Failure-Handling", 427, _E, _MUST),
    ("Direct-Debiting-Failure-Handling", 428, _E, _MUST),
    ("Exponent", 429, _I32, _MUST),
    ("Final-Unit-Indication", 430, _G, _MUST),
    ("Granted-Service-Unit", 431, _G, _MUST),
    ("Rating-Group", 432, _U32, _MUST),
    ("Redirect-Address-Type", 433, _E, _MUST),
    ("Redirect-Server", 434, _G, _MUST),
    ("Redirect-Server-Address", 435, _S, _MUST),
    ("Requested-Action", 436, _E, _MUST),
    ("Requested-Service-Unit", 437, _G, _MUST),
    ("Restriction-Filter-Rule", 438, _IPF, _MUST),
    ("Service-Identifier", 439, _U32, _MUST),
    ("Service-Parameter-Info", 440, _G, _MUST),
    ("Service-Parameter-Type", 441, _U32, _MUST),
    ("Service-Parameter-Value", 442, _O, _MUST),
    ("Subscription-Id", 443, _G, _MUST),
    ("Subscription-Id-Data", 444, _S, _MUST),
    ("Unit-Value", 445, _G, _MUST),
    ("Used-Service-Unit", 446, _G, _MUST),
    ("Value-Digits", 447, _I64, _MUST),
    ("Validity-Time", 448, _U32, _MUST),
    ("Final-Unit-Action", 449, _E, _MUST),
    ("Subscription-Id-Type", 450, _E, _MUST),
    ("Tariff-Time-Change", 451, _T, _MUST),
    ("Tariff-Change-Usage", 452, _E, _MUST),
    ("G-S-U-Pool-Identifier", 453, _U32, _MUST),
    ("CC-Unit-Type", 454, _E, _MUST),
    ("Multiple-Services-Indicator", 455, _E, _MUST),
    ("Multiple-Services-Credit-Control", 456, _G, _MUST),
    ("G-S-U-Pool-Reference", 457, _G, _MUST),
    # RFC 4006 §12 lists User-Equipment-Info and its members with the M-bit MAY.
    ("User-Equipment-Info", 458, _G, _MAY),
    ("User-Equipment-Info-Type", 459, _E, _MAY),
    ("User-Equipment-Info-Value", 460, _O, _MAY),
    ("Service-Context-Id", 461, _S, _MUST),
)

#: 3GPP (vendor 10415): TS 32.299, TS 29.061, TS 29.212, TS 29.214 (name, code, type, M rule).
_TGPP: Final[tuple[tuple[str, int, AvpType, MRule], ...]] = (
    ("3GPP-IMSI", 1, _S, _MUST),
    ("3GPP-Charging-Id", 2, _O, _MUST),
    ("3GPP-PDP-Type", 3, _E, _MUST),
    # TS 29.061 §16.4.7: the RADIUS-format addresses (4 octets, no family) are OctetStrings
    # in Diameter (python-diameter agrees; Wireshark's dictionary calls them IPAddress).
    ("3GPP-CG-Address", 4, _O, _MUST),
    ("3GPP-GPRS-Negotiated-QoS-Profile", 5, _S, _MUST),
    ("3GPP-SGSN-Address", 6, _O, _MUST),
    ("3GPP-GGSN-Address", 7, _O, _MUST),
    ("3GPP-IMSI-MCC-MNC", 8, _S, _MUST),
    ("3GPP-GGSN-MCC-MNC", 9, _S, _MUST),
    ("3GPP-NSAPI", 10, _S, _MUST),
    ("3GPP-Session-Stop-Indicator", 11, _S, _MUST),
    ("3GPP-Selection-Mode", 12, _S, _MUST),
    ("3GPP-Charging-Characteristics", 13, _S, _MUST),
    ("3GPP-SGSN-MCC-MNC", 18, _S, _MUST),
    ("3GPP-IMEISV", 20, _O, _MUST),
    ("3GPP-RAT-Type", 21, _O, _MUST),
    ("3GPP-User-Location-Info", 22, _O, _MUST),
    ("3GPP-MS-TimeZone", 23, _O, _MUST),
    ("AF-Charging-Identifier", 505, _O, _MUST),
    ("Flow-Number", 509, _U32, _MUST),
    ("Flows", 510, _G, _MUST),
    ("Max-Requested-Bandwidth-DL", 515, _U32, _MUST),
    ("Max-Requested-Bandwidth-UL", 516, _U32, _MUST),
    ("Media-Component-Number", 518, _U32, _MUST),
    ("Sponsor-Identity", 531, _S, _MUST),
    ("Application-Service-Provider-Identity", 532, _S, _MUST),
    ("Server-Name", 602, _S, _MUST),
    ("Server-Capabilities", 603, _G, _MUST),
    ("Mandatory-Capability", 604, _U32, _MUST),
    ("Optional-Capability", 605, _U32, _MUST),
    ("Event-Type", 823, _G, _MUST),
    ("3GPP-SIP-Method", 824, _S, _MUST),
    ("Event", 825, _S, _MUST),
    ("Content-Type", 826, _S, _MUST),
    ("Content-Length", 827, _U32, _MUST),
    ("Content-Disposition", 828, _S, _MUST),
    ("Role-Of-Node", 829, _E, _MUST),
    ("User-Session-ID", 830, _S, _MUST),
    ("Calling-Party-Address", 831, _S, _MUST),
    ("Called-Party-Address", 832, _S, _MUST),
    ("Time-Stamps", 833, _G, _MUST),
    ("SIP-Request-Timestamp", 834, _T, _MUST),
    ("SIP-Response-Timestamp", 835, _T, _MUST),
    ("Application-Server", 836, _S, _MUST),
    ("Application-Provided-Called-Party-Address", 837, _S, _MUST),
    ("Inter-Operator-Identifier", 838, _G, _MUST),
    ("Originating-IOI", 839, _S, _MUST),
    ("Terminating-IOI", 840, _S, _MUST),
    ("IMS-Charging-Identifier", 841, _S, _MUST),
    ("SDP-Session-Description", 842, _S, _MUST),
    ("SDP-Media-Component", 843, _G, _MUST),
    ("SDP-Media-Name", 844, _S, _MUST),
    ("SDP-Media-Description", 845, _S, _MUST),
    ("CG-Address", 846, _A, _MUST),
    ("GGSN-Address", 847, _A, _MUST),
    ("Served-Party-IP-Address", 848, _A, _MUST),
    ("Application-Server-Information", 850, _G, _MUST),
    ("Trunk-Group-ID", 851, _G, _MUST),
    ("Incoming-Trunk-Group-ID", 852, _S, _MUST),
    ("Outgoing-Trunk-Group-ID", 853, _S, _MUST),
    ("Bearer-Service", 854, _O, _MUST),
    ("Service-Id", 855, _S, _MUST),
    ("Cause-Code", 861, _E, _MUST),
    ("Node-Functionality", 862, _E, _MUST),
    ("Service-Specific-Data", 863, _S, _MUST),
    ("Originator", 864, _E, _MUST),
    ("PS-Furnish-Charging-Information", 865, _G, _MUST),
    ("PS-Free-Format-Data", 866, _O, _MUST),
    ("PS-Append-Free-Format-Data", 867, _E, _MUST),
    ("Time-Quota-Threshold", 868, _U32, _MUST),
    ("Volume-Quota-Threshold", 869, _U32, _MUST),
    ("Trigger-Type", 870, _E, _MUST),
    ("Quota-Holding-Time", 871, _U32, _MUST),
    ("Reporting-Reason", 872, _E, _MUST),
    ("Service-Information", 873, _G, _MUST),
    ("PS-Information", 874, _G, _MUST),
    ("IMS-Information", 876, _G, _MUST),
    ("Quota-Consumption-Time", 881, _U32, _MUST),
    ("Originator-Address", 886, _G, _MUST),
    ("Message-Body", 889, _G, _MUST),
    ("Address-Data", 897, _S, _MUST),
    ("Address-Domain", 898, _G, _MUST),
    ("Address-Type", 899, _E, _MUST),
    ("Charging-Rule-Base-Name", 1004, _S, _MUST),
    ("QoS-Information", 1016, _G, _MUST),
    ("Bearer-Identifier", 1020, _O, _MUST),
    ("Guaranteed-Bitrate-DL", 1025, _U32, _MUST),
    ("Guaranteed-Bitrate-UL", 1026, _U32, _MUST),
    ("QoS-Class-Identifier", 1028, _E, _MUST),
    ("Allocation-Retention-Priority", 1034, _G, _MUST),
    ("APN-Aggregate-Max-Bitrate-DL", 1040, _U32, _NOT),
    ("APN-Aggregate-Max-Bitrate-UL", 1041, _U32, _NOT),
    ("Priority-Level", 1046, _U32, _MUST),
    ("Pre-emption-Capability", 1047, _E, _MUST),
    ("Pre-emption-Vulnerability", 1048, _E, _MUST),
    ("PDN-Connection-ID", 1065, _O, _MUST),
    ("TDF-IP-Address", 1091, _A, _NOT),
    ("ADC-Rule-Base-Name", 1095, _S, _MUST),
    ("Domain-Name", 1200, _S, _MAY),
    ("Recipient-Address", 1201, _G, _MAY),
    ("Addressee-Type", 1208, _E, _MAY),
    ("Unit-Quota-Threshold", 1226, _U32, _MAY),
    ("PDP-Address", 1227, _A, _MAY),
    ("SGSN-Address", 1228, _A, _MAY),
    ("PDP-Context-Type", 1247, _E, _MAY),
    ("Service-Specific-Info", 1249, _G, _MAY),
    ("Service-Specific-Type", 1257, _U32, _MAY),
    ("Access-Network-Information", 1263, _S, _MAY),
    ("Trigger", 1264, _G, _MAY),
    ("Base-Time-Interval", 1265, _U32, _MAY),
    ("Envelope-Reporting", 1268, _E, _MAY),
    ("Time-Quota-Mechanism", 1270, _G, _MAY),
    ("Time-Quota-Type", 1271, _E, _MAY),
    ("Early-Media-Description", 1272, _G, _MAY),
    ("SDP-TimeStamps", 1273, _G, _MAY),
    ("SDP-Offer-Timestamp", 1274, _T, _MAY),
    ("SDP-Answer-Timestamp", 1275, _T, _MAY),
    ("AF-Correlation-Information", 1276, _G, _MAY),
    ("Offline-Charging", 1278, _G, _MAY),
    ("IMS-Communication-Service-Identifier", 1281, _S, _MAY),
    ("Terminal-Information", 1401, _G, _MUST),
    ("IMEI", 1402, _S, _MUST),
    ("Software-Version", 1403, _S, _MUST),
    ("CSG-Id", 1437, _U32, _MUST),
    ("3GPP2-MEID", 1471, _O, _MUST),
    ("SSID", 1524, _S, _MUST),
    ("MME-Number-for-MT-SMS", 1645, _O, _MAY),
    ("SMS-Information", 2000, _G, _MAY),
    ("Data-Coding-Scheme", 2001, _I32, _MAY),
    ("Destination-Interface", 2002, _G, _MAY),
    ("Interface-Id", 2003, _S, _MAY),
    ("Interface-Port", 2004, _S, _MAY),
    ("Interface-Text", 2005, _S, _MAY),
    ("Interface-Type", 2006, _E, _MAY),
    ("SM-Message-Type", 2007, _E, _MAY),
    ("Originator-SCCP-Address", 2008, _A, _MAY),
    ("Originator-Interface", 2009, _G, _MAY),
    ("Recipient-SCCP-Address", 2010, _A, _MAY),
    ("Reply-Path-Requested", 2011, _E, _MAY),
    ("SM-Discharge-Time", 2012, _T, _MAY),
    ("SM-Protocol-ID", 2013, _O, _MAY),
    ("SM-Status", 2014, _O, _MAY),
    ("SM-User-Data-Header", 2015, _O, _MAY),
    ("SMS-Node", 2016, _E, _MAY),
    ("SMSC-Address", 2017, _A, _MAY),
    ("Client-Address", 2018, _A, _MAY),
    ("Number-Of-Messages-Sent", 2019, _U32, _MAY),
    ("Low-Balance-Indication", 2020, _E, _MAY),
    ("Remaining-Balance", 2021, _G, _MAY),
    ("Refund-Information", 2022, _O, _MAY),
    ("Recipient-Info", 2026, _G, _MAY),
    ("Originator-Received-Address", 2027, _G, _MAY),
    ("Recipient-Received-Address", 2028, _G, _MAY),
    ("MMTel-Information", 2030, _G, _MAY),
    ("MMTel-Service-Type", 2031, _E, _MAY),
    ("Service-Mode", 2032, _E, _MAY),
    ("Subscriber-Role", 2033, _E, _MAY),
    ("Number-Of-Diversions", 2034, _U32, _MAY),
    ("Associated-Party-Address", 2035, _S, _MAY),
    ("Change-Condition", 2037, _E, _MAY),
    ("Change-Time", 2038, _T, _MAY),
    ("Diagnostics", 2039, _E, _MAY),
    ("Service-Data-Container", 2040, _G, _MAY),
    ("Start-Time", 2041, _T, _MAY),
    ("Stop-Time", 2042, _T, _MAY),
    ("Time-First-Usage", 2043, _T, _MAY),
    ("Time-Last-Usage", 2044, _T, _MAY),
    ("Time-Usage", 2045, _U32, _MAY),
    ("Traffic-Data-Volumes", 2046, _G, _MAY),
    ("Serving-Node-Type", 2047, _E, _MAY),
    ("Dynamic-Address-Flag", 2051, _E, _MAY),
    ("AoC-Request-Type", 2055, _E, _MAY),
    ("Local-Sequence-Number", 2063, _U32, _MAY),
    ("Node-Id", 2064, _S, _MAY),
    ("SGW-Change", 2065, _E, _MUST),
    ("Charging-Characteristics-Selection-Mode", 2066, _E, _MUST),
    ("SGW-Address", 2067, _A, _MAY),
    ("Dynamic-Address-Flag-Extension", 2068, _E, _MAY),
    ("IMSI-Unauthenticated-Flag", 2308, _E, _MAY),
    ("CSG-Access-Mode", 2317, _E, _MAY),
    ("CSG-Membership-Indication", 2318, _E, _MAY),
    ("User-CSG-Information", 2319, _G, _MAY),
    ("Outgoing-Session-Id", 2320, _S, _MAY),
    ("MME-Name", 2402, _ID, _MAY),
    ("MME-Realm", 2408, _ID, _MAY),
    ("Low-Priority-Indicator", 2602, _E, _MAY),
    ("PDP-Address-Prefix-Length", 2606, _U32, _MUST),
    ("TWAN-User-Location-Info", 2714, _G, _MUST),
    ("BSSID", 2716, _S, _MUST),
    ("UE-Local-IP-Address", 2805, _A, _MAY),
    ("UDP-Source-Port", 2806, _U32, _MAY),
    ("User-Location-Info-Time", 2812, _T, _MAY),
    ("RAN-NAS-Release-Cause", 2819, _O, _MAY),
    ("Presence-Reporting-Area-Elements-List", 2820, _O, _MAY),
    ("Presence-Reporting-Area-Identifier", 2821, _O, _MUST),
    ("Presence-Reporting-Area-Information", 2822, _G, _MUST),
    ("Presence-Reporting-Area-Status", 2823, _E, _MUST),
    ("Fixed-User-Location-Info", 2825, _G, _MAY),
    ("NBIFOM-Mode", 2830, _E, _MUST),
    ("NBIFOM-Support", 2831, _E, _MUST),
    ("Access-Availability-Change-Reason", 2833, _U32, _MAY),
    ("Presence-Reporting-Area-Node", 2855, _E, _MUST),
    ("CN-Operator-Selection-Entity", 3421, _E, _MUST),
    ("ePDG-Address", 3425, _A, _MUST),
    ("Enhanced-Diagnostics", 3901, _G, _MUST),
    ("TWAG-Address", 3903, _A, _MUST),
    ("Announcement-Information", 3904, _G, _MUST),
    ("Announcement-Identifier", 3905, _U32, _MUST),
    ("Announcement-Order", 3906, _U32, _MUST),
    ("Variable-Part", 3907, _G, _MUST),
    ("Variable-Part-Order", 3908, _U32, _MUST),
    ("Variable-Part-Type", 3909, _U32, _MUST),
    ("Variable-Part-Value", 3910, _S, _MUST),
    ("Time-Indicator", 3911, _U32, _MUST),
    ("Quota-Indicator", 3912, _E, _MUST),
    ("Play-Alternative", 3913, _E, _MUST),
    ("Language", 3914, _S, _MUST),
    ("Privacy-Indicator", 3915, _E, _MUST),
    ("UWAN-User-Location-Info", 3918, _G, _MUST),
    ("Related-Change-Condition-Information", 3925, _G, _MUST),
    ("CP-CIoT-EPS-Optimisation-Indicator", 3930, _E, _MUST),
    ("SGi-PtP-Tunnelling-Method", 3931, _E, _MUST),
    ("UNI-PDU-CP-Only-Flag", 3932, _E, _MUST),
    ("APN-Rate-Control", 3933, _G, _MUST),
    ("APN-Rate-Control-Downlink", 3934, _G, _MUST),
    ("APN-Rate-Control-Uplink", 3935, _G, _MUST),
    ("Additional-Exception-Reports", 3936, _E, _MUST),
    ("Rate-Control-Max-Message-Size", 3937, _U32, _MUST),
    ("Rate-Control-Max-Rate", 3938, _U32, _MUST),
    ("Rate-Control-Time-Unit", 3939, _U32, _MUST),
    ("Serving-PLMN-Rate-Control", 4310, _G, _MUST),
    ("Uplink-Rate-Limit", 4311, _U32, _MUST),
    ("Downlink-Rate-Limit", 4312, _U32, _MUST),
    ("RRC-Cause-Counter", 4318, _G, _MUST),
    ("Counter-Value", 4319, _U32, _MUST),
    ("RRC-Counter-Timestamp", 4320, _T, _MUST),
    ("Charging-Per-IP-CAN-Session-Indicator", 4400, _E, _MUST),
)


def _build() -> tuple[AvpDef, ...]:
    defs = [AvpDef(code, name, kind, 0, rule) for name, code, kind, rule in _BASE]
    defs += [AvpDef(code, name, kind, 0, rule) for name, code, kind, rule in _CREDIT_CONTROL]
    defs += [AvpDef(code, name, kind, VENDOR_3GPP, rule) for name, code, kind, rule in _TGPP]
    return tuple(defs)


#: Every AVP of the dictionary.
AVPS: Final = _build()
#: ``avp_key(code, vendor)`` -> definition (the decoder's lookup).
BY_KEY: Final[dict[int, AvpDef]] = {d.key: d for d in AVPS}
#: Name -> definition (the builder's and the finders' lookup).
BY_NAME: Final[dict[str, AvpDef]] = {d.name: d for d in AVPS}

assert len(BY_KEY) == len(AVPS), "an AVP code is listed twice"
assert len(BY_NAME) == len(AVPS), "an AVP name is listed twice"


def lookup(name: str) -> AvpDef:
    """The definition named ``name``; ``KeyError`` naming it if there is none."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no AVP named {name!r} in the dictionary") from None


# --- occurrence rules ------------------------------------------------------------------------

#: The largest count a rule allows when its ABNF gives no maximum.
UNBOUNDED: Final = 2**31


@dataclass(frozen=True, slots=True)
class Occurs:
    """One element of a command or grouped-AVP ABNF: how often ``name`` may appear."""

    name: str
    min: int
    max: int


_ELEMENT: Final = re.compile(r"(\d*)(\*?)(\d*)\s*([<{\[])\s*([A-Za-z0-9-]+)\s*([>}\]])")
_CLOSE: Final = {"<": ">", "{": "}", "[": "]"}


def abnf(text: str) -> tuple[Occurs, ...]:
    """The elements of an ABNF body in RFC 6733 §3.2's grammar, one per line.

    ``< X >`` (fixed) and ``{ X }`` (required) default to exactly once, ``[ X ]`` (optional) to
    at most once; a qualifier ``min*max`` overrides, ``*`` alone meaning "any number" (at least
    one for a required element). ``*[ AVP ]`` (any other AVP) is skipped: it bounds nothing.
    Every name must be in the dictionary.
    """
    out: list[Occurs] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        m = _ELEMENT.fullmatch(line.strip())
        if m is None or _CLOSE[m[4]] != m[6]:
            raise ValueError(f"not an ABNF element: {line.strip()!r}")
        low, star, high, kind, name = m[1], m[2], m[3], m[4], m[5]
        if name == "AVP":
            continue
        if name not in BY_NAME:
            raise ValueError(f"ABNF names {name!r}, which is not in the dictionary")
        once = 0 if kind == "[" else 1
        if star:
            lo = int(low) if low else once
            hi = int(high) if high else UNBOUNDED
        else:
            if low or high:
                raise ValueError(f"a count without '*' in {line.strip()!r}")
            lo, hi = once, 1
        out.append(Occurs(name, lo, hi))
    return tuple(out)


#: RFC 6733 §7.2: an answer with the E-bit follows this generic ABNF instead of its command's.
#: §7.2 writes "< Session-Id >" because a session's error answers carry it; answers to peer
#: messages (CEA, DWA, DPA) have none, so it is optional here.
ERROR_ANSWER_RULES: Final = abnf("""
    [ Session-Id ]
    { Origin-Host }
    { Origin-Realm }
    { Result-Code }
    [ Origin-State-Id ]
    [ Error-Message ]
    [ Error-Reporting-Host ]
    [ Failed-AVP ]
    [ Experimental-Result ]
    *[ Proxy-Info ]
    *[ AVP ]
""")

#: (command code, is request) -> its ABNF. RFC 6733 §5.3.1-5.3.2 (CER/CEA), §5.5.1-5.5.2
#: (DWR/DWA), §5.4.1-5.4.2 (DPR/DPA); RFC 4006 §3.1-3.2 with RFC 8506 and TS 32.299 §6.4.2-
#: 6.4.3 (CCR/CCA: the union of their optional AVPs); RFC 4006 §3.3-3.4 and RFC 6733 §8.3.1-
#: 8.3.2 (RAR/RAA), §8.5.1-8.5.2 (ASR/ASA).
COMMAND_RULES: Final[dict[tuple[int, bool], tuple[Occurs, ...]]] = {
    (CMD_CAPABILITIES_EXCHANGE, True): abnf("""
        { Origin-Host }
        { Origin-Realm }
        1*{ Host-IP-Address }
        { Vendor-Id }
        { Product-Name }
        [ Origin-State-Id ]
        *[ Supported-Vendor-Id ]
        *[ Auth-Application-Id ]
        *[ Inband-Security-Id ]
        *[ Acct-Application-Id ]
        *[ Vendor-Specific-Application-Id ]
        [ Firmware-Revision ]
        *[ AVP ]
    """),
    (CMD_CAPABILITIES_EXCHANGE, False): abnf("""
        { Result-Code }
        { Origin-Host }
        { Origin-Realm }
        1*{ Host-IP-Address }
        { Vendor-Id }
        { Product-Name }
        [ Origin-State-Id ]
        [ Error-Message ]
        [ Failed-AVP ]
        *[ Supported-Vendor-Id ]
        *[ Auth-Application-Id ]
        *[ Inband-Security-Id ]
        *[ Acct-Application-Id ]
        *[ Vendor-Specific-Application-Id ]
        [ Firmware-Revision ]
        *[ AVP ]
    """),
    (CMD_DEVICE_WATCHDOG, True): abnf("""
        { Origin-Host }
        { Origin-Realm }
        [ Origin-State-Id ]
        *[ AVP ]
    """),
    (CMD_DEVICE_WATCHDOG, False): abnf("""
        { Result-Code }
        { Origin-Host }
        { Origin-Realm }
        [ Error-Message ]
        [ Failed-AVP ]
        [ Origin-State-Id ]
        *[ AVP ]
    """),
    (CMD_DISCONNECT_PEER, True): abnf("""
        { Origin-Host }
        { Origin-Realm }
        { Disconnect-Cause }
        *[ AVP ]
    """),
    (CMD_DISCONNECT_PEER, False): abnf("""
        { Result-Code }
        { Origin-Host }
        { Origin-Realm }
        [ Error-Message ]
        [ Failed-AVP ]
        *[ AVP ]
    """),
    (CMD_CREDIT_CONTROL, True): abnf("""
        < Session-Id >
        { Origin-Host }
        { Origin-Realm }
        { Destination-Realm }
        { Auth-Application-Id }
        { Service-Context-Id }
        { CC-Request-Type }
        { CC-Request-Number }
        [ Destination-Host ]
        [ User-Name ]
        [ CC-Sub-Session-Id ]
        [ Acct-Multi-Session-Id ]
        [ Origin-State-Id ]
        [ Event-Timestamp ]
        *[ Subscription-Id ]
        [ Service-Identifier ]
        [ Termination-Cause ]
        [ Requested-Service-Unit ]
        [ Requested-Action ]
        [ AoC-Request-Type ]
        *[ Used-Service-Unit ]
        [ Multiple-Services-Indicator ]
        *[ Multiple-Services-Credit-Control ]
        *[ Service-Parameter-Info ]
        [ CC-Correlation-Id ]
        [ User-Equipment-Info ]
        *[ Proxy-Info ]
        *[ Route-Record ]
        [ Service-Information ]
        *[ AVP ]
    """),
    (CMD_CREDIT_CONTROL, False): abnf("""
        < Session-Id >
        { Result-Code }
        { Origin-Host }
        { Origin-Realm }
        { Auth-Application-Id }
        { CC-Request-Type }
        { CC-Request-Number }
        [ User-Name ]
        [ CC-Session-Failover ]
        [ CC-Sub-Session-Id ]
        [ Acct-Multi-Session-Id ]
        [ Origin-State-Id ]
        [ Event-Timestamp ]
        [ Granted-Service-Unit ]
        *[ Multiple-Services-Credit-Control ]
        [ Cost-Information ]
        [ Final-Unit-Indication ]
        [ Check-Balance-Result ]
        [ Credit-Control-Failure-Handling ]
        [ Direct-Debiting-Failure-Handling ]
        [ Validity-Time ]
        *[ Redirect-Host ]
        [ Redirect-Host-Usage ]
        [ Redirect-Max-Cache-Time ]
        *[ Proxy-Info ]
        *[ Route-Record ]
        *[ Failed-AVP ]
        [ Service-Information ]
        *[ AVP ]
    """),
    (CMD_RE_AUTH, True): abnf("""
        < Session-Id >
        { Origin-Host }
        { Origin-Realm }
        { Destination-Realm }
        { Destination-Host }
        { Auth-Application-Id }
        { Re-Auth-Request-Type }
        [ User-Name ]
        [ Origin-State-Id ]
        *[ Proxy-Info ]
        *[ Route-Record ]
        [ CC-Sub-Session-Id ]
        [ G-S-U-Pool-Identifier ]
        [ Service-Identifier ]
        [ Rating-Group ]
        *[ AVP ]
    """),
    (CMD_RE_AUTH, False): abnf("""
        < Session-Id >
        { Result-Code }
        { Origin-Host }
        { Origin-Realm }
        [ User-Name ]
        [ Origin-State-Id ]
        [ Error-Message ]
        [ Error-Reporting-Host ]
        [ Failed-AVP ]
        *[ Redirect-Host ]
        [ Redirect-Host-Usage ]
        [ Redirect-Max-Cache-Time ]
        *[ Proxy-Info ]
        *[ AVP ]
    """),
    (CMD_ABORT_SESSION, True): abnf("""
        < Session-Id >
        { Origin-Host }
        { Origin-Realm }
        { Destination-Realm }
        { Destination-Host }
        { Auth-Application-Id }
        [ User-Name ]
        [ Origin-State-Id ]
        *[ Proxy-Info ]
        *[ Route-Record ]
        *[ AVP ]
    """),
    (CMD_ABORT_SESSION, False): abnf("""
        < Session-Id >
        { Result-Code }
        { Origin-Host }
        { Origin-Realm }
        [ User-Name ]
        [ Origin-State-Id ]
        [ Error-Message ]
        [ Error-Reporting-Host ]
        [ Failed-AVP ]
        *[ Redirect-Host ]
        [ Redirect-Host-Usage ]
        [ Redirect-Max-Cache-Time ]
        *[ Proxy-Info ]
        *[ AVP ]
    """),
}

_UNITS: Final = """
    [ CC-Time ]
    [ CC-Money ]
    [ CC-Total-Octets ]
    [ CC-Input-Octets ]
    [ CC-Output-Octets ]
    [ CC-Service-Specific-Units ]
    *[ AVP ]
"""

#: Grouped AVP name -> its ABNF. RFC 6733 §6.11 (Vendor-Specific-Application-Id), §6.7.2
#: (Proxy-Info), §7.6 (Experimental-Result); RFC 4006 §8 (section numbers below); TS 32.299
#: §7.1-7.2 (Service-Information and its PS, IMS and SMS parts: see the module docstring).
GROUPED_RULES: Final[dict[str, tuple[Occurs, ...]]] = {
    "Vendor-Specific-Application-Id": abnf("""
        { Vendor-Id }
        [ Auth-Application-Id ]
        [ Acct-Application-Id ]
    """),
    "Proxy-Info": abnf("""
        { Proxy-Host }
        { Proxy-State }
        *[ AVP ]
    """),
    "Experimental-Result": abnf("""
        { Vendor-Id }
        { Experimental-Result-Code }
    """),
    # §8.7, §8.8, §8.43
    "Cost-Information": abnf("""
        { Unit-Value }
        { Currency-Code }
        [ Cost-Unit ]
    """),
    "Unit-Value": abnf("""
        { Value-Digits }
        [ Exponent ]
    """),
    "CC-Money": abnf("""
        { Unit-Value }
        [ Currency-Code ]
    """),
    # §8.16 with TS 32.299 §7.1.9's additions
    "Multiple-Services-Credit-Control": abnf("""
        [ Granted-Service-Unit ]
        [ Requested-Service-Unit ]
        *[ Used-Service-Unit ]
        [ Tariff-Change-Usage ]
        *[ Service-Identifier ]
        [ Rating-Group ]
        *[ G-S-U-Pool-Reference ]
        [ Validity-Time ]
        [ Result-Code ]
        [ Final-Unit-Indication ]
        [ Time-Quota-Threshold ]
        [ Volume-Quota-Threshold ]
        [ Unit-Quota-Threshold ]
        [ Quota-Holding-Time ]
        [ Quota-Consumption-Time ]
        *[ Reporting-Reason ]
        [ Trigger ]
        [ PS-Furnish-Charging-Information ]
        [ Refund-Information ]
        *[ AF-Correlation-Information ]
        [ Envelope-Reporting ]
        [ Time-Quota-Mechanism ]
        *[ Service-Specific-Info ]
        [ QoS-Information ]
        *[ AVP ]
    """),
    # §8.17, §8.18, §8.19
    "Granted-Service-Unit": abnf("[ Tariff-Time-Change ]\n" + _UNITS),
    "Requested-Service-Unit": abnf(_UNITS),
    "Used-Service-Unit": abnf("[ Tariff-Change-Usage ]\n[ Reporting-Reason ]\n" + _UNITS),
    # §8.30
    "G-S-U-Pool-Reference": abnf("""
        { G-S-U-Pool-Identifier }
        { CC-Unit-Type }
        { Unit-Value }
    """),
    # §8.34, §8.37
    "Final-Unit-Indication": abnf("""
        { Final-Unit-Action }
        *[ Restriction-Filter-Rule ]
        *[ Filter-Id ]
        [ Redirect-Server ]
    """),
    "Redirect-Server": abnf("""
        { Redirect-Address-Type }
        { Redirect-Server-Address }
    """),
    # §8.43, §8.46, §8.49
    "Service-Parameter-Info": abnf("""
        { Service-Parameter-Type }
        { Service-Parameter-Value }
    """),
    "Subscription-Id": abnf("""
        { Subscription-Id-Type }
        { Subscription-Id-Data }
    """),
    "User-Equipment-Info": abnf("""
        { User-Equipment-Info-Type }
        { User-Equipment-Info-Value }
    """),
    # TS 32.299 §7.2.192 (Service-Information), §7.2.158 (PS-Information), §7.2.77
    # (IMS-Information), §7.2.208 (SMS-Information), §7.2.170b (Recipient-Info), §7.2.170
    # (Recipient-Address): only the members named here are counted.
    "Service-Information": abnf("""
        *[ Subscription-Id ]
        [ PS-Information ]
        [ IMS-Information ]
        [ SMS-Information ]
        [ MMTel-Information ]
        *[ AVP ]
    """),
    "PS-Information": abnf("""
        [ 3GPP-Charging-Id ]
        [ Node-Id ]
        [ 3GPP-PDP-Type ]
        [ PDP-Address-Prefix-Length ]
        [ Dynamic-Address-Flag ]
        [ QoS-Information ]
        [ GGSN-Address ]
        [ SGW-Address ]
        [ CG-Address ]
        [ 3GPP-GPRS-Negotiated-QoS-Profile ]
        [ 3GPP-SGSN-MCC-MNC ]
        [ 3GPP-GGSN-MCC-MNC ]
        [ 3GPP-NSAPI ]
        [ 3GPP-Selection-Mode ]
        [ 3GPP-Charging-Characteristics ]
        [ 3GPP-MS-TimeZone ]
        [ 3GPP-RAT-Type ]
        *[ AVP ]
    """),
    "IMS-Information": abnf("""
        [ Event-Type ]
        [ User-Session-ID ]
        [ Called-Party-Address ]
        [ IMS-Charging-Identifier ]
        *[ AVP ]
    """),
    "SMS-Information": abnf("""
        [ SMS-Node ]
        [ Client-Address ]
        [ Originator-SCCP-Address ]
        [ SMSC-Address ]
        [ Data-Coding-Scheme ]
        [ SM-Discharge-Time ]
        [ SM-Message-Type ]
        [ Originator-Interface ]
        [ SM-Protocol-ID ]
        [ Reply-Path-Requested ]
        [ SM-Status ]
        [ SM-User-Data-Header ]
        [ Number-Of-Messages-Sent ]
        *[ Recipient-Info ]
        [ Originator-Received-Address ]
        *[ AVP ]
    """),
    "Recipient-Info": abnf("""
        [ Destination-Interface ]
        *[ Recipient-Address ]
        *[ Recipient-Received-Address ]
        [ Recipient-SCCP-Address ]
        [ SM-Protocol-ID ]
        *[ AVP ]
    """),
    "Recipient-Address": abnf("""
        [ Address-Type ]
        [ Address-Data ]
        [ Address-Domain ]
        [ Addressee-Type ]
        *[ AVP ]
    """),
}

assert all(BY_NAME[n].type is AvpType.GROUPED for n in GROUPED_RULES), "rules for a non-group"

#: Enumerated AVPs whose value this OCS acts on -> the values it knows (RFC 6733 §7.1.5:
#: 5004 for any other). Enumerations it only passes along are not checked: a newer peer may
#: send values a later specification added.
ENUMERATIONS: Final[dict[str, frozenset[int]]] = {
    name: frozenset(int(v) for v in enum)
    for name, enum in (
        ("CC-Request-Type", CcRequestType),
        ("Requested-Action", RequestedAction),
        ("Subscription-Id-Type", SubscriptionIdType),
        ("Multiple-Services-Indicator", MultipleServicesIndicator),
        ("Disconnect-Cause", DisconnectCause),
        ("Re-Auth-Request-Type", ReAuthRequestType),
    )
}
