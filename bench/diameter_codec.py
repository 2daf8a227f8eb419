"""Diameter codec round trip: ours against python-diameter, on the same bytes.

A round trip is what the Gy agent does per request: decode a CCR-UPDATE (~670 bytes: MSCC
with Used- and Requested-Service-Unit, two Subscription-Ids,
Service-Information/PS-Information), check it, read what charging needs (request type and
number, subscriber, rating group, used octets, SGSN PLMN, RAT type), build the CCA (MSCC with
Granted-Service-Unit, Validity-Time, per-MSCC Result-Code, Volume-Quota-Threshold) and encode
it. Each codec runs it in batches, alternating, timed in CPU time of the thread; the medians of
several runs are reported.

    .venv/bin/python -m bench.diameter_codec [--runs N] [--batch N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bench.report import append_section
from protocols.diameter import codec
from protocols.diameter.constants import (
    APP_CREDIT_CONTROL,
    CMD_CREDIT_CONTROL,
    DIAMETER_SUCCESS,
    CcRequestType,
    ReportingReason,
    SubscriptionIdType,
)

ORIGIN_HOST = "ocs.example.net"
ORIGIN_REALM = "example.net"


def ccr_update() -> bytes:
    """A Gy CCR-UPDATE as a PGW sends it (about 670 bytes)."""
    items: list[codec.Item] = [
        ("Session-Id", "pgw01.epc.mnc001.mcc262.3gppnetwork.org;1700000000;42"),
        ("Origin-Host", "pgw01.epc.mnc001.mcc262.3gppnetwork.org"),
        ("Origin-Realm", "epc.mnc001.mcc262.3gppnetwork.org"),
        ("Destination-Realm", ORIGIN_REALM),
        ("Auth-Application-Id", APP_CREDIT_CONTROL),
        ("Service-Context-Id", "32251@3gpp.org"),
        ("CC-Request-Type", CcRequestType.UPDATE_REQUEST),
        ("CC-Request-Number", 3),
        ("Destination-Host", ORIGIN_HOST),
        ("Event-Timestamp", datetime(2026, 11, 22, 3, 15, tzinfo=UTC)),
        (
            "Subscription-Id",
            [
                ("Subscription-Id-Type", SubscriptionIdType.END_USER_E164),
                ("Subscription-Id-Data", "4915112345678"),
            ],
        ),
        (
            "Subscription-Id",
            [
                ("Subscription-Id-Type", SubscriptionIdType.END_USER_IMSI),
                ("Subscription-Id-Data", "262011234567890"),
            ],
        ),
        ("Multiple-Services-Indicator", 1),
        (
            "Multiple-Services-Credit-Control",
            [
                ("Requested-Service-Unit", []),
                (
                    "Used-Service-Unit",
                    [
                        ("CC-Total-Octets", 1_048_576),
                        ("CC-Input-Octets", 48_576),
                        ("CC-Output-Octets", 1_000_000),
                    ],
                ),
                ("Rating-Group", 10),
                ("Reporting-Reason", ReportingReason.QUOTA_EXHAUSTED),
            ],
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
                        ("3GPP-IMSI-MCC-MNC", "26201"),
                        ("Called-Station-Id", "internet"),
                        ("3GPP-SGSN-MCC-MNC", "26201"),
                        ("3GPP-User-Location-Info", bytes.fromhex("8262f2100001262f21000abc01")),
                        ("3GPP-RAT-Type", b"\x06"),
                    ],
                )
            ],
        ),
    ]
    message = codec.make_request(
        CMD_CREDIT_CONTROL,
        APP_CREDIT_CONTROL,
        items,
        hop_by_hop=0x1234,
        end_to_end=0x5678,
        proxiable=True,
    )
    return message.to_bytes()


_COPY = ("Auth-Application-Id", "CC-Request-Type", "CC-Request-Number")


def ours(data: bytes) -> bytes:
    """Decode the CCR, check it, read it, answer it with ours."""
    request = codec.decode(data)
    if codec.validate(request):
        raise AssertionError("the CCR has problems")
    request.get_int("CC-Request-Type")
    request.get_int("CC-Request-Number")
    subscriber = request.get_str("Subscription-Id", "Subscription-Id-Data")
    ps = request.find("Service-Information", "PS-Information")
    assert ps is not None
    ps.get_str("3GPP-SGSN-MCC-MNC")
    ps.get_bytes("3GPP-RAT-Type")
    answers: list[codec.Item] = []
    for mscc in request.find_all("Multiple-Services-Credit-Control"):
        rating_group = mscc.get_int("Rating-Group")
        mscc.get_int("Used-Service-Unit", "CC-Total-Octets")
        mscc.find("Requested-Service-Unit")
        answers.append(
            (
                "Multiple-Services-Credit-Control",
                [
                    ("Granted-Service-Unit", [("CC-Total-Octets", 10_485_760)]),
                    ("Rating-Group", rating_group),
                    ("Validity-Time", 3600),
                    ("Result-Code", DIAMETER_SUCCESS),
                    ("Volume-Quota-Threshold", 1_048_576),
                ],
            )
        )
    assert subscriber
    answer = codec.make_answer(
        request,
        answers,
        result_code=DIAMETER_SUCCESS,
        origin_host=ORIGIN_HOST,
        origin_realm=ORIGIN_REALM,
        copy=_COPY,
    )
    return answer.to_bytes()


def theirs(data: bytes) -> bytes:
    """The same with python-diameter."""
    from diameter.message import Message
    from diameter.message.avp.grouped import (
        GrantedServiceUnit,
        MultipleServicesCreditControl,
    )
    from diameter.message.commands.credit_control import CreditControlAnswer

    request: Any = Message.from_bytes(data)
    request.cc_request_type  # noqa: B018 - reading is the work measured
    request.cc_request_number  # noqa: B018
    subscriber = request.subscription_id[0].subscription_id_data
    ps = request.service_information.ps_information
    ps.tgpp_sgsn_mcc_mnc  # noqa: B018
    ps.tgpp_rat_type  # noqa: B018
    answer: Any = CreditControlAnswer()
    answer.header.hop_by_hop_identifier = request.header.hop_by_hop_identifier
    answer.header.end_to_end_identifier = request.header.end_to_end_identifier
    answer.header.is_proxyable = True
    answer.header.application_id = APP_CREDIT_CONTROL
    answer.session_id = request.session_id
    answer.result_code = DIAMETER_SUCCESS
    answer.origin_host = ORIGIN_HOST.encode()
    answer.origin_realm = ORIGIN_REALM.encode()
    answer.auth_application_id = request.auth_application_id
    answer.cc_request_type = request.cc_request_type
    answer.cc_request_number = request.cc_request_number
    for mscc in request.multiple_services_credit_control:
        mscc.used_service_unit[0].cc_total_octets  # noqa: B018
        answer.add_multiple_services_credit_control(
            MultipleServicesCreditControl(
                granted_service_unit=GrantedServiceUnit(cc_total_octets=10_485_760),
                rating_group=mscc.rating_group,
                validity_time=3600,
                result_code=DIAMETER_SUCCESS,
                volume_quota_threshold=1_048_576,
            )
        )
    assert subscriber
    return bytes(answer.as_bytes())


def _per_call_us(function: Callable[[bytes], bytes], data: bytes, batch: int) -> float:
    # CPU time of this thread, not wall time: other processes on a shared machine then
    # change the figures much less (caches and SMT siblings still do; compare the ratio).
    start = time.thread_time()
    for _ in range(batch):
        function(data)
    return (time.thread_time() - start) / batch * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per codec (median reported)")
    parser.add_argument("--batch", type=int, default=2000, help="round trips per run")
    parser.add_argument("--no-append", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args(argv)
    data = ccr_update()
    # Both must understand the same bytes: decode each answer with the other codec.
    theirs_answer = codec.decode(theirs(data))
    ours_answer = codec.decode(ours(data))
    assert theirs_answer.result_code == ours_answer.result_code == DIAMETER_SUCCESS
    for function in (ours, theirs):
        _per_call_us(function, data, max(1, args.batch // 10))  # warm-up
    results: dict[str, list[float]] = {"ours": [], "python-diameter": []}
    ratios: list[float] = []
    for _ in range(args.runs):
        results["ours"].append(_per_call_us(ours, data, args.batch))
        results["python-diameter"].append(_per_call_us(theirs, data, max(1, args.batch // 10)))
        ratios.append(results["python-diameter"][-1] / results["ours"][-1])
    ours_us = statistics.median(results["ours"])
    theirs_us = statistics.median(results["python-diameter"])
    lines = [
        f"A Gy round trip (decode a CCR-U of {len(data)} bytes, read what charging needs, build "
        f"and encode the CCA of {len(ours(data))} bytes), CPU time of the thread; medians of "
        f"{args.runs} runs, the codecs alternating; the ratio taken within each run.",
        "",
        "| codec | µs per round trip (CPU) | round trips/s |",
        "|---|---:|---:|",
        f"| ours (protocols/diameter/codec.py) | {ours_us:.1f} | {1e6 / ours_us:,.0f} |",
        f"| python-diameter | {theirs_us:.1f} | {1e6 / theirs_us:,.0f} |",
        "",
        f"Same-run ratio: ours is {statistics.median(ratios):.1f}x faster "
        f"(range {min(ratios):.1f}-{max(ratios):.1f}x).",
    ]
    print("\n".join(lines))
    if not args.no_append:
        append_section("Diameter codec: ours vs python-diameter (bench/diameter_codec.py)", lines,
                       libraries=("python-diameter",))  # fmt: skip


if __name__ == "__main__":
    main()
