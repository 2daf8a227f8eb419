"""Wireshark's Diameter dissector as the judge of our bytes.

Each message goes into a pcap of its own TCP port pair (text2pcap), the pcaps are merged, and
tshark must decode every one as Diameter with no malformed packet and no expert info at
warning level or above. Skipped where tshark is not installed (``apt-get install tshark``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ocs.agents.diameter import server_request
from protocols.diameter import (
    LocalIdentity,
    Message,
    PeerMachine,
    Role,
    Send,
    decode,
    make_answer,
    make_request,
)
from protocols.diameter import constants as c
from protocols.diameter.dictionary import AVPS

pytestmark = pytest.mark.skipif(
    shutil.which("tshark") is None or shutil.which("text2pcap") is None,
    reason="tshark/text2pcap not installed (apt-get install tshark)",
)

WIRESHARK_DICTIONARY = Path("/usr/share/wireshark/diameter")


def gy_ccr(request_type: int, number: int) -> Message:
    mscc: list[Any] = [("Rating-Group", 10), ("Service-Identifier", 1)]
    if request_type != c.CcRequestType.TERMINATION_REQUEST:
        mscc.insert(0, ("Requested-Service-Unit", [("CC-Total-Octets", 1_000_000)]))
    if request_type != c.CcRequestType.INITIAL_REQUEST:
        mscc.insert(
            0,
            (
                "Used-Service-Unit",
                [
                    ("CC-Time", 60),
                    ("CC-Total-Octets", 500_000),
                    ("CC-Input-Octets", 100_000),
                    ("CC-Output-Octets", 400_000),
                    ("Reporting-Reason", c.ReportingReason.QUOTA_EXHAUSTED),
                ],
            ),
        )
    items: list[Any] = [
        ("Session-Id", "pgw.example;1;1"),
        ("Origin-Host", "pgw.example"),
        ("Origin-Realm", "example"),
        ("Destination-Realm", "ocs.example"),
        ("Auth-Application-Id", 4),
        ("Service-Context-Id", "32251@3gpp.org"),
        ("CC-Request-Type", request_type),
        ("CC-Request-Number", number),
        ("Event-Timestamp", datetime(2026, 11, 22, 3, 15, tzinfo=UTC)),
        ("Subscription-Id", [("Subscription-Id-Type", 0), ("Subscription-Id-Data", "4915112345")]),
        ("Subscription-Id", [("Subscription-Id-Type", 1), ("Subscription-Id-Data", "262011234")]),
        ("Multiple-Services-Indicator", 1),
        ("Multiple-Services-Credit-Control", mscc),
        (
            "User-Equipment-Info",
            [("User-Equipment-Info-Type", 0), ("User-Equipment-Info-Value", b"3534560123456701")],
        ),
        (
            "Service-Information",
            [
                (
                    "PS-Information",
                    [
                        ("3GPP-Charging-Id", b"\x12\x34\x56\x78"),
                        ("3GPP-PDP-Type", 0),
                        ("PDP-Address", "10.45.0.17"),
                        ("SGSN-Address", "192.0.2.10"),
                        ("GGSN-Address", "2001:db8::20"),
                        ("3GPP-IMSI-MCC-MNC", "26201"),
                        ("3GPP-SGSN-MCC-MNC", "26201"),
                        ("Called-Station-Id", "internet"),
                        ("3GPP-RAT-Type", b"\x06"),
                        ("3GPP-MS-TimeZone", b"\x40\x00"),
                    ],
                )
            ],
        ),
    ]
    if request_type == c.CcRequestType.TERMINATION_REQUEST:
        items.append(("Termination-Cause", c.TerminationCause.DIAMETER_LOGOUT))
    return make_request(272, 4, items, hop_by_hop=number + 1, end_to_end=number + 1, proxiable=True)


def cca(request: Message) -> Message:
    return make_answer(
        request,
        [
            (
                "Multiple-Services-Credit-Control",
                [
                    ("Granted-Service-Unit", [("CC-Total-Octets", 10_485_760)]),
                    ("Rating-Group", 10),
                    ("Validity-Time", 3600),
                    ("Result-Code", c.DIAMETER_SUCCESS),
                    ("Volume-Quota-Threshold", 1_048_576),
                    ("Final-Unit-Indication", [("Final-Unit-Action", 0)]),
                ],
            ),
            (
                "Cost-Information",
                [
                    ("Unit-Value", [("Value-Digits", 1234), ("Exponent", -2)]),
                    ("Currency-Code", 978),
                ],
            ),
        ],
        result_code=c.DIAMETER_SUCCESS,
        origin_host="ocs.example",
        origin_realm="example",
        copy=("Auth-Application-Id", "CC-Request-Type", "CC-Request-Number"),
    )


def messages() -> list[Message]:
    ocs = PeerMachine(LocalIdentity("ocs.example", "example", ("192.0.2.1", "2001:db8::1")))
    gateway = PeerMachine(
        LocalIdentity("pgw.example", "example", ("192.0.2.2",)), role=Role.INITIATOR
    )
    ocs.start(0.0)
    cer = next(a.message for a in gateway.start(0.0) if isinstance(a, Send))
    cea = next(a.message for a in ocs.receive(decode(cer.to_bytes()), 0.1) if isinstance(a, Send))
    dwr = make_request(
        280,
        0,
        [("Origin-Host", "pgw.example"), ("Origin-Realm", "example")],
        hop_by_hop=90,
        end_to_end=91,
    )
    dpr = make_request(
        282,
        0,
        [("Origin-Host", "ocs.example"), ("Origin-Realm", "example"), ("Disconnect-Cause", 0)],
        hop_by_hop=92,
        end_to_end=93,
    )
    ccrs = [gy_ccr(t, n) for n, t in enumerate((1, 2, 3))]
    out = [cer, cea, dwr, answer(dwr), *ccrs, *(cca(r) for r in ccrs), dpr, answer(dpr)]
    out.append(
        make_request(
            272,
            4,
            [*ccrs[0].avps[:8], ("Requested-Action", 0)],
            hop_by_hop=99,
            end_to_end=99,
            proxiable=True,
        )
    )  # EVENT-like
    # What the agent sends of its own accord, and the gateway's answers.
    for command in (c.CMD_RE_AUTH, c.CMD_ABORT_SESSION):
        request = server_request(
            command, "pgw.example;1;2", "ocs.example", "example", "pgw.example", "example"
        )
        request.hop_by_hop = request.end_to_end = 100 + command
        out += [request, answer(request)]
    return out


def answer(request: Message) -> Message:
    return make_answer(request, result_code=2001, origin_host="x.example", origin_realm="example")


def test_tshark_decodes_every_message_cleanly(tmp_path: Path) -> None:
    pcaps = []
    expected = []
    for i, message in enumerate(messages()):
        data = message.to_bytes()
        expected.append((message.command_code, message.is_request))
        hex_file = tmp_path / f"m{i}.txt"
        # od-style hex dump, as text2pcap reads it.
        lines = [
            f"{offset:06x} " + " ".join(f"{b:02x}" for b in data[offset : offset + 16])
            for offset in range(0, len(data), 16)
        ]
        hex_file.write_text("\n".join(lines) + "\n")
        pcap = tmp_path / f"m{i}.pcap"
        subprocess.run(
            ["text2pcap", "-q", "-T", f"{40000 + i},3868", str(hex_file), str(pcap)],
            check=True,
            capture_output=True,
            timeout=30,
        )
        pcaps.append(str(pcap))
    merged = tmp_path / "all.pcap"
    subprocess.run(["mergecap", "-a", "-w", str(merged), *pcaps], check=True, timeout=30)
    bad = subprocess.run(
        [
            "tshark", "-r", str(merged), "-Y",
            '_ws.malformed || _ws.expert.severity >= "Warning"',
            "-T", "fields", "-e", "frame.number", "-e", "_ws.expert.message",
        ],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.stdout.strip() == "", bad.stdout
    fields = subprocess.run(
        [
            "tshark", "-r", str(merged), "-Y", "diameter", "-T", "fields",
            "-e", "diameter.cmd.code", "-e", "diameter.flags.request",
            "-e", "diameter.CC-Request-Type", "-e", "diameter.Result-Code",
        ],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    rows = [line.split("\t") for line in fields.stdout.strip().splitlines()]
    assert len(rows) == len(expected), fields.stdout
    for row, (code, is_request) in zip(rows, expected, strict=True):
        assert int(row[0]) == code
        assert row[1] in ("1", "True") if is_request else row[1] in ("0", "False")
    assert [row[2] for row in rows if row[0] == "272" and row[1] in ("1", "True")][:3] == [
        "1",
        "2",
        "3",
    ]


_WIRE = {
    "OctetString": {"OCTET_STRING", "UTF8STRING", "DIAMETER_IDENTITY"},
    "OctetStringOrUTF8": {"OCTET_STRING", "UTF8STRING"},
    "UTF8String": {"UTF8STRING", "OCTET_STRING"},
    "DiameterIdentity": {"DIAMETER_IDENTITY"},
    "DiameterURI": {"DIAMETER_URI"},
    "IPFilterRule": {"IP_FILTER_RULE"},
    "Unsigned32": {"UNSIGNED32"},
    "AppId": {"UNSIGNED32"},
    "VendorId": {"UNSIGNED32"},
    "Integer32": {"INTEGER32", "ENUMERATED"},
    "Enumerated": {"ENUMERATED", "UNSIGNED32", "INTEGER32"},
    "Unsigned64": {"UNSIGNED64"},
    "Integer64": {"INTEGER64"},
    "Grouped": {"GROUPED"},
    "IPAddress": {"ADDRESS"},
    "Time": {"TIME"},
}
#: TS 29.061 gives these RADIUS-format (4-octet) addresses the OctetString type in Diameter,
#: as python-diameter does; Wireshark's dictionary calls them IPAddress.
#: RFC 6733 §8.9 makes Authorization-Lifetime an Unsigned32; Wireshark says Integer32.
_TYPE_EXCEPTIONS = {(4, 10415), (6, 10415), (7, 10415), (291, 0)}


@pytest.mark.skipif(not WIRESHARK_DICTIONARY.is_dir(), reason="no Wireshark dictionary")
def test_dictionary_agrees_with_wireshark() -> None:
    known: dict[tuple[int, int], str] = {}
    vendors = {"": 0, "TGPP": 10415}
    for path in WIRESHARK_DICTIONARY.glob("*.xml"):
        text = path.read_text(errors="replace")
        text = re.sub(r"<\?xml.*?\?>", "", text)
        text = re.sub(r"<!DOCTYPE.*?\]>", "", text, flags=re.S)
        text = re.sub(r"&\w+;", "", text)
        try:
            root = ET.fromstring(f"<root>{text}</root>")
        except ET.ParseError:
            continue
        for element in root.iter("avp"):
            vendor = vendors.get(element.get("vendor-id", ""))
            if vendor is None:
                continue
            kind = element.find("type")
            type_name = kind.get("type-name", "") if kind is not None else "Grouped"
            known.setdefault((int(element.get("code", "-1")), vendor), type_name)
    checked = 0
    disagree = []
    for definition in AVPS:
        key = (definition.code, definition.vendor)
        if key not in known or key in _TYPE_EXCEPTIONS:
            continue
        checked += 1
        if definition.type.name not in _WIRE[known[key]]:
            disagree.append((definition.name, definition.type.name, known[key]))
    assert disagree == []
    assert checked > len(AVPS) * 0.9
