"""Gy/Ro end to end: a gateway over TCP, the OCS from run_ocs, balances in a real Redis.

Most exchanges use our codec (tests/test_diameter_server.py's ``Gateway``); one CCR is built,
and its CCA read, by the independent python-diameter package; one live exchange is judged by
Wireshark's dissector.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from diameter.message import Message as TheirMessage
from diameter.message.avp.grouped import RequestedServiceUnit
from diameter.message.commands.credit_control import CreditControlAnswer, CreditControlRequest
from secure import SECURE
from test_diameter_server import Gateway

from ocs.config import ConfigError, Settings, load_settings
from ocs.service import Running, run_ocs
from protocols.diameter import Avp, Item, Message, decode, make_request, raw_avp
from protocols.diameter import constants as c
from tariffs import parse_plan

SETTINGS = Settings(
    native_port=0, http_port=0, diameter_port=0, validity=60, grace=10, sweep_interval=0.2,
    diameter_host="ocs.test", diameter_realm="test", **SECURE,
)  # fmt: skip

#: Prices that do not depend on the time of day; every service named by Gy identifiers.
GY = parse_plan(
    """
name = "gy"
timezone = "UTC"
currency = "EUR"
free_destinations = ["emergency"]
rounding = { method = "half-even", decimals = 6 }
[numbering]
country_code = "49"
national_prefix = "0"
international_prefix = "00"
[destinations]
emergency = ["49112"]
[places]
home = ["26201"]
[services.voice]
unit = "seconds"
default_quota = 60
[services.voice.network]
rating_groups = [100]
service_contexts = ["32260@3gpp.org"]
[services.data]
unit = "octets"
default_quota = 1000000
[services.data.network]
rating_groups = [10]
service_contexts = ["32251@3gpp.org"]
[services.video]
unit = "octets"
default_quota = 2000000
[services.video.network]
rating_groups = [20]
[services.sms]
unit = "events"
default_quota = 1
[services.sms.network]
rating_groups = [200]
service_contexts = ["32274@3gpp.org"]
[[rates]]
service = "voice"
price = "0.09"
per = 60
[[rates]]
service = "data"
price = "0.01"
per = 1000000
[[rates]]
service = "video"
price = "0.02"
per = 1000000
[[rates]]
service = "sms"
price = "0.05"
"""
)

VOICE, DATA, SMS = "32260@3gpp.org", "32251@3gpp.org", "32274@3gpp.org"
INIT, UPD, TERM, EVENT = 1, 2, 3, 4


@pytest.fixture
async def ocs(redis_url: str) -> AsyncIterator[Running]:
    async with run_ocs(replace(SETTINGS, redis_url=redis_url), plans=[GY]) as running:
        yield running


@pytest.fixture
async def gw(ocs: Running) -> AsyncIterator[Gateway]:
    g = await Gateway.connect(ocs.diameter_port)
    yield g
    await g.close()


async def add(ocs: Running, msisdn: str, balance: int, state: str = "active") -> None:
    ans = await ocs.store.create_subscriber(
        msisdn, plan="gy", balance=balance, credit_limit=0, state=state, now=0
    )
    assert ans.status == "OK"


def mscc(
    rg: int | None = None,
    *,
    rsu: list[Item] | None = None,
    usu: list[Item] | None = None,
    si: int | None = None,
) -> Item:
    items: list[Item] = []
    if rsu is not None:
        items.append(("Requested-Service-Unit", rsu))
    if usu is not None:
        items.append(("Used-Service-Unit", usu))
    if si is not None:
        items.append(("Service-Identifier", si))
    if rg is not None:
        items.append(("Rating-Group", rg))
    return ("Multiple-Services-Credit-Control", items)


def ccr(
    gw: Gateway,
    session: str,
    kind: int,
    number: int,
    *extra: Item | Avp,
    subscriber: str | None = "4917000001",
    context: str = DATA,
    retransmit: bool = False,
) -> Message:
    items: list[Item | Avp] = [
        ("Session-Id", session),
        *gw.base(),
        ("Destination-Realm", "test"),
        ("Auth-Application-Id", 4),
        ("Service-Context-Id", context),
        ("CC-Request-Type", kind),
        ("CC-Request-Number", number),
    ]
    if subscriber is not None:
        items.append(
            (
                "Subscription-Id",
                [("Subscription-Id-Type", 1), ("Subscription-Id-Data", "262019999")],
            )
        )
        items.append(("Subscription-Id", [("Subscription-Id-Type", 0),
                                          ("Subscription-Id-Data", subscriber)]))  # fmt: skip
    items.extend(extra)
    return make_request(
        272, 4, items, hop_by_hop=0, end_to_end=0, proxiable=True, retransmit=retransmit
    )


def quotas(answer: Message) -> dict[int | None, dict[str, Any]]:
    """Each MSCC of a CCA by Rating-Group: result, granted units by AVP, validity, final."""
    out: dict[int | None, dict[str, Any]] = {}
    for m in answer.find_all("Multiple-Services-Credit-Control"):
        gsu = m.find("Granted-Service-Unit")
        out[m.get_int("Rating-Group")] = {
            "result": m.get_int("Result-Code"),
            "granted": {a.name: a.value for a in gsu.avps} if gsu is not None else {},
            "validity": m.get_int("Validity-Time"),
            "final": m.get_int("Final-Unit-Indication", "Final-Unit-Action"),
        }
    return out


async def balance(ocs: Running, msisdn: str = "4917000001") -> tuple[int, int, int]:
    acct = await ocs.store.get_account(msisdn)
    assert acct is not None
    return acct.balance, acct.reserved, len(acct.sessions)


async def test_voice_call_with_one_rating_group(ocs: Running, gw: Gateway) -> None:
    await add(ocs, "4917000001", 1_000_000)
    sid = "pgw.test;voice;1"
    voice: list[Item] = [("Service-Information", [("IMS-Information", [
        ("Called-Party-Address", "tel:+4930123456")])])]  # fmt: skip
    a = await gw.request(ccr(gw, sid, INIT, 0, mscc(100, rsu=[("CC-Time", 60)]), *voice,
                             context=VOICE))  # fmt: skip
    assert (a.name, a.result_code, a.session_id) == ("CCA", 2001, sid)
    assert (a.get_int("CC-Request-Type"), a.get_int("CC-Request-Number")) == (INIT, 0)
    assert a.get_int("Auth-Application-Id") == 4 and a.get_str("Origin-Host") == "ocs.test"
    assert a.get_int("Credit-Control-Failure-Handling") == 2  # RETRY_AND_TERMINATE
    assert quotas(a) == {100: {"result": 2001, "granted": {"CC-Time": 60}, "validity": 60,
                               "final": None}}  # fmt: skip
    a = await gw.request(ccr(gw, sid, UPD, 1, mscc(100, rsu=[], usu=[("CC-Time", 60)]),
                             context=VOICE))  # fmt: skip
    assert quotas(a)[100]["granted"] == {"CC-Time": 60}
    a = await gw.request(ccr(gw, sid, TERM, 2, mscc(100, usu=[("CC-Time", 10)]), context=VOICE))
    assert a.result_code == 2001 and quotas(a)[100] == {
        "result": 2001, "granted": {}, "validity": None, "final": None}  # fmt: skip
    assert await balance(ocs) == (1_000_000 - 90_000 - 15_000, 0, 0)
    counts = ocs.metrics.counts
    assert counts[("diameter", "CCR-I", "success")] == 1
    assert counts[("diameter", "CCR-T", "success")] == 1


async def test_data_session_with_several_rating_groups(ocs: Running, gw: Gateway) -> None:
    await add(ocs, "4917000001", 1_000_000)
    sid = "pgw.test;data;1"
    ps: Item = ("Service-Information", [("PS-Information", [("3GPP-SGSN-MCC-MNC", "26201")])])
    a = await gw.request(ccr(gw, sid, INIT, 0, mscc(10, rsu=[]), mscc(20, rsu=[
        ("CC-Total-Octets", 500_000)]), ps))  # fmt: skip
    assert quotas(a) == {
        10: {"result": 2001, "granted": {"CC-Total-Octets": 1_000_000}, "validity": 60,
             "final": None},
        20: {"result": 2001, "granted": {"CC-Total-Octets": 500_000}, "validity": 60,
             "final": None},
    }  # fmt: skip
    # RG 10 reports and asks again; RG 20 is quiet; RG 10's quota covers 1 MB = 0.01.
    a = await gw.request(ccr(gw, sid, UPD, 1, mscc(10, rsu=[], usu=[
        ("CC-Total-Octets", 1_000_000), ("Reporting-Reason", 3)])))  # fmt: skip
    assert list(quotas(a)) == [10] and quotas(a)[10]["result"] == 2001
    # CCR-T reports RG 10 only: RG 20 is released with nothing used.
    a = await gw.request(ccr(gw, sid, TERM, 2, mscc(10, usu=[("CC-Total-Octets", 500_000)])))
    assert a.result_code == 2001 and list(quotas(a)) == [10]
    assert await balance(ocs) == (1_000_000 - 10_000 - 5_000, 0, 0)


async def test_ccr_without_mscc_uses_the_service_context(ocs: Running, gw: Gateway) -> None:
    await add(ocs, "4917000001", 1_000_000)
    sid = "pgw.test;ctx;1"
    a = await gw.request(ccr(gw, sid, INIT, 0, ("Requested-Service-Unit", [("CC-Time", 30)]),
                             context=VOICE))  # fmt: skip
    assert a.result_code == 2001 and a.get_int("Granted-Service-Unit", "CC-Time") == 30
    assert a.get_int("Validity-Time") == 60 and a.find("Multiple-Services-Credit-Control") is None
    a = await gw.request(ccr(gw, sid, TERM, 1, ("Used-Service-Unit", [("CC-Time", 20)]),
                             context=VOICE))  # fmt: skip
    assert a.result_code == 2001
    assert await balance(ocs) == (1_000_000 - 30_000, 0, 0)


async def test_sms_event_direct_debit_charged_once(ocs: Running, gw: Gateway) -> None:
    await add(ocs, "4917000001", 1_000_000)
    sms: Item = ("Service-Information", [("SMS-Information", [("Recipient-Info", [
        ("Recipient-Address", [("Address-Data", "4917012345")])])])])  # fmt: skip
    request = ccr(gw, "smsc.test;1", EVENT, 0, ("Requested-Action", 0),
                  mscc(200, rsu=[("CC-Service-Specific-Units", 1)]), sms, context=SMS)  # fmt: skip
    a = await gw.request(request)
    assert a.result_code == 2001
    assert quotas(a)[200]["granted"] == {"CC-Service-Specific-Units": 1}
    again = await gw.request(ccr(gw, "smsc.test;1", EVENT, 0, ("Requested-Action", 0),
                                 mscc(200, rsu=[("CC-Service-Specific-Units", 1)]), sms,
                                 context=SMS, retransmit=True))  # fmt: skip
    assert quotas(again) == quotas(a)
    assert await balance(ocs) == (950_000, 0, 0)


async def test_refund_check_balance_and_price_enquiry(ocs: Running, gw: Gateway) -> None:
    await add(ocs, "4917000001", 100_000)
    units = mscc(200, rsu=[("CC-Service-Specific-Units", 2)])
    a = await gw.request(ccr(gw, "smsc.test;p", EVENT, 0, ("Requested-Action", 3), units,
                             context=SMS))  # fmt: skip
    assert a.result_code == 2001
    assert a.get_int("Cost-Information", "Unit-Value", "Value-Digits") == 1
    assert a.get_int("Cost-Information", "Unit-Value", "Exponent") == -1  # 0.10
    assert a.get_int("Cost-Information", "Currency-Code") == 978
    a = await gw.request(ccr(gw, "smsc.test;c", EVENT, 0, ("Requested-Action", 2), units,
                             context=SMS))  # fmt: skip
    assert a.get_int("Check-Balance-Result") == c.CheckBalanceResult.ENOUGH_CREDIT
    big = mscc(200, rsu=[("CC-Service-Specific-Units", 3)])
    a = await gw.request(ccr(gw, "smsc.test;c2", EVENT, 0, ("Requested-Action", 2), big,
                             context=SMS))  # fmt: skip
    assert a.get_int("Check-Balance-Result") == c.CheckBalanceResult.NO_CREDIT
    for _ in range(2):  # a refund is idempotent too
        a = await gw.request(ccr(gw, "smsc.test;r", EVENT, 0, ("Requested-Action", 1), units,
                                 context=SMS))  # fmt: skip
        assert a.result_code == 2001
    assert await balance(ocs) == (200_000, 0, 0)


async def test_out_of_credit_mid_session(ocs: Running, gw: Gateway) -> None:
    await add(ocs, "4917000001", 100_000)  # 60 s cost 0.09: one minute and 6 seconds
    sid = "pgw.test;voice;poor"
    a = await gw.request(ccr(gw, sid, INIT, 0, mscc(100, rsu=[]), context=VOICE))
    assert quotas(a)[100]["granted"] == {"CC-Time": 60}
    a = await gw.request(ccr(gw, sid, UPD, 1, mscc(100, rsu=[], usu=[("CC-Time", 60)]),
                             context=VOICE))  # fmt: skip
    assert quotas(a)[100] == {"result": 2001, "granted": {"CC-Time": 6}, "validity": 60,
                              "final": c.FinalUnitAction.TERMINATE}  # fmt: skip
    a = await gw.request(ccr(gw, sid, UPD, 2, mscc(100, rsu=[], usu=[("CC-Time", 6)]),
                             context=VOICE))  # fmt: skip
    assert a.result_code == 4012 and quotas(a)[100]["result"] == 4012
    assert quotas(a)[100]["granted"] == {}
    a = await gw.request(ccr(gw, sid, TERM, 3, mscc(100, usu=[("CC-Time", 0)]), context=VOICE))
    assert a.result_code == 2001
    assert await balance(ocs) == (1_000, 0, 0)


async def test_unknown_subscriber_and_barred(ocs: Running, gw: Gateway) -> None:
    a = await gw.request(ccr(gw, "s;nobody", INIT, 0, mscc(10, rsu=[]), subscriber="4917099999"))
    assert (a.result_code, a.get_int("CC-Request-Type")) == (5030, INIT)
    await add(ocs, "4917000002", 1_000_000, state="barred-all")
    a = await gw.request(ccr(gw, "s;barred", INIT, 0, mscc(10, rsu=[]), subscriber="4917000002"))
    assert a.result_code == 4010 and quotas(a)[10]["result"] == 4010
    a = await gw.request(ccr(gw, "s;anon", INIT, 0, mscc(10, rsu=[]), subscriber=None))
    assert a.result_code == 5005 and a.find("Failed-AVP", "Subscription-Id") is not None


async def test_free_destination_is_answered_4011(ocs: Running, gw: Gateway) -> None:
    await add(ocs, "4917000001", 0)
    sos: Item = ("Service-Information", [("IMS-Information", [
        ("Called-Party-Address", "tel:112")])])  # fmt: skip
    a = await gw.request(ccr(gw, "s;sos", INIT, 0, mscc(100, rsu=[]), sos, context=VOICE))
    assert quotas(a)[100]["result"] == 4011 and a.result_code == 4011
    assert await balance(ocs) == (0, 0, 0)


async def test_unknown_rating_group_is_5031(ocs: Running, gw: Gateway) -> None:
    await add(ocs, "4917000001", 1_000_000)
    a = await gw.request(ccr(gw, "s;rg", INIT, 0, mscc(10, rsu=[]), mscc(999, rsu=[])))
    assert a.result_code == 2001
    assert {rg: q["result"] for rg, q in quotas(a).items()} == {10: 2001, 999: 5031}


async def test_duplicate_ccr_u_is_charged_once_here_and_elsewhere(
    ocs: Running, gw: Gateway
) -> None:
    await add(ocs, "4917000001", 1_000_000)
    sid = "pgw.test;dup"
    await gw.request(ccr(gw, sid, INIT, 0, mscc(100, rsu=[]), context=VOICE))
    update = [mscc(100, rsu=[], usu=[("CC-Time", 60)])]
    first = await gw.request(ccr(gw, sid, UPD, 1, *update, context=VOICE))
    again = await gw.request(ccr(gw, sid, UPD, 1, *update, context=VOICE, retransmit=True))
    assert quotas(again) == quotas(first) and again.result_code == first.result_code == 2001
    # The same CC-Request-Number with other usage is not a retransmission: refused, no charge.
    other = [mscc(100, rsu=[], usu=[("CC-Time", 61)])]
    bad = await gw.request(ccr(gw, sid, UPD, 1, *other, context=VOICE))
    assert quotas(bad)[100]["result"] == 5004
    # The gateway fails over to another OCS process and repeats the request there.
    async with run_ocs(replace(SETTINGS, redis_url=ocs.redis_url), plans=[GY]) as other:
        g2 = await Gateway.connect(other.diameter_port)
        third = await g2.request(ccr(g2, sid, UPD, 1, *update, context=VOICE, retransmit=True))
        assert quotas(third) == quotas(first)
        term = [mscc(100, usu=[("CC-Time", 0)])]
        a = await g2.request(ccr(g2, sid, TERM, 2, *term, context=VOICE))
        assert a.result_code == 2001
        # The CCA-T was lost: the gateway retransmits the CCR-T (T flag, no Subscription-Id:
        # RFC 4006 asks for it only in the first request), here and at the first process.
        for g in (g2, gw):
            again = await g.request(
                ccr(g, sid, TERM, 2, *term, context=VOICE, subscriber=None, retransmit=True)
            )
            assert again.result_code == 2001 and quotas(again) == quotas(a)
            # ... and the CCR-U before it, after the session ended, without Subscription-Id.
            late = await g.request(
                ccr(g, sid, UPD, 1, *update, context=VOICE, subscriber=None, retransmit=True)
            )
            assert late.result_code == 2001 and quotas(late) == quotas(first)
        await g2.close()
    assert await balance(ocs) == (910_000, 0, 0)


async def test_unknown_session(ocs: Running, gw: Gateway) -> None:
    await add(ocs, "4917000001", 1_000_000)
    a = await gw.request(ccr(gw, "s;never", UPD, 1, mscc(10, rsu=[], usu=[("CC-Total-Octets", 1)])))
    assert a.result_code == 5002 and quotas(a)[10]["result"] == 5002
    a = await gw.request(ccr(gw, "s;never", TERM, 2))
    assert a.result_code == 5002


async def test_unknown_mandatory_avp_is_5001_with_failed_avp(ocs: Running, gw: Gateway) -> None:
    unknown = raw_avp(4242, b"\x00\x00\x00\x07", vendor=10415, mandatory=True)
    a = await gw.request(ccr(gw, "s;5001", INIT, 0, mscc(10, rsu=[]), unknown))
    assert a.result_code == 5001 and a.get_int("CC-Request-Type") == INIT
    failed = a.find("Failed-AVP")
    assert failed is not None and [(x.code, x.vendor) for x in failed.avps] == [(4242, 10415)]


@pytest.mark.parametrize("missing", ["Session-Id", "CC-Request-Type"])
async def test_missing_required_avp_is_5005(ocs: Running, gw: Gateway, missing: str) -> None:
    request = ccr(gw, "s;5005", INIT, 0, mscc(10, rsu=[]))
    request.avps = [x for x in request.avps if x.name != missing]
    a = await gw.request(request)
    assert a.result_code == 5005
    failed = a.find("Failed-AVP")
    assert failed is not None and [x.name for x in failed.avps] == [missing]


async def test_an_exchange_built_and_read_by_python_diameter(ocs: Running, gw: Gateway) -> None:
    await add(ocs, "4917000001", 1_000_000)
    theirs: Any = CreditControlRequest()
    theirs.header.application_id = 4  # TOOLS.md: it leaves 0 outside its Application object
    theirs.session_id = "pgw.test;theirs;1"
    theirs.origin_host = b"pgw.test"
    theirs.origin_realm = b"gw.test"
    theirs.destination_realm = b"test"
    theirs.auth_application_id = 4
    theirs.service_context_id = DATA
    theirs.cc_request_type = INIT
    theirs.cc_request_number = 0
    theirs.add_subscription_id(subscription_id_type=0, subscription_id_data="4917000001")
    theirs.multiple_services_indicator = 1
    # Keyword arguments: given an object, its add_ method takes it for the first field.
    theirs.add_multiple_services_credit_control(
        requested_service_unit=RequestedServiceUnit(cc_total_octets=250_000), rating_group=10
    )
    request = decode(bytes(theirs.as_bytes()))
    answer = await gw.request(request)
    cca: Any = TheirMessage.from_bytes(answer.to_bytes())
    assert isinstance(cca, CreditControlAnswer)
    assert cca.result_code == 2001 and cca.session_id == "pgw.test;theirs;1"
    assert cca.cc_request_type == INIT and cca.cc_request_number == 0
    [m] = cca.multiple_services_credit_control
    assert m.rating_group == 10 and m.result_code == 2001
    assert m.granted_service_unit.cc_total_octets == 250_000
    assert m.validity_time == 60


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
async def test_wireshark_reads_a_live_exchange(ocs: Running, gw: Gateway, tmp_path: Path) -> None:
    await add(ocs, "4917000001", 1_000_000)
    sid = "pgw.test;ws"
    requests = [
        ccr(gw, sid, INIT, 0, mscc(10, rsu=[]), mscc(20, rsu=[])),
        ccr(gw, sid, UPD, 1, mscc(10, rsu=[], usu=[("CC-Total-Octets", 1000)])),
        ccr(gw, sid, TERM, 2, mscc(10, usu=[("CC-Total-Octets", 10)])),
    ]
    wire: list[bytes] = []
    for r in requests:
        answer = await gw.request(r)
        wire += [r.to_bytes(), answer.to_bytes()]
    await asyncio.to_thread(_judge, wire, tmp_path)


def _judge(wire: list[bytes], tmp_path: Path) -> None:
    """Each message in a pcap of its own port pair, merged, read by tshark."""
    pcaps = []
    for i, data in enumerate(wire):
        hex_file = tmp_path / f"m{i}.txt"
        hex_file.write_text("\n".join(
            f"{o:06x} " + " ".join(f"{b:02x}" for b in data[o : o + 16])
            for o in range(0, len(data), 16)) + "\n")  # fmt: skip
        pcap = tmp_path / f"m{i}.pcap"
        subprocess.run(["text2pcap", "-q", "-T", f"{41000 + i},3868", str(hex_file), str(pcap)],
                       check=True, capture_output=True, timeout=30)  # fmt: skip
        pcaps.append(str(pcap))
    merged = tmp_path / "live.pcap"
    subprocess.run(["mergecap", "-a", "-w", str(merged), *pcaps], check=True, timeout=30)
    bad = subprocess.run(
        ["tshark", "-r", str(merged), "-Y", '_ws.malformed || _ws.expert.severity >= "Warning"',
         "-T", "fields", "-e", "frame.number", "-e", "_ws.expert.message"],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    # An empty Requested-Service-Unit ("the server decides") is a harmless "Data is empty".
    notes = [n for line in bad.stdout.splitlines() for n in line.split("\t")[1].split(",")]
    assert set(notes) <= {"Data is empty"}, bad.stdout
    lines = subprocess.run(
        ["tshark", "-r", str(merged), "-Y", "diameter", "-T", "fields",
         "-e", "diameter.flags.request", "-e", "diameter.CC-Request-Type",
         "-e", "diameter.Result-Code"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.split("\n")  # fmt: skip
    rows = [line.split("\t") for line in lines if line.strip()]
    assert len(rows) == 6
    assert [r[1] for r in rows] == ["1", "1", "2", "2", "3", "3"]
    assert [r[2].split(",")[0] for r in rows[1::2]] == ["2001"] * 3


def test_diameter_settings_from_the_environment() -> None:
    s = load_settings({
        "OCS_DIAMETER_PORT": "3999", "OCS_DIAMETER_HOST": "ocs.example.net",
        "OCS_DIAMETER_REALM": "example.net", "OCS_DIAMETER_WATCHDOG": "12",
        "OCS_DIAMETER_MAX_MESSAGE": "8192", "OCS_DIAMETER_PEERS": "pgw1.example.net, pgw2",
        "OCS_DIAMETER_REALM_CHECK": "on",
        "OCS_DIAMETER_FAILURE_HANDLING": "terminate,data=CONTINUE",
    })  # fmt: skip
    assert (s.diameter_port, s.diameter_host, s.diameter_realm) == (3999, "ocs.example.net",
                                                                  "example.net")  # fmt: skip
    assert (s.diameter_watchdog, s.diameter_max_message, s.diameter_realm_check) == (
        12.0, 8192, True)  # fmt: skip
    assert set(s.diameter_admission.hosts) == {"pgw1.example.net", "pgw2"}
    assert s.diameter_failure_handling_parsed == ("TERMINATE", {"data": "CONTINUE"})
    assert Settings().diameter_admission.closed
    for name, value in [("OCS_DIAMETER_WATCHDOG", "2"), ("OCS_DIAMETER_MAX_MESSAGE", "10"),
                        ("OCS_DIAMETER_REALM_CHECK", "maybe"), ("OCS_DIAMETER_HOST", "a b"),
                        ("OCS_DIAMETER_FAILURE_HANDLING", "SOMETIMES")]:  # fmt: skip
        with pytest.raises(ConfigError, match=name):
            load_settings({name: value})
