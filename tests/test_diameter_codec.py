"""The Diameter codec on bytes (no sockets), cross-checked against python-diameter.

python-diameter (PyPI ``python-diameter``) is the independent reference: what we encode it
decodes to the same AVP tree, and what it encodes we decode. Its two known quirks (TOOLS.md):
its CCR sends Origin-Host, Origin-Realm and Destination-Host without the M-bit, and it leaves
the header's Application-Id at 0.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest
from diameter.message import Message as TheirMessage
from diameter.message.avp import Avp as TheirAvp
from diameter.message.avp import AvpGrouped as TheirGrouped
from diameter.message.avp.dictionary import AVP_DICTIONARY, AVP_VENDOR_DICTIONARY
from diameter.message.avp.grouped import (
    PsInformation,
    RequestedServiceUnit,
    ServiceInformation,
    UsedServiceUnit,
)
from diameter.message.commands.credit_control import CreditControlRequest
from diameter.message.packer import Unpacker
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.diameter import (
    NEED_DATA,
    AnswerTemplate,
    Avp,
    AvpDef,
    AvpType,
    Framer,
    FramingError,
    InvalidAvpValue,
    LocalProtocolError,
    Message,
    OtherAddress,
    Problem,
    avp,
    build_avps,
    decode,
    error_answer,
    make_answer,
    make_request,
    raw_avp,
    validate,
)
from protocols.diameter import constants as c
from protocols.diameter.codec import (
    _CLEAN_AVPS,
    _CLEAN_AVPS_SIZE,
    _RUNS,
    _SEEN_ONCE,
    _decode_flat,
    _scan,
)
from protocols.diameter.dictionary import AVPS, BY_NAME, MRule

# --- helpers ---------------------------------------------------------------------------------


def gy_ccr(request_type: int = 2, number: int = 1, *, hop: int = 7, end: int = 9) -> Message:
    """A Gy CCR in the shape a PGW sends, built with our codec."""
    items: list[Any] = [
        ("Session-Id", "pgw.example;1;2"),
        ("Origin-Host", "pgw.example"),
        ("Origin-Realm", "example"),
        ("Destination-Realm", "ocs.example"),
        ("Auth-Application-Id", 4),
        ("Service-Context-Id", "32251@3gpp.org"),
        ("CC-Request-Type", request_type),
        ("CC-Request-Number", number),
        ("Event-Timestamp", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("Subscription-Id", [("Subscription-Id-Type", 0), ("Subscription-Id-Data", "491700")]),
        ("Subscription-Id", [("Subscription-Id-Type", 1), ("Subscription-Id-Data", "26201")]),
        ("Multiple-Services-Indicator", 1),
        (
            "Multiple-Services-Credit-Control",
            [
                ("Requested-Service-Unit", []),
                (
                    "Used-Service-Unit",
                    [("CC-Total-Octets", 2**40), ("CC-Time", 30), ("Reporting-Reason", 3)],
                ),
                ("Rating-Group", 10),
                ("Service-Identifier", 1),
            ],
        ),
        (
            "Service-Information",
            [
                (
                    "PS-Information",
                    [
                        ("3GPP-Charging-Id", b"\x01\x02\x03\x04"),
                        ("SGSN-Address", "192.0.2.1"),
                        ("GGSN-Address", "2001:db8::1"),
                        ("3GPP-SGSN-MCC-MNC", "26201"),
                        ("3GPP-RAT-Type", b"\x06"),
                        ("Called-Station-Id", "internet"),
                    ],
                )
            ],
        ),
    ]
    return make_request(
        c.CMD_CREDIT_CONTROL, 4, items, hop_by_hop=hop, end_to_end=end, proxiable=True
    )


def header(length: int, *, version: int = 1, flags: int = 0x80, code: int = 272) -> bytes:
    return struct.pack(">IIIII", (version << 24) | length, (flags << 24) | code, 4, 1, 2)


def message_with(body: bytes, *, flags: int = 0x80) -> bytes:
    """A message around raw AVP bytes (body padded to 4 so that the framing is valid)."""
    body += bytes(-len(body) % 4)
    return header(20 + len(body), flags=flags) + body


def raw(code: int, data: bytes, *, flags: int = 0x40, vendor: int | None = None) -> bytes:
    """One AVP built by hand, padded."""
    if vendor is not None:
        flags |= 0x80
        head = struct.pack(">III", code, (flags << 24) | (12 + len(data)), vendor)
    else:
        head = struct.pack(">II", code, (flags << 24) | (8 + len(data)))
    return head + data + bytes(-len(data) % 4)


def their_avps(data: bytes) -> list[TheirAvp]:
    """The AVPs of a message as python-diameter's generic AVP parser reads them.

    (``Message.avps`` of its command classes is rebuilt from their attributes, with their
    own flags; this is what is on the wire.)
    """
    unpacker = Unpacker(data[20:])
    avps = []
    while not unpacker.is_done():
        avps.append(TheirAvp.from_unpacker(unpacker))
    return avps


def same_tree(ours: list[Avp], theirs: list[TheirAvp]) -> None:
    """Our AVP tree and python-diameter's carry the same codes, vendors, flags and bytes."""
    assert [(a.code, a.vendor, a.flags) for a in ours] == [
        (t.code, t.vendor_id, t.flags) for t in theirs
    ]
    for mine, their in zip(ours, theirs, strict=True):
        if isinstance(their, TheirGrouped):
            assert mine.is_grouped
            same_tree(mine.avps, their.value)
        else:
            assert mine.data == their.payload


# --- round trips -----------------------------------------------------------------------------


def test_round_trip_keeps_every_avp_and_value() -> None:
    request = gy_ccr()
    data = request.to_bytes()
    assert len(data) % 4 == 0
    back = decode(data)
    assert back.problems == []
    assert validate(back) == []
    assert (back.command_code, back.application_id, back.hop_by_hop, back.end_to_end) == (
        272,
        4,
        7,
        9,
    )
    assert back.is_request and back.is_proxiable and not back.is_error and not back.is_retransmit
    assert back.name == "CCR"
    assert back.avps == request.avps
    assert back.to_bytes() == data
    assert back.session_id == "pgw.example;1;2"
    assert back.get_int("CC-Request-Type") == c.CcRequestType.UPDATE_REQUEST
    assert back.get("Event-Timestamp") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert [s.get_str("Subscription-Id-Data") for s in back.find_all("Subscription-Id")] == [
        "491700",
        "26201",
    ]
    assert back.find_all("Subscription-Id", "Subscription-Id-Type")[1].value == 1
    mscc = back.find("Multiple-Services-Credit-Control")
    assert mscc is not None
    assert mscc.get_int("Used-Service-Unit", "CC-Total-Octets") == 2**40
    assert (
        mscc.get_int("Used-Service-Unit", "Reporting-Reason") == c.ReportingReason.QUOTA_EXHAUSTED
    )
    rsu = mscc.find("Requested-Service-Unit")
    assert rsu is not None and rsu.avps == [] and rsu.data == b""
    ps = back.find("Service-Information", "PS-Information")
    assert ps is not None
    assert ps.get("SGSN-Address") == IPv4Address("192.0.2.1")
    assert ps.get("GGSN-Address") == IPv6Address("2001:db8::1")
    assert ps.get_bytes("3GPP-RAT-Type") == b"\x06"
    assert ps.find("3GPP-SGSN-MCC-MNC") is ps.find((18, 10415))
    assert back.find("Service-Information", "PS-Information", "3GPP-SGSN-MCC-MNC") is not None
    assert back.get_int("Rating-Group") is None  # not at the top level
    assert back.get_int("Rating-Group", default=-1) == -1


@pytest.mark.parametrize(
    ("kind", "value", "data"),
    [
        (AvpType.INTEGER32, -2, b"\xff\xff\xff\xfe"),
        (AvpType.INTEGER64, -(2**63), b"\x80" + bytes(7)),
        (AvpType.UNSIGNED32, 2**32 - 1, b"\xff" * 4),
        (AvpType.UNSIGNED64, 2**64 - 1, b"\xff" * 8),
        (AvpType.FLOAT32, 1.5, struct.pack(">f", 1.5)),
        (AvpType.FLOAT64, -0.25, struct.pack(">d", -0.25)),
        (AvpType.ENUMERATED, 3, b"\0\0\0\x03"),
        (AvpType.UTF8STRING, "Grüße", "Grüße".encode()),
        (AvpType.DIAMETER_IDENTITY, "ocs.example", b"ocs.example"),
        (AvpType.DIAMETER_URI, "aaa://ocs.example:3868", b"aaa://ocs.example:3868"),
        (AvpType.OCTET_STRING, b"\0\xff", b"\0\xff"),
        (AvpType.ADDRESS, IPv4Address("10.1.2.3"), b"\0\x01\x0a\x01\x02\x03"),
        (AvpType.ADDRESS, IPv6Address("::1"), b"\0\x02" + bytes(15) + b"\x01"),
        (AvpType.ADDRESS, OtherAddress(8, b"4917"), b"\0\x084917"),
        # RFC 6733 §4.3.1 Time: NTP seconds; 2036-02-07 06:28:16 wraps to 0 (RFC 4330 era 1).
        (AvpType.TIME, datetime(1970, 1, 1, tzinfo=UTC), struct.pack(">I", 2_208_988_800)),
        (AvpType.TIME, datetime(2036, 2, 7, 6, 28, 16, tzinfo=UTC), b"\0\0\0\0"),
        (AvpType.TIME, datetime(2100, 1, 1, tzinfo=UTC), struct.pack(">I", 2_016_466_304)),
    ],
)
def test_every_base_type_encodes_and_decodes(kind: AvpType, value: Any, data: bytes) -> None:
    definition = AvpDef(60000, "Test-AVP", kind, vendor=99, m=MRule.MAY)
    built = avp(definition, value)
    assert built.data == data
    assert built.flags == c.AVP_FLAG_VENDOR
    wire = built.to_bytes()
    assert len(wire) % 4 == 0 and wire[12 : 12 + len(data)] == data
    read = Avp(built.code, built.flags, built.vendor, data, definition)
    assert read.value == value


def test_address_given_as_text_and_time_as_unix_seconds() -> None:
    assert avp("Host-IP-Address", "10.0.0.1").value == IPv4Address("10.0.0.1")
    assert avp("Event-Timestamp", 0).value == datetime(1970, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CC-Time", -1),
        ("CC-Time", 2**32),
        ("CC-Time", "60"),
        ("Exponent", 2**31),
        ("CC-Total-Octets", 2**64),
        ("Session-Id", b"bytes"),
        ("Session-Id", "\ud800"),
        ("User-Equipment-Info-Value", "text"),
        ("Host-IP-Address", "not an address"),
        ("Host-IP-Address", 5),
        ("Event-Timestamp", datetime(2026, 1, 1)),  # naive
        ("Event-Timestamp", datetime(1900, 1, 1, tzinfo=UTC)),
        ("Event-Timestamp", "2026-01-01"),
        ("Subscription-Id", "not a list"),
        ("Subscription-Id", [("No-Such-AVP", 1)]),
        ("Subscription-Id", [42]),
        ("No-Such-AVP", 1),
    ],
)
def test_building_a_bad_value_raises_local_protocol_error(name: str, value: Any) -> None:
    with pytest.raises(LocalProtocolError):
        avp(name, value)


def test_flags_follow_the_dictionary_rule() -> None:
    assert avp("Session-Id", "x").flags == c.AVP_FLAG_MANDATORY
    # RFC 6733 §4.5: Product-Name, Error-Message, Firmware-Revision have the M-bit MUST NOT.
    assert avp("Product-Name", "ocs").flags == 0
    assert avp("Error-Message", "e").flags == 0
    assert avp("Reporting-Reason", 2).flags == c.AVP_FLAG_VENDOR | c.AVP_FLAG_MANDATORY
    assert avp("Reporting-Reason", 2).to_bytes()[8:12] == struct.pack(">I", 10415)
    assert avp("Session-Id", "x", mandatory=False).flags == 0
    assert raw_avp(1234, b"abc", vendor=5, mandatory=True).flags == 0xC0


def test_unknown_avps_are_kept_as_octet_strings() -> None:
    unknown = raw(99999, b"hello", flags=0, vendor=12345)
    data = message_with(avp("Session-Id", "s").to_bytes() + unknown)
    message = decode(data)
    assert message.problems == []
    found = message.find((99999, 12345))
    assert found is not None and found.definition is None
    assert found.value == b"hello" and found.name == "AVP 12345:99999"
    assert message.to_bytes() == data


# --- python-diameter cross-checks ------------------------------------------------------------


def test_python_diameter_decodes_what_we_encode() -> None:
    data = gy_ccr().to_bytes()
    theirs: Any = TheirMessage.from_bytes(data)
    assert isinstance(theirs, CreditControlRequest)
    assert theirs.header.length == len(data)
    assert theirs.header.application_id == 4 and theirs.header.is_request
    same_tree(decode(data).avps, their_avps(data))
    assert theirs.session_id == "pgw.example;1;2"
    assert theirs.event_timestamp == datetime(2026, 1, 2, 3, 4, 5)
    assert [s.subscription_id_data for s in theirs.subscription_id] == ["491700", "26201"]
    mscc = theirs.multiple_services_credit_control[0]
    assert mscc.rating_group == 10
    assert mscc.used_service_unit[0].cc_total_octets == 2**40
    ps = theirs.service_information.ps_information
    assert ps.sgsn_address == [(1, "192.0.2.1")] and ps.ggsn_address == [(2, "2001:db8::1")]
    # Re-encoded by them (with their flag quirks), it still reads the same with ours.
    again = decode(bytes(theirs.as_bytes()))
    assert again.problems == [] and validate(again) == []
    assert sorted((a.code, a.vendor) for a in again.avps) == sorted(
        (a.code, a.vendor) for a in decode(data).avps
    )
    mscc = ("Multiple-Services-Credit-Control", "Used-Service-Unit")
    assert again.get_int(*mscc, "CC-Total-Octets") == 2**40  # their order within groups differs


def _their_ccr(request_type: int, number: int) -> bytes:
    ccr: Any = CreditControlRequest()
    ccr.header.hop_by_hop_identifier = 11
    ccr.header.end_to_end_identifier = 12
    ccr.session_id = "gw.example;99"
    ccr.origin_host = b"gw.example"
    ccr.origin_realm = b"example"
    ccr.destination_realm = b"ocs.example"
    ccr.auth_application_id = 4
    ccr.service_context_id = "32251@3gpp.org"
    ccr.cc_request_type = request_type
    ccr.cc_request_number = number
    ccr.add_subscription_id(subscription_id_type=0, subscription_id_data="491700")
    ccr.add_subscription_id(subscription_id_type=1, subscription_id_data="262011234")
    ccr.multiple_services_indicator = 1
    mscc: dict[str, Any] = {"rating_group": 20, "service_identifier": [2]}
    if request_type != c.CcRequestType.TERMINATION_REQUEST:
        mscc["requested_service_unit"] = RequestedServiceUnit()
    if request_type != c.CcRequestType.INITIAL_REQUEST:
        mscc["used_service_unit"] = [
            UsedServiceUnit(cc_time=42, cc_total_octets=1000, reporting_reason=2)
        ]
    # Keyword arguments: given an object, its add_ method takes it for the first field.
    ccr.add_multiple_services_credit_control(**mscc)
    ccr.service_information = ServiceInformation(
        ps_information=PsInformation(
            tgpp_sgsn_mcc_mnc="26201", sgsn_address=["192.0.2.9"], tgpp_rat_type=b"\x06"
        )
    )
    return bytes(ccr.as_bytes())


@pytest.mark.parametrize("request_type", [1, 2, 3])
@pytest.mark.parametrize("sighting", [1, 3])
def test_we_decode_what_python_diameter_encodes(request_type: int, sighting: int) -> None:
    # (sighting 3: the repeated AVPs come from the decoder's cache of clean AVPs)
    data = _their_ccr(request_type, request_type - 1)
    for _ in range(sighting):
        ours = decode(data)
    _same_as_a_plain_scan(data, ours)
    assert ours.problems == []
    assert validate(ours) == []
    same_tree(ours.avps, their_avps(data))
    assert ours.name == "CCR" and ours.hop_by_hop == 11 and ours.end_to_end == 12
    assert ours.get_str("Session-Id") == "gw.example;99"
    # Their quirk: Origin-Host without the M-bit; we read it all the same.
    origin = ours.find("Origin-Host")
    assert origin is not None and not origin.is_mandatory and origin.value == "gw.example"
    assert ours.get_int("CC-Request-Type") == request_type
    assert ours.get_int("CC-Request-Number") == request_type - 1
    assert ours.get_str("Subscription-Id", "Subscription-Id-Data") == "491700"
    mscc = ours.find("Multiple-Services-Credit-Control")
    assert mscc is not None and mscc.get_int("Rating-Group") == 20
    assert (mscc.find("Requested-Service-Unit") is not None) == (request_type != 3)
    if request_type != 1:
        assert mscc.get_int("Used-Service-Unit", "CC-Time") == 42
        assert mscc.get_int("Used-Service-Unit", "Reporting-Reason") == 2
    ps = ours.find("Service-Information", "PS-Information")
    assert ps is not None
    assert ps.get_str("3GPP-SGSN-MCC-MNC") == "26201"
    assert ps.get("SGSN-Address") == IPv4Address("192.0.2.9")


def test_python_diameter_decodes_our_answers() -> None:
    request = gy_ccr(hop=77, end=88)
    answer = make_answer(
        request,
        [
            (
                "Multiple-Services-Credit-Control",
                [
                    ("Granted-Service-Unit", [("CC-Total-Octets", 10_000)]),
                    ("Rating-Group", 10),
                    ("Validity-Time", 600),
                    ("Result-Code", c.DIAMETER_SUCCESS),
                    (
                        "Final-Unit-Indication",
                        [("Final-Unit-Action", c.FinalUnitAction.TERMINATE)],
                    ),
                ],
            )
        ],
        result_code=c.DIAMETER_SUCCESS,
        origin_host="ocs.example",
        origin_realm="example",
        copy=("Auth-Application-Id", "CC-Request-Type", "CC-Request-Number"),
    )
    data = answer.to_bytes()
    theirs: Any = TheirMessage.from_bytes(data)
    assert type(theirs).__name__ == "CreditControlAnswer"
    assert not theirs.header.is_request and theirs.header.is_proxyable
    assert theirs.header.hop_by_hop_identifier == 77 and theirs.header.end_to_end_identifier == 88
    assert theirs.session_id == "pgw.example;1;2"
    assert theirs.result_code == 2001 and theirs.cc_request_type == 2
    mscc = theirs.multiple_services_credit_control[0]
    assert mscc.granted_service_unit.cc_total_octets == 10_000
    assert mscc.final_unit_indication.final_unit_action == 0
    same_tree(decode(data).avps, their_avps(data))


def test_dictionary_agrees_with_python_diameter() -> None:
    # Same wire format for every AVP both know; the names differ only where listed.
    wire = {
        "AvpOctetString": {"OCTET_STRING", "UTF8STRING", "DIAMETER_IDENTITY", "IP_FILTER_RULE"},
        "AvpUtf8String": {"UTF8STRING", "DIAMETER_URI", "DIAMETER_IDENTITY", "OCTET_STRING"},
        "AvpInteger32": {"INTEGER32", "ENUMERATED", "UNSIGNED32"},
        "AvpUnsigned32": {"UNSIGNED32", "INTEGER32", "ENUMERATED"},
        "AvpInteger64": {"INTEGER64", "UNSIGNED64"},
        "AvpUnsigned64": {"UNSIGNED64", "INTEGER64"},
        "AvpGrouped": {"GROUPED"},
        "AvpAddress": {"ADDRESS"},
        "AvpTime": {"TIME"},
    }
    names = {"Acct-Multi-Session-Id": "Accounting-Multi-Session-Id"}
    names["Reporting-Reason"] = "3GPP-Reporting-Reason"
    for definition in AVPS:
        table = AVP_VENDOR_DICTIONARY.get(definition.vendor, {}) if definition.vendor else None
        info = (table if table is not None else AVP_DICTIONARY).get(definition.code)
        assert info is not None, definition.name
        their_name = names.get(definition.name, definition.name)
        assert info["name"].lower() == their_name.lower(), definition.name
        assert definition.type.name in wire[info["type"].__name__], definition.name


# --- answers ---------------------------------------------------------------------------------


def test_answer_follows_rfc_6733_6_2() -> None:
    proxy = [("Proxy-Host", "relay.example"), ("Proxy-State", b"\x01")]
    request = make_request(
        c.CMD_CREDIT_CONTROL,
        4,
        [
            *gy_ccr().avps,
            ("Proxy-Info", proxy),
            ("Proxy-Info", [*proxy[:1], ("Proxy-State", b"2")]),
        ],
        hop_by_hop=5,
        end_to_end=6,
        proxiable=True,
        retransmit=True,
    )
    answer = make_answer(
        request,
        [("Validity-Time", 60)],
        result_code=c.DIAMETER_SUCCESS,
        origin_host="ocs.example",
        origin_realm="example",
        copy=("Auth-Application-Id", "CC-Request-Type", "CC-Request-Number", "User-Name"),
    )
    assert not answer.is_request and answer.is_proxiable and not answer.is_retransmit
    assert not answer.is_error
    assert (answer.command_code, answer.application_id) == (272, 4)
    assert (answer.hop_by_hop, answer.end_to_end) == (5, 6)
    assert [a.name for a in answer.avps] == [
        "Session-Id",
        "Result-Code",
        "Origin-Host",
        "Origin-Realm",
        "Auth-Application-Id",
        "CC-Request-Type",
        "CC-Request-Number",
        "Validity-Time",
        "Proxy-Info",
        "Proxy-Info",
    ]
    assert answer.find_all("Proxy-Info") == request.find_all("Proxy-Info")
    assert answer.result_code == 2001
    back = decode(answer.to_bytes())
    assert validate(back) == []


def test_protocol_errors_set_the_e_bit() -> None:
    request = gy_ccr()
    answer = make_answer(
        request, result_code=c.DIAMETER_TOO_BUSY, origin_host="o", origin_realm="r"
    )
    assert answer.is_error
    assert validate(decode(answer.to_bytes())) == []  # the generic §7.2 error answer
    answer = make_answer(
        request, result_code=c.DIAMETER_USER_UNKNOWN, origin_host="o", origin_realm="r"
    )
    assert not answer.is_error


def test_error_answer_carries_failed_avp_and_error_message() -> None:
    bad = raw(70000, b"x", flags=0x40)  # unknown, M-bit
    bad2 = raw(70001, b"yy", flags=0x40, vendor=77)
    request = decode(message_with(avp("Session-Id", "s;1").to_bytes() + bad + bad2))
    problems = validate(request)
    assert [p.result_code for p in problems] == [5001, 5001]
    answer = error_answer(
        request,
        problems,
        origin_host="ocs",
        origin_realm="example",
        copy=("CC-Request-Type",),
    )
    back = decode(answer.to_bytes())
    assert back.problems == []
    assert back.result_code == c.DIAMETER_AVP_UNSUPPORTED and not back.is_error
    assert back.get_str("Session-Id") == "s;1"
    assert "70000" in back.get_str("Error-Message", default="")
    failed = back.find("Failed-AVP")
    assert failed is not None
    # RFC 6733 §7.5: the offending AVPs, whole, in one Failed-AVP.
    assert failed.data == bad + bad2
    assert [(a.code, a.vendor) for a in failed.avps] == [(70000, 0), (70001, 77)]


# --- validation ------------------------------------------------------------------------------


def test_missing_avp_gives_5005_with_a_zeroed_example() -> None:
    items = [a for a in gy_ccr().avps if a.name != "CC-Request-Number"]
    message = decode(make_request(272, 4, items, hop_by_hop=1, end_to_end=1).to_bytes())
    (problem,) = validate(message)
    assert problem.result_code == c.DIAMETER_MISSING_AVP
    # RFC 6733 §7.1.5: "an example of the missing AVP ... of correct minimum length".
    assert problem.failed_avp == raw(415, bytes(4))


def test_repeated_single_avp_gives_5009_and_bad_enum_5004() -> None:
    items = [*gy_ccr().avps, avp("CC-Request-Number", 5)]
    (problem,) = validate(
        decode(make_request(272, 4, items, hop_by_hop=1, end_to_end=1).to_bytes())
    )
    assert problem.result_code == c.DIAMETER_AVP_OCCURS_TOO_MANY_TIMES
    assert problem.failed_avp == avp("CC-Request-Number", 5).to_bytes()
    items = [a if a.name != "CC-Request-Type" else avp("CC-Request-Type", 9) for a in gy_ccr().avps]
    (problem,) = validate(
        decode(make_request(272, 4, items, hop_by_hop=1, end_to_end=1).to_bytes())
    )
    assert problem.result_code == c.DIAMETER_INVALID_AVP_VALUE
    items = [
        a if a.name != "Auth-Application-Id" else avp("Auth-Application-Id", 5)
        for a in gy_ccr().avps
    ]
    (problem,) = validate(
        decode(make_request(272, 4, items, hop_by_hop=1, end_to_end=1).to_bytes())
    )
    assert problem.result_code == c.DIAMETER_INVALID_AVP_VALUE


@pytest.mark.parametrize(
    ("command", "request_", "names"),
    [
        (
            257,
            True,
            ["Origin-Host", "Origin-Realm", "Host-IP-Address", "Vendor-Id", "Product-Name"],
        ),
        (280, True, ["Origin-Host", "Origin-Realm"]),
        (282, True, ["Origin-Host", "Origin-Realm", "Disconnect-Cause"]),
        (258, False, ["Session-Id", "Result-Code", "Origin-Host", "Origin-Realm"]),
        (274, False, ["Session-Id", "Result-Code", "Origin-Host", "Origin-Realm"]),
    ],
)
def test_required_avps_per_command(command: int, request_: bool, names: list[str]) -> None:
    message = Message(command, [], 0, 0x80 if request_ else 0)
    problems = validate(message)
    assert [p.message for p in problems] == [f"missing {n}" for n in names]
    assert {p.result_code for p in problems} == {c.DIAMETER_MISSING_AVP}


# --- malformed input -------------------------------------------------------------------------

SESSION = avp("Session-Id", "s").to_bytes()


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (header(20, version=2), c.DIAMETER_UNSUPPORTED_VERSION),
        (header(20, version=0), c.DIAMETER_UNSUPPORTED_VERSION),
        (header(16)[:16], c.DIAMETER_INVALID_MESSAGE_LENGTH),  # length under 20
        (header(22) + b"\0\0", c.DIAMETER_INVALID_MESSAGE_LENGTH),  # not a multiple of 4
        (header(24), c.DIAMETER_INVALID_MESSAGE_LENGTH),  # says 24, holds 20
        (header(20) + bytes(4), c.DIAMETER_INVALID_MESSAGE_LENGTH),  # says 20, holds 24
        (header(0xFFFFFC), c.DIAMETER_INVALID_MESSAGE_LENGTH),  # huge
        (b"\x01\x00", c.DIAMETER_INVALID_MESSAGE_LENGTH),
    ],
)
def test_unusable_headers_raise_framing_error(data: bytes, code: int) -> None:
    with pytest.raises(FramingError) as info:
        decode(data, max_message_size=c.DEFAULT_MAX_MESSAGE_SIZE)
    assert info.value.result_code == code
    assert info.value.problem.result_code == code


def test_framing_error_keeps_the_request_header_for_an_answer() -> None:
    with pytest.raises(FramingError) as info:
        decode(header(24))
    request = info.value.request
    assert request is not None and request.command_code == 272 and request.hop_by_hop == 1
    answer = error_answer(request, info.value.problem, origin_host="o", origin_realm="r")
    assert decode(answer.to_bytes()).result_code == c.DIAMETER_INVALID_MESSAGE_LENGTH


@pytest.mark.parametrize(
    ("body", "code", "failed"),
    [
        # Truncated AVP: the length runs past the message.
        (SESSION + struct.pack(">II", 268, 0x40000010) + b"\0\0\x07\xd1", 5014, None),
        # AVP length under the 8-byte header.
        (SESSION + struct.pack(">II", 268, 0x40000004) + bytes(4), 5014, None),
        # V-bit with no room for the vendor id.
        (SESSION + struct.pack(">II", 268, 0xC0000008), 5014, None),
        # Fewer than 8 bytes left for a header.
        (SESSION + b"\0\0\x01\x0c", 5014, None),
        # Unsigned32 with 3 bytes: the length is right for the AVP, wrong for its type.
        (SESSION + raw(415, b"\0\0\x01"), 5014, raw(415, b"\0\0\x01")),
        # Unsigned64 with 4 bytes, inside a grouped AVP.
        (SESSION + raw(446, raw(421, b"\0\0\0\x01")), 5014, None),
        # Missing padding: the next header is read 3 bytes late and makes no sense.
        (
            SESSION + raw(263, b"x")[:9] + struct.pack(">II", 268, 0x4000000C) + b"\0\0\x07\xd1",
            5014,
            None,
        ),
        # Address too short for its family, and a UTF8String that is not UTF-8.
        (SESSION + raw(257, b"\0\x01\x0a"), 5014, raw(257, b"\0\x01\x0a")),
        (SESSION + raw(1, b"\xff\xfe"), 5004, raw(1, b"\xff\xfe")),
        # Unknown AVP with the M-bit, at the top and inside a group.
        (SESSION + raw(77777, b"abc"), 5001, raw(77777, b"abc")),
        (SESSION + raw(443, raw(77777, b"", vendor=9)), 5001, raw(77777, b"", vendor=9)),
    ],
)
def test_bad_avps_are_problems_not_exceptions(body: bytes, code: int, failed: bytes | None) -> None:
    message = decode(message_with(body))
    assert message.session_id == "s"  # what came before the fault is there
    assert message.problems, "expected a problem"
    problem = message.problems[0]
    assert problem.result_code == code
    if failed is not None:
        assert problem.failed_avp == failed
    assert validate(message)[0] == problem
    answer = error_answer(message, message.problems, origin_host="o", origin_realm="r")
    back = decode(answer.to_bytes())
    assert back.result_code == code and back.session_id == "s"


def test_bad_values_raise_invalid_avp_value_on_access() -> None:
    message = decode(message_with(SESSION + raw(415, b"\0\0\x01") + raw(1, b"\xff")))
    for name in ("CC-Request-Number", "User-Name"):
        found = message.find(name)
        assert found is not None
        with pytest.raises(InvalidAvpValue) as info:
            found.value  # noqa: B018
        assert info.value.problem.result_code in (5004, 5014)
    assert "CC-Request-Number" in repr(message)  # repr never raises


def test_unknown_avp_without_m_bit_is_no_problem() -> None:
    message = decode(message_with(SESSION + raw(77777, b"abc", flags=0)))
    assert message.problems == []


def test_e_bit_on_a_request_is_3008() -> None:
    message = decode(message_with(SESSION, flags=0xA0))
    assert [p.result_code for p in message.problems] == [c.DIAMETER_INVALID_HDR_BITS]
    answer = error_answer(message, message.problems, origin_host="o", origin_realm="r")
    assert answer.is_error


def test_deep_nesting_is_refused_without_recursion_error() -> None:
    inner = raw(1, b"x")
    for _ in range(c.MAX_AVP_DEPTH + 5):
        inner = raw(443, inner)  # Subscription-Id in Subscription-Id...
    message = decode(message_with(SESSION + inner))
    assert [p.result_code for p in message.problems] == [c.DIAMETER_INVALID_AVP_VALUE]


# --- the stream framer -----------------------------------------------------------------------


def test_framer_splits_many_messages_per_segment_and_joins_split_ones() -> None:
    messages = [gy_ccr(number=n, hop=n).to_bytes() for n in range(5)]
    stream = b"".join(messages)
    framer = Framer()
    framer.receive_data(stream)
    got = []
    while (message := framer.next_message()) is not NEED_DATA:
        assert isinstance(message, Message)
        got.append(message.hop_by_hop)
    assert got == [0, 1, 2, 3, 4] and framer.buffered == 0
    # Byte by byte.
    framer = Framer()
    got = []
    for i in range(len(stream)):
        framer.receive_data(stream[i : i + 1])
        while (message := framer.next_message()) is not NEED_DATA:
            assert isinstance(message, Message)
            got.append(message.hop_by_hop)
    assert got == [0, 1, 2, 3, 4]
    assert framer.send(gy_ccr()) == gy_ccr().to_bytes()


def test_framer_refuses_an_oversized_message_from_its_first_bytes() -> None:
    framer = Framer(max_message_size=4096)
    framer.receive_data(struct.pack(">I", 0x01000000 | 8192))
    with pytest.raises(FramingError) as info:
        framer.next_message()
    assert info.value.result_code == c.DIAMETER_INVALID_MESSAGE_LENGTH
    framer.receive_data(gy_ccr().to_bytes())  # ignored: the stream is dead
    with pytest.raises(FramingError):
        framer.next_message()
    big = make_request(272, 4, [("Session-Id", "x" * 5000)], hop_by_hop=1, end_to_end=1)
    with pytest.raises(LocalProtocolError):
        framer.send(big)
    with pytest.raises(ValueError, match="max_message_size"):
        Framer(max_message_size=10)


def test_framer_bad_version_is_fatal() -> None:
    framer = Framer()
    framer.receive_data(header(20, version=2))
    with pytest.raises(FramingError) as info:
        framer.next_message()
    assert info.value.result_code == c.DIAMETER_UNSUPPORTED_VERSION


# --- fuzzing ---------------------------------------------------------------------------------


def _touch(avps: list[Avp]) -> None:
    """Read every value, as an agent might; only InvalidAvpValue may come out."""
    for a in avps:
        repr(a)
        try:
            a.value  # noqa: B018
        except InvalidAvpValue as exc:
            problem = exc.problem
            assert isinstance(problem, Problem)
        _touch(a.avps)


def _tree(avps: list[Avp]) -> list[Any]:
    return [(a.code, a.flags, a.vendor, a.data, a.definition, _tree(a.avps)) for a in avps]


def _same_as_a_plain_scan(data: bytes, message: Message) -> None:
    """The decoder's top-level AVP cache changes nothing: the AVPs, problems and shape are
    those of a scan without it (docs/diameter.md, Speed)."""
    problems: list[Problem] = []
    avps: list[Avp] = []
    shape: list[Any] = []
    _scan(data, c.HEADER_SIZE, len(data), 0, problems, avps, shape)
    if data[4] & c.FLAG_REQUEST and data[4] & c.FLAG_ERROR:
        problems.insert(0, Problem(c.DIAMETER_INVALID_HDR_BITS, "request with the E-bit set"))
    assert _tree(message.avps) == _tree(avps)
    assert message.problems == problems
    assert message.shape == tuple(shape)


def _exercise(data: bytes) -> None:
    try:
        message = decode(data)
    except FramingError as exc:
        code = exc.result_code
        assert code in (5011, 5015)
        return
    _same_as_a_plain_scan(data, message)
    _same_as_a_plain_scan(data, decode(data))  # (again: now from the cache)
    # The flat pass (decoding lazily) gives up on exactly the messages with a problem, and
    # otherwise decodes them as the full decoder does.
    flat = _decode_flat(data, len(data))
    assert (flat is None) == bool(message.problems)
    if flat is not None:
        _same_as_a_plain_scan(data, flat)
    problems = validate(message)
    _touch(message.avps)
    message.session_id  # noqa: B018
    message.result_code  # noqa: B018
    if problems:
        answer = error_answer(
            message, problems, origin_host="o", origin_realm="r", copy=("CC-Request-Type",)
        )
    else:
        answer = make_answer(message, result_code=2001, origin_host="o", origin_realm="r")
        _same_answer(AnswerTemplate("o", "r").answer(message, 2001), answer)
        copy = ("Auth-Application-Id", "CC-Request-Type", "CC-Request-Number")
        _same_answer(
            AnswerTemplate("o", "r", copy).answer(message, 5030),
            make_answer(message, result_code=5030, origin_host="o", origin_realm="r", copy=copy),
        )
    assert decode(answer.to_bytes()).problems == []


def _same_answer(ours: Message, reference: Message) -> None:
    """An answer from a template is make_answer's, AVP for AVP and byte for byte."""
    assert (ours.command_code, ours.application_id, ours.flags, ours.hop_by_hop,
            ours.end_to_end) == (reference.command_code, reference.application_id,
                                 reference.flags, reference.hop_by_hop,
                                 reference.end_to_end)  # fmt: skip
    assert _tree(ours.avps) == _tree(reference.avps)
    assert ours.to_bytes() == reference.to_bytes()


_SAMPLE = gy_ccr().to_bytes()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(data: bytes) -> None:
    _exercise(data)
    framer = Framer()
    framer.receive_data(data)
    try:
        while framer.next_message() is not NEED_DATA:
            pass
    except FramingError:
        pass


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(20, len(_SAMPLE) - 1), st.integers(0, 255)), min_size=1, max_size=6
    )
)
def test_fuzz_mutated_ccr(edits: list[tuple[int, int]]) -> None:
    data = bytearray(_SAMPLE)
    for position, value in edits:
        data[position] = value
    _exercise(bytes(data))


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=200), st.integers(0, 2**32 - 1), st.integers(0, 255))
def test_fuzz_avp_bodies(body: bytes, code: int, flags: int) -> None:
    # Any AVP header with any body, inside a message whose framing is right.
    length = 8 + len(body) if not flags & 0x80 else 12 + len(body)
    head = struct.pack(">II", code, (flags << 24) | (length & 0xFFFFFF))
    if flags & 0x80:
        head += b"\0\0\x28\xaf"
    _exercise(message_with(SESSION + head + body))


def test_build_avps_accepts_avps_and_pairs() -> None:
    built = build_avps([avp("CC-Time", 1), ("CC-Time", 2)])
    assert [a.value for a in built] == [1, 2]
    assert BY_NAME["CC-Time"].code == 420


def test_a_malformed_proxy_info_is_not_echoed() -> None:
    # Found by test_fuzz_mutated_ccr: a byte turned Service-Context-Id into a Proxy-Info whose
    # "members" are the text 32251@3gpp.org; copying it into the answer made the answer bad.
    data = bytearray(_SAMPLE)
    data[115] = 28
    _exercise(bytes(data))


def test_answers_from_pre_encoded_avps_are_what_python_diameter_reads() -> None:
    """An AVP keeps its encoding (Avp.to_bytes), so answers share the bytes of their common
    AVPs (Result-Code, Origin-Host, a cached MSCC): each answer is still the message its AVPs
    say, for python-diameter as for a fresh encoding, and a request's echoed AVPs are its own."""
    mscc = avp(
        "Multiple-Services-Credit-Control",
        [("Granted-Service-Unit", [("CC-Time", 60)]), ("Rating-Group", 100),
         ("Result-Code", c.DIAMETER_SUCCESS)],
    )  # fmt: skip
    first = mscc.to_bytes()
    for number, (hop, sid) in enumerate([(1, "gw;1"), (2, "gw;2;long-session-id"), (3, "g")]):
        request = decode(
            make_request(
                c.CMD_CREDIT_CONTROL, 4,
                [("Session-Id", sid), ("Origin-Host", "gw"), ("Origin-Realm", "example"),
                 ("Destination-Realm", "ocs"), ("Auth-Application-Id", 4),
                 ("CC-Request-Type", 2), ("CC-Request-Number", number)],
                hop_by_hop=hop, end_to_end=hop,
            ).to_bytes()
        )  # fmt: skip
        answer = make_answer(
            request, [mscc], result_code=c.DIAMETER_SUCCESS, origin_host="ocs.example",
            origin_realm="example", copy=("Auth-Application-Id", "CC-Request-Type",
                                          "CC-Request-Number"),
        )  # fmt: skip
        data = answer.to_bytes()
        assert data == answer.to_bytes()  # (the second time from the kept encodings)
        fresh = b"".join(
            Avp(a.code, a.flags, a.vendor, a.data, a.definition).to_bytes() for a in answer.avps
        )
        assert data[20:] == fresh
        theirs: Any = TheirMessage.from_bytes(data)
        assert theirs.session_id == sid and theirs.cc_request_number == number
        assert theirs.header.hop_by_hop_identifier == hop
        assert theirs.multiple_services_credit_control[0].granted_service_unit.cc_time == 60
        same_tree(decode(data).avps, their_avps(data))
    assert mscc.to_bytes() is first


# --- the decoder's cache of clean top-level AVPs (docs/diameter.md, Speed) --------------------


def test_repeated_avps_come_from_the_cache_and_decode_the_same() -> None:
    data = gy_ccr().to_bytes()
    decode(data)  # (an AVP is kept on its second sighting)
    first, second = decode(data), decode(data)
    _same_as_a_plain_scan(data, second)
    origin = first.find("Origin-Host")
    assert origin is not None and second.find("Origin-Host") is origin  # one shared object
    mscc = second.find("Multiple-Services-Credit-Control")
    assert mscc is not None and mscc is first.find("Multiple-Services-Credit-Control")
    # Session-Ids are new in every session: decoded each time, never kept.
    assert second.find("Session-Id") is not first.find("Session-Id")
    assert not any(a.code == BY_NAME["Session-Id"].code for a, _ in _CLEAN_AVPS.values())
    # python-diameter reads the answer to the second as it reads the answer to the first.
    answers = [
        make_answer(m, result_code=2001, origin_host="ocs", origin_realm="r",
                    copy=("Auth-Application-Id", "CC-Request-Type", "CC-Request-Number"))
        for m in (first, second)
    ]  # fmt: skip
    assert answers[0].to_bytes() == answers[1].to_bytes()
    theirs = TheirMessage.from_bytes(answers[1].to_bytes())
    assert theirs.header.hop_by_hop_identifier == 7
    assert [a.code for a in theirs.avps] == [a.code for a in answers[0].avps]


def test_a_problem_is_found_again_next_to_cached_avps() -> None:
    clean = SESSION + raw(264, b"pgw.example.net") + raw(415, b"\0\0\0\x01")
    for _ in range(2):
        decode(message_with(clean))  # the clean AVPs are cached now
    for _ in range(2):  # (an AVP with a problem is not cached: found the second time too)
        bad = decode(message_with(clean + raw(1, b"\xff\xfe") + raw(415, b"\0\0\x01")))
        assert [p.result_code for p in bad.problems] == [5004, 5014]
        _same_as_a_plain_scan(message_with(clean + raw(1, b"\xff\xfe") + raw(415, b"\0\0\x01")),
                              bad)  # fmt: skip
    # The same bytes with reserved flag bits set are another AVP: 3009, not the cached one.
    flagged = decode(message_with(SESSION + raw(415, b"\0\0\0\x01", flags=0x41)))
    assert [p.result_code for p in flagged.problems] == [c.DIAMETER_INVALID_AVP_BITS]


def test_the_cache_of_clean_avps_is_bounded() -> None:
    for i in range(_CLEAN_AVPS_SIZE + 10):
        for _ in range(2):
            decode(message_with(SESSION + raw(264, f"host-{i}".encode())))
    assert 0 < len(_CLEAN_AVPS) <= _CLEAN_AVPS_SIZE and len(_SEEN_ONCE) <= _CLEAN_AVPS_SIZE
    # An AVP seen once takes no place (a Used-Service-Unit that differs in every CCR).
    once = raw(264, b"seen-once.example")
    decode(message_with(SESSION + once))
    assert all(a.data != b"seen-once.example" for a, _ in _CLEAN_AVPS.values())
    # An AVP too long to keep is decoded each time.
    long_host = raw(264, b"h" * 600)
    one, two, three = (decode(message_with(SESSION + long_host)) for _ in range(3))
    assert three.find("Origin-Host") is not two.find("Origin-Host")
    assert one.find("Origin-Host") is not two.find("Origin-Host")
    assert one.get_str("Origin-Host") == "h" * 600


# --- decoding lazily and answering from templates (docs/diameter.md, Speed) -------------------


def test_the_flat_pass_takes_cached_avps_and_decodes_the_rest_in_full() -> None:
    data = gy_ccr().to_bytes()
    decode(data)
    decode(data)  # (every clean AVP but the Session-Id is cached now)
    flat = _decode_flat(data, len(data))
    assert flat is not None
    _same_as_a_plain_scan(data, flat)
    origin = decode(data).find("Origin-Host")
    assert flat.find("Origin-Host") is origin  # the cached object
    assert flat.session_id == "pgw.example;1;2" and validate(flat) == []
    # The run of cached AVPs after the Session-Id is kept, and found again as one piece.
    assert any(avps[0] is origin for avps, _ in _RUNS.values())
    again = _decode_flat(data, len(data))
    assert again is not None and again.find("Origin-Host") is origin
    _same_as_a_plain_scan(data, again)
    # A CC-Request-Number new in this CCR, next to cached AVPs: decoded in full, alone; and
    # the run that differs from a kept one in its last AVP is not taken for it.
    for number in (77, 77, 77, 78):
        fresh = gy_ccr(number=number).to_bytes()
        flat = _decode_flat(fresh, len(fresh))
        assert flat is not None and flat.get_int("CC-Request-Number") == number
        _same_as_a_plain_scan(fresh, flat)


@pytest.mark.parametrize(
    "body",
    [
        SESSION + raw(1, b"\xff\xfe"),  # 5004 after a clean Session-Id
        raw(263, b"\xff\xfe"),  # a Session-Id that is not UTF-8
        SESSION + raw(415, b"\0\0\x01"),  # 5014: the wrong size
        SESSION + raw(415, b"\0\0\0\x01", flags=0x41),  # 3009: reserved bits
        SESSION + raw(999_999, b"x"),  # 5001: unknown with the M-bit
        SESSION + struct.pack(">II", 264, (0x40 << 24) | 4),  # a length under a header's
        SESSION + struct.pack(">II", 264, (0x40 << 24) | 400) + b"host",  # overruns
    ],
)
def test_the_flat_pass_leaves_every_problem_to_the_full_decoder(body: bytes) -> None:
    data = message_with(body)
    for _ in range(3):  # (cold, then with whatever the cache holds)
        assert _decode_flat(data, len(data)) is None
        message = decode(data)
        assert message.problems
        _same_as_a_plain_scan(data, message)
    # A request with the E-bit: the full decoder's 3008.
    flagged = message_with(SESSION, flags=0xA0)
    assert _decode_flat(flagged, len(flagged)) is None
    assert [p.result_code for p in decode(flagged).problems] == [c.DIAMETER_INVALID_HDR_BITS]


_COPY_KEYS = ["Auth-Application-Id", "CC-Request-Type", "CC-Request-Number", "Session-Id",
              "Proxy-Info", "Destination-Host", 258, (415, 0)]  # fmt: skip
_EXTRA_AVPS = [
    avp("Proxy-Info", [("Proxy-Host", "relay.example"), ("Proxy-State", b"\x01")]),
    avp("Proxy-Info", [("Proxy-Host", "relay2.example"), ("Proxy-State", b"")]),
    avp("CC-Request-Number", 9),
    avp("Session-Id", "second;session"),
    avp("Destination-Host", "ocs.example"),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(1, 4),
    st.integers(0, 2**32 - 1),
    st.booleans(),
    st.lists(st.sampled_from(_EXTRA_AVPS), max_size=4),
    st.lists(st.sampled_from(_COPY_KEYS), max_size=5),
    st.sampled_from([2001, 2002, 3002, 3004, 4010, 4012, 5012, 5030]),
    st.lists(st.sampled_from(["mscc", "ccfh", "validity"]), max_size=3),
)
def test_answers_from_a_template_equal_make_answer(
    request_type: int,
    number: int,
    with_session: bool,
    extra: list[Avp],
    copy: list[Any],
    result_code: int,
    body: list[str],
) -> None:
    base = gy_ccr(request_type, number, hop=number, end=number ^ 0xFFFF)
    avps = [a for a in base.avps if with_session or a.code != 263] + extra
    data = Message(base.command_code, avps, 4, base.flags, base.hop_by_hop,
                   base.end_to_end).to_bytes()  # fmt: skip
    request = decode(data)
    assert request.problems == []  # (a clean request: the template's own path)
    items = [
        {
            "mscc": avp("Multiple-Services-Credit-Control",
                        [("Granted-Service-Unit", [("CC-Time", 60)]), ("Rating-Group", 10),
                         ("Result-Code", result_code)]),
            "ccfh": avp("Credit-Control-Failure-Handling", 2),
            "validity": avp("Validity-Time", 300),
        }[name]
        for name in body
    ]  # fmt: skip
    template = AnswerTemplate("ocs.example", "example", copy)
    for _ in range(2):  # (the second from the template's cached piece)
        ours = template.answer(request, result_code, items)
        reference = make_answer(request, items, result_code=result_code,
                                origin_host="ocs.example", origin_realm="example",
                                copy=copy)  # fmt: skip
        _same_answer(ours, reference)
    # An independent decoder reads it: python-diameter.
    theirs: Any = TheirMessage.from_bytes(ours.to_bytes())
    assert theirs.header.hop_by_hop_identifier == number
    assert theirs.header.end_to_end_identifier == number ^ 0xFFFF
    assert [a.code for a in their_avps(ours.to_bytes())] == [a.code for a in reference.avps]
    assert decode(ours.to_bytes()).problems == []


def test_a_template_answers_an_unclean_request_as_make_answer_does() -> None:
    # A request with a problem (answered by the server with error_answer, but the template
    # must not take shortcuts with it either): Session-Id not UTF-8, a reserved-bit AVP.
    data = message_with(raw(263, b"\xff") + raw(415, b"\0\0\0\x01", flags=0x41)
                        + raw(258, b"\0\0\0\x04"))  # fmt: skip
    request = decode(data)
    assert request.problems
    copy = ("Auth-Application-Id", "CC-Request-Number")
    _same_answer(
        AnswerTemplate("o", "r", copy).answer(request, 2001),
        make_answer(request, result_code=2001, origin_host="o", origin_realm="r", copy=copy),
    )
    # Items given as (name, value) pairs: make_answer builds them.
    built = make_request(272, 4, [("Session-Id", "a;b")], hop_by_hop=1, end_to_end=2)
    _same_answer(
        AnswerTemplate("o", "r").answer(built, 2001, [("Validity-Time", 5)]),
        make_answer(built, [("Validity-Time", 5)], result_code=2001, origin_host="o",
                    origin_realm="r"),
    )  # fmt: skip


_TYPE = raw(450, b"\0\0\0\0")
_DATA = raw(444, b"4917000001")


@pytest.mark.parametrize(
    "group",
    [
        raw(443, _TYPE + _DATA),  # what a gateway sends: read without _scan
        raw(443, _TYPE + raw(444, b"491700001")),  # data padded
        raw(443, _DATA + _TYPE),  # members the other way round
        raw(443, _TYPE + _DATA + raw(450, b"\0\0\0\x01")),  # a third member
        raw(443, _TYPE),  # Subscription-Id-Data missing (validate's 5005)
        raw(443, _TYPE + raw(444, b"\xff\xfe")),  # not UTF-8 (5004)
        raw(443, raw(450, b"\0\0\0") + _DATA),  # the wrong size (5014)
        raw(443, _TYPE + _DATA, flags=0x00),  # no M-bit
        raw(443, raw(450, b"\0\0\0\0", flags=0x60) + _DATA),  # the P-bit on a member
        raw(443, _TYPE + raw(444, b"x", flags=0x41)),  # reserved bits on a member (3009)
        raw(443, _TYPE + raw(444, b"49", vendor=10415)),  # a vendor's member
        raw(443, _TYPE + _DATA[:-2]),  # the last member unpadded at the group's end
        raw(443, _TYPE + raw(444, b"")),  # empty data
    ],
)
def test_a_subscription_id_is_read_as_scan_reads_it(group: bytes) -> None:
    data = message_with(SESSION + group + raw(415, b"\0\0\0\x01"))
    plain = decode(data)
    _same_as_a_plain_scan(data, plain)
    flat = _decode_flat(data, len(data))
    assert (flat is None) == bool(plain.problems)
    if flat is not None:
        _same_as_a_plain_scan(data, flat)
        assert validate(flat) == validate(plain)
