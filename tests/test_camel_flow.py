"""CAMEL calls end to end in one process: the MSC simulator's gsmSSF stack, joined by a
loopback association to the gsmSCF stack (M3UA, SCCP, TCAP, CAP) and the CAMEL agent, on
the charging engine and a real Redis. (tests/test_camel_sctp.py runs the same over SCTP.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from ocs.agents.camel import CamelAgent, CamelConfig
from ocs.agents.native import NativeAgent
from ocs.charging.engine import ChargingConfig, ChargingEngine
from ocs.config import ConfigError, load_settings
from ocs.sims.msc import (
    UNANSWERED_EVENTS,
    CallSpec,
    SsfConfig,
    SsfStack,
    describe,
    loopback_msc,
    place_call,
    run_calls,
    traffic,
)
from ocs.store.store import Store
from protocols.native import Commit, Release, Reserve
from protocols.sigtran import cap, sccp, tcap
from protocols.sigtran.admission import PeerList
from protocols.sigtran.constants import RC_UNEQUIPPED_USER, Op, Phase, SccpType
from protocols.sigtran.sccp import SccpAddress, Unitdata
from protocols.sigtran.server import CapServer, ScfConfig
from protocols.sigtran.tcap import Invoke, MessageType, TcapMessage
from tariffs import PlanBook, load_plans
from tariffs.interface import UsageContext
from tariffs.rater import TariffRater

BERLIN = ZoneInfo("Europe/Berlin")
#: A Tuesday at noon in Berlin: the peak band of prepaid-basic.
NOON = int(datetime(2026, 3, 10, 12, 0, tzinfo=BERLIN).timestamp() * 1000)
MICRO = 1_000_000


@dataclass
class Clock:
    now: int = NOON
    mono: float = 1000.0

    def __call__(self) -> int:
        return self.now

    def monotonic(self) -> float:
        return self.mono


@dataclass
class Scf:
    server: CapServer
    engine: ChargingEngine
    rater: TariffRater
    store: Store
    clock: Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def scf(store: Store, clock: Clock) -> AsyncIterator[Scf]:
    await store.load_scripts()
    rater = TariffRater(PlanBook(load_plans()))
    engine = ChargingEngine(store, rater, ChargingConfig(validity=600, grace=30), clock=clock)
    agent = CamelAgent(engine, rater.book.at, CamelConfig(), clock=clock)
    server = CapServer(agent, ScfConfig(dialogue_timeout=30), clock=clock.monotonic)
    async with server:
        yield Scf(server, engine, rater, store, clock)


@pytest.fixture
async def msc(scf: Scf) -> AsyncIterator[SsfStack]:
    async with loopback_msc(scf.server) as stack:
        yield stack


async def add(store: Store, msisdn: str, balance: int, state: str = "active") -> None:
    ans = await store.create_subscriber(msisdn, plan="prepaid-basic", balance=balance,
                                        credit_limit=0, state=state, now=NOON)  # fmt: skip
    assert ans.status == "OK"


async def money(store: Store, msisdn: str) -> tuple[int, int]:
    acct = await store.get_account(msisdn)
    assert acct is not None
    return acct.balance, acct.reserved


def begin(msc: SsfStack, calling: str, phase: Phase) -> bytes:
    """Open a dialogue with an InitialDP of ``calling``; our transaction id."""
    tid = msc.new_tid()
    idp = cap.initial_dp(service_key=100, calling=calling, called="4930123456",
                         location=("262", "01"))  # fmt: skip
    msc.send(TcapMessage(MessageType.BEGIN, otid=tid, dialogue=tcap.request(phase),
                         components=(cap.invoke(Op.INITIAL_DP, 1, idp),)))  # fmt: skip
    return tid


def tariff(scf: Scf, msisdn: str, called: str, seconds: int, at: int = NOON) -> int:
    ctx = UsageContext(plan="prepaid-basic", service="voice", subscriber=msisdn, started_at=at,
                       destination=called, location="26201")  # fmt: skip
    return scf.rater.cost(ctx, seconds)


@pytest.mark.parametrize("phase", list(Phase))
async def test_a_call_is_charged_what_the_tariff_says_and_what_native_charges(
    scf: Scf, msc: SsfStack, phase: Phase
) -> None:
    await add(scf.store, "491700000001", 10 * MICRO)
    await add(scf.store, "491700000002", 10 * MICRO)
    out = await place_call(msc, CallSpec("491700000001", "4930123456", 150, phase=phase))
    assert (out.result, out.talked, out.grants) == ("ended", 150, [60, 60, 60])
    bal, held = await money(scf.store, "491700000001")
    expected = tariff(scf, "491700000001", "4930123456", 150)
    assert expected > 0
    assert (10 * MICRO - bal, held) == (expected, 0)
    # The same usage through the native protocol's agent: 60 + 60 + 30 seconds.
    native = NativeAgent(scf.engine)
    s = "native-call"
    await native(Reserve(1, s, "491700000002", "voice", 0, destination="4930123456",
                         location="26201"))  # fmt: skip
    await native(Commit(2, s, 1, 60, subscriber="491700000002"))
    await native(Commit(3, s, 2, 60, subscriber="491700000002"))
    await native(Release(4, s, 3, 30, subscriber="491700000002"))
    assert await money(scf.store, "491700000002") == (bal, 0)


async def test_a_call_is_cut_off_with_release_call_when_credit_ends(
    scf: Scf, msc: SsfStack
) -> None:
    # 0.20 at 0.09 a minute (per second after the first minute): 133 s, not an hour.
    await add(scf.store, "491700000003", 200_000)
    out = await place_call(msc, CallSpec("491700000003", "4930123456", 3600))
    assert out.result == "cut-off"
    assert out.warning_tone  # the last grant was final: releaseIfdurationExceeded + tone
    bal, held = await money(scf.store, "491700000003")
    assert held == 0
    assert 200_000 - bal == tariff(scf, "491700000003", "4930123456", out.talked)
    assert 0 <= bal < tariff(scf, "491700000003", "4930123456", out.talked + 1) - tariff(
        scf, "491700000003", "4930123456", out.talked) + 1 or bal == 0  # fmt: skip
    assert out.talked == sum(out.grants)


async def test_a_call_the_credit_cannot_start_is_redirected_when_configured(
    scf: Scf, store: Store, clock: Clock
) -> None:
    await add(scf.store, "491700000031", 0)
    agent = CamelAgent(scf.engine, scf.rater.book.at, CamelConfig(redirect="4980012345"),
                       clock=clock)  # fmt: skip
    server = CapServer(agent, ScfConfig(), clock=clock.monotonic)
    async with server, loopback_msc(server) as msc:
        out = await place_call(msc, CallSpec("491700000031", "4930123456", 60))
    assert (out.result, out.detail) == ("redirected", "4980012345")
    assert await money(scf.store, "491700000031") == (0, 0)  # nothing charged or held
    # One answer, the TC-END with the Connect; no dialogue left open.
    assert server.counters.messages_out == 1 and not server.dialogues.all()
    # With no number to send it to (the fixture's agent), the same call is released.
    async with loopback_msc(scf.server) as msc:
        released = await place_call(msc, CallSpec("491700000031", "4930123456", 60))
    assert (released.result, released.cause) == ("released", 31)
    with pytest.raises(ConfigError, match="OCS_CAMEL_REDIRECT"):
        load_settings({"OCS_CAMEL_REDIRECT": "+49800"})
    assert load_settings({"OCS_CAMEL_REDIRECT": "4980012345"}).camel_redirect == "4980012345"


async def test_release_call_carries_the_configured_cause(
    scf: Scf, store: Store, clock: Clock
) -> None:
    # OCS_CAMEL_RELEASE_CAUSE: the Q.850 cause of a ReleaseCall for want of credit (31 by
    # default, as the fixture's agent shows above); here 17 (user busy).
    await add(scf.store, "491700000033", 0)
    agent = CamelAgent(scf.engine, scf.rater.book.at, CamelConfig(release_cause=17),
                       clock=clock)  # fmt: skip
    server = CapServer(agent, ScfConfig(), clock=clock.monotonic)
    async with server, loopback_msc(server) as msc:
        out = await place_call(msc, CallSpec("491700000033", "4930123456", 60))
    assert (out.result, out.cause) == ("released", 17)
    assert await money(scf.store, "491700000033") == (0, 0)
    assert load_settings({"OCS_CAMEL_RELEASE_CAUSE": "17"}).camel_release_cause == 17
    with pytest.raises(ConfigError, match="OCS_CAMEL_RELEASE_CAUSE"):
        load_settings({"OCS_CAMEL_RELEASE_CAUSE": "0"})


async def test_release_call_follows_the_report_that_ends_the_credit(
    scf: Scf, msc: SsfStack
) -> None:
    """A report while the leg is still active after the credit is gone: ReleaseCall."""
    await add(scf.store, "491700000004", 90_000)  # the first minute exactly
    tid = begin(msc, "491700000004", Phase.V3)
    first = await msc.answer(tid)
    assert first.type is MessageType.CONTINUE and first.dialogue is not None
    assert first.dialogue.phase is Phase.V3  # answered in the phase asked for
    ops = [c.opcode for c in first.components if isinstance(c, Invoke)]
    assert ops == [Op.REQUEST_REPORT_BCSM_EVENT, Op.APPLY_CHARGING, Op.CONTINUE]
    ac = cap.read_apply_charging(Phase.V3, first.components[1])  # type: ignore[arg-type]
    assert (ac.max_duration, ac.release) == (600, False)  # the whole slice was affordable
    # The MSC keeps the leg up past each grant (as if it ignored releaseIfdurationExceeded):
    # the last grant is final (rounding to the cent leaves 3 s for nothing), then ReleaseCall.
    total, finals, last, iid = 60, [], first, 2
    while True:
        msc.send(TcapMessage(MessageType.CONTINUE, otid=tid, dtid=first.otid, components=(
            cap.invoke(Op.APPLY_CHARGING_REPORT, iid, cap.call_result(total * 10)),)))  # fmt: skip
        last = await msc.answer(tid)
        iid += 1
        if last.type is not MessageType.CONTINUE:
            break
        ac = cap.read_apply_charging(Phase.V3, last.components[0])  # type: ignore[arg-type]
        finals.append(ac.release)
        total += ac.max_duration // 10
    assert finals == [True] and total == 63
    assert last.type is MessageType.END
    [rc] = [c for c in last.components if isinstance(c, Invoke)]
    assert rc.opcode == Op.RELEASE_CALL and rc.argument == ("allCallSegments", b"\x80\x9f")
    assert await money(scf.store, "491700000004") == (0, 0)


async def test_a_retransmitted_report_is_charged_once(scf: Scf, msc: SsfStack) -> None:
    await add(scf.store, "491700000005", 10 * MICRO)
    tid = begin(msc, "491700000005", Phase.V2)
    first = await msc.answer(tid)
    acr = TcapMessage(MessageType.CONTINUE, otid=tid, dtid=first.otid, components=(
        cap.invoke(Op.APPLY_CHARGING_REPORT, 2, cap.call_result(600)),))  # fmt: skip
    answers = []
    for _ in range(3):  # the same report three times (same invoke id)
        msc.send(acr)
        answers.append(await msc.answer(tid))
    assert all(a.type is MessageType.CONTINUE for a in answers), answers
    after = await money(scf.store, "491700000005")
    assert after[0] == 10 * MICRO - tariff(scf, "491700000005", "4930123456", 60)
    # The last report (it ends the session), then the same again with the disconnect: the
    # resend is taken as the first was (charged once, no error), the dialogue ends.
    last = cap.invoke(Op.APPLY_CHARGING_REPORT, 3, cap.call_result(900, leg_active=False))
    msc.send(TcapMessage(MessageType.CONTINUE, otid=tid, dtid=first.otid, components=(last,)))
    msc.send(TcapMessage(MessageType.CONTINUE, otid=tid, dtid=first.otid, components=(
        last, cap.invoke(Op.EVENT_REPORT_BCSM, 4, cap.event_report("oDisconnect", 1)),
    )))  # fmt: skip
    end = await msc.answer(tid)
    assert (end.type, end.components) == (MessageType.END, ())
    bal, held = await money(scf.store, "491700000005")
    assert (10 * MICRO - bal, held) == (tariff(scf, "491700000005", "4930123456", 90), 0)


async def test_a_new_report_under_a_reused_invoke_id_is_charged(scf: Scf, msc: SsfStack) -> None:
    """Resends are known by dialogue + report (invoke id and what it says), not by invoke
    id alone: an MSC that reuses invoke id 2 for the next report has it charged, and a
    resend of that second report is still charged once."""
    await add(scf.store, "491700000015", 10 * MICRO)
    tid = begin(msc, "491700000015", Phase.V3)
    first = await msc.answer(tid)

    def acr(time: int, *, active: bool = True) -> TcapMessage:
        arg = cap.call_result(time, leg_active=active)
        return TcapMessage(MessageType.CONTINUE, otid=tid, dtid=first.otid,
                           components=(cap.invoke(Op.APPLY_CHARGING_REPORT, 2, arg),))  # fmt: skip

    for report in (acr(300), acr(300), acr(500), acr(500)):  # each sent twice, same invoke id
        msc.send(report)
        assert (await msc.answer(tid)).type is MessageType.CONTINUE
    after = await money(scf.store, "491700000015")
    assert after[0] == 10 * MICRO - tariff(scf, "491700000015", "4930123456", 50)
    msc.send(acr(700, active=False))
    msc.send(TcapMessage(MessageType.CONTINUE, otid=tid, dtid=first.otid, components=(
        cap.invoke(Op.EVENT_REPORT_BCSM, 3, cap.event_report("oDisconnect", 1)),)))  # fmt: skip
    assert (await msc.answer(tid)).type is MessageType.END
    bal, held = await money(scf.store, "491700000015")
    assert (10 * MICRO - bal, held) == (tariff(scf, "491700000015", "4930123456", 70), 0)


async def test_the_tariff_switches_at_the_band_boundary(
    scf: Scf, msc: SsfStack, clock: Clock
) -> None:
    # 18:59:30 on a Tuesday: peak ends at 19:00, 30 s into the call.
    clock.now = int(datetime(2026, 3, 10, 18, 59, 30, tzinfo=BERLIN).timestamp() * 1000)
    await add(scf.store, "491700000006", 10 * MICRO)
    out = await place_call(msc, CallSpec("491700000006", "4930123456", 700, phase=Phase.V4))
    assert out.result == "ended" and out.talked == 700
    assert out.tariff_switches == [30]
    bal, held = await money(scf.store, "491700000006")
    at = clock.now
    expected = tariff(scf, "491700000006", "4930123456", 700, at)
    assert (10 * MICRO - bal, held) == (expected, 0)
    # ... which is less than the same call all in the peak band.
    assert expected < tariff(scf, "491700000006", "4930123456", 700)


async def test_a_barred_subscriber_is_released_at_initial_dp(scf: Scf, msc: SsfStack) -> None:
    await add(scf.store, "491700000007", 10 * MICRO, state="barred-outgoing")
    out = await place_call(msc, CallSpec("491700000007", "4930123456", 60))
    assert (out.result, out.cause) == ("released", 21)
    assert await money(scf.store, "491700000007") == (10 * MICRO, 0)


async def test_free_numbers_continue_uncharged_and_unknown_subscribers_are_released(
    scf: Scf, msc: SsfStack
) -> None:
    await add(scf.store, "491700000008", 10 * MICRO)
    out = await place_call(msc, CallSpec("491700000008", "112", 60))
    assert out.result == "continued"
    assert await money(scf.store, "491700000008") == (10 * MICRO, 0)
    out = await place_call(msc, CallSpec("491799999999", "4930123456", 60))
    assert out.result == "released"


async def test_the_rater_keeps_nothing_of_ended_calls(scf: Scf, msc: SsfStack) -> None:
    """A free call, a charged one, an unanswered one: once they end, rating holds nothing of
    them (docs/architecture.md, Performance 20)."""
    await add(scf.store, "491700000033", 10 * MICRO)
    rater = scf.rater
    for spec in (CallSpec("491700000033", "112", 60), CallSpec("491700000033", "4930123456", 90),
                 CallSpec("491700000033", "4930123456", 60, "busy")):  # fmt: skip
        await place_call(msc, spec)
        assert (len(rater._sessions), len(rater._by_id)) == (0, 0), spec


async def test_a_subscriber_provisioned_by_imsi_is_found_by_the_initial_dps_imsi(
    scf: Scf, msc: SsfStack
) -> None:
    imsi = "262019876543210"
    await add(scf.store, imsi, 10 * MICRO)
    out = await place_call(msc, CallSpec("491799999997", "4930123456", 60, imsi=imsi))
    assert (out.result, out.talked) == ("ended", 60)
    charged = tariff(scf, imsi, "4930123456", 60)
    assert charged > 0
    assert await money(scf.store, imsi) == (10 * MICRO - charged, 0)
    # The number is tried first: a known calling party is charged, not the IMSI's account.
    await add(scf.store, "491700000031", 10 * MICRO)
    out = await place_call(msc, CallSpec("491700000031", "4930123456", 60, imsi=imsi))
    assert out.result == "ended"
    assert await money(scf.store, "491700000031") < (10 * MICRO, 0)
    assert await money(scf.store, imsi) == (10 * MICRO - charged, 0)


async def test_unknown_subscribers_continue_when_so_configured(
    scf: Scf, store: Store, clock: Clock
) -> None:
    # OCS_CAMEL_UNKNOWN=continue: the call goes on, uncharged, and nothing is stored for it.
    agent = CamelAgent(scf.engine, scf.rater.book.at, CamelConfig(unknown="continue"),
                       clock=clock)  # fmt: skip
    server = CapServer(agent, ScfConfig(), clock=clock.monotonic)
    async with server, loopback_msc(server) as msc:
        out = await place_call(msc, CallSpec("491799999998", "4930123456", 60))
    assert out.result == "continued"
    assert await store.get_account("491799999998") is None
    assert not server.dialogues.all()
    assert load_settings({"OCS_CAMEL_UNKNOWN": "continue"}).camel_unknown == "continue"
    with pytest.raises(ConfigError, match="OCS_CAMEL_UNKNOWN"):
        load_settings({"OCS_CAMEL_UNKNOWN": "maybe"})


async def test_a_terminating_call_is_charged_to_the_called_party_where_the_plan_charges_it(
    scf: Scf, msc: SsfStack
) -> None:
    # prepaid-basic's voice-mt: free at home and in the EU (Continue, nothing charged),
    # charged roaming beyond.
    await add(scf.store, "491700000032", 10 * MICRO)
    home = await place_call(msc, CallSpec("4930123456", "491700000032", 120, terminating=True))
    assert home.result == "continued"
    assert await money(scf.store, "491700000032") == (10 * MICRO, 0)
    roaming = CallSpec("4930123456", "491700000032", 120, location=("310", "260"),
                       terminating=True)  # fmt: skip
    out = await place_call(msc, roaming)
    assert (out.result, out.talked) == ("ended", 120)
    ctx = UsageContext(plan="prepaid-basic", service="voice-mt", subscriber="491700000032",
                       started_at=NOON, destination="", location="310260")  # fmt: skip
    expected = scf.rater.cost(ctx, 120)
    assert expected > 0
    assert await money(scf.store, "491700000032") == (10 * MICRO - expected, 0)
    # The calling party is not charged (it is not even a subscriber here).
    assert await scf.store.get_account("4930123456") is None


async def test_unanswered_calls_cost_nothing(scf: Scf, msc: SsfStack) -> None:
    await add(scf.store, "491700000009", 10 * MICRO)
    for outcome, terminating in UNANSWERED_EVENTS:
        # A terminating call is charged roaming outside the EU only (prepaid-basic's voice-mt).
        spec = CallSpec("4930123456", "491700000009", 60, outcome, terminating=True,
                        location=("310", "260")) if terminating else CallSpec(
                        "491700000009", "4930123456", 60, outcome)  # fmt: skip
        out = await place_call(msc, spec)
        assert out.result == "unanswered", (outcome, terminating)
        assert await money(scf.store, "491700000009") == (10 * MICRO, 0)
        assert not scf.server.dialogues.all()


async def test_an_aborted_dialogue_releases_its_hold(scf: Scf, msc: SsfStack) -> None:
    await add(scf.store, "491700000010", 10 * MICRO)
    tid = begin(msc, "491700000010", Phase.V2)
    first = await msc.answer(tid)
    assert (await money(scf.store, "491700000010"))[1] > 0
    msc.send(TcapMessage(MessageType.CONTINUE, otid=tid, dtid=first.otid, components=(
        cap.invoke(Op.APPLY_CHARGING_REPORT, 2, cap.call_result(600)),)))  # fmt: skip
    await msc.answer(tid)
    msc.send(TcapMessage(MessageType.ABORT, dtid=first.otid, dialogue=tcap.DialoguePortion(
        tcap.DialogueKind.ABORT, None, 0, 0)))  # fmt: skip
    await scf.server.close()  # (lets the abort be handled)
    bal, held = await money(scf.store, "491700000010")
    assert (10 * MICRO - bal, held) == (tariff(scf, "491700000010", "4930123456", 60), 0)
    assert len(scf.server.dialogues) == 0


async def test_the_tc_timer_aborts_an_idle_dialogue_and_releases_its_hold(
    scf: Scf, msc: SsfStack, clock: Clock
) -> None:
    await add(scf.store, "491700000011", 10 * MICRO)
    tid = begin(msc, "491700000011", Phase.V2)
    await msc.answer(tid)
    assert await scf.server.expire() == 0
    clock.mono += 31
    assert await scf.server.expire() == 1
    abort = await msc.answer(tid)
    assert abort.type is MessageType.ABORT
    assert await money(scf.store, "491700000011") == (10 * MICRO, 0)


async def test_bad_components_are_rejected_and_unknown_transactions_aborted(
    scf: Scf, msc: SsfStack
) -> None:
    await add(scf.store, "491700000012", 10 * MICRO)
    tid = msc.new_tid()
    # An InitialDP whose argument is not one, and an operation the gsmSSF does not invoke.
    msc.send(TcapMessage(MessageType.BEGIN, otid=tid, dialogue=tcap.request(Phase.V2),
                         components=(cap.invoke(Op.CONTINUE, 1),)))  # fmt: skip
    ans = await msc.answer(tid)
    assert [type(c).__name__ for c in ans.components] == ["Reject"]
    # A Continue for a transaction nobody opened: P-Abort unrecognizedTransactionID.
    tid2 = msc.new_tid()
    msc.send(TcapMessage(MessageType.CONTINUE, otid=tid2, dtid=b"\xde\xad\xbe\xef",
                         components=(cap.invoke(Op.CONTINUE, 1),)))  # fmt: skip
    ab = await msc.answer(tid2)
    assert (
        ab.type is MessageType.ABORT and ab.p_abort == tcap.PAbortCause.UNRECOGNIZED_TRANSACTION_ID
    )
    # An application context we do not speak: refused with an AARE in a U-Abort.
    tid3 = msc.new_tid()
    msc.send(TcapMessage(MessageType.BEGIN, otid=tid3, dialogue=tcap.DialoguePortion(
        tcap.DialogueKind.REQUEST, (0, 4, 0, 0, 1, 0, 1, 3)), components=()))  # fmt: skip
    ab = await msc.answer(tid3)
    assert ab.type is MessageType.ABORT and ab.dialogue is not None
    assert (ab.dialogue.result, ab.dialogue.diagnostic) == (1, 2)


async def test_a_message_for_another_subsystem_is_returned_with_unequipped_user(
    scf: Scf, msc: SsfStack
) -> None:
    # SCCP routing on SSN (Q.714): we are SSN 146 (gsmSCF); a UDT for 147 (gsmSSF) asking for
    # return on error comes back as a UDTS, cause 4 (unequipped user), and nothing else.
    tid = msc.new_tid()
    data = tcap.encode(TcapMessage(MessageType.BEGIN, otid=tid, dialogue=tcap.request(Phase.V2),
                                   components=(cap.invoke(Op.CONTINUE, 1),)))  # fmt: skip
    called = SccpAddress(147, None, "491720000146", True)
    calling = SccpAddress(146, None, "491720000000", True)
    msc.send_sccp(sccp.encode(Unitdata(called, calling, data)))
    for _ in range(10):  # (the loopback delivers on the next loop turn, each way)
        if msc.unsolicited:
            break
        await asyncio.sleep(0)
    [udts] = msc.unsolicited
    assert isinstance(udts, Unitdata) and udts.kind is SccpType.UDTS
    assert (udts.return_cause, udts.data) == (RC_UNEQUIPPED_USER, data)
    assert scf.server.counters.udts == 1 and not scf.server.dialogues.all()


async def test_the_simulators_mix_is_every_kind_of_call_and_says_what_each_got(
    scf: Scf, msc: SsfStack
) -> None:
    # ocs msc-sim's traffic: answered calls short and long, unanswered and busy ones, free
    # numbers, all three phases; a long call on a small balance runs out of credit.
    subs = [f"49170000005{i}" for i in range(4)]
    for s in subs:
        await add(scf.store, s, 2 * MICRO)
    make = traffic(subs, seed=14)
    specs = [make() for _ in range(40)]
    assert {s.outcome for s in specs} == {"answer", "no-answer", "busy"}
    assert {s.phase for s in specs} == set(Phase)
    assert any(s.duration == 3600 for s in specs) and any(s.duration < 180 for s in specs)
    outcomes = await run_calls(msc, specs, 4)
    results = {o.result for o in outcomes}
    assert {"ended", "cut-off", "unanswered"} <= results and "failed" not in results, results
    for o in outcomes:
        line = describe(o)
        assert line.startswith(f"camel {o.spec.calling} -> {o.spec.called} (CAP v")
        if o.result in ("ended", "cut-off"):
            assert f"after {o.talked} s" in line
    for s in subs:
        assert (await money(scf.store, s))[1] == 0  # nothing left held


# -- admission (OCS_CAMEL_PEERS) ------------------------------------------------------------------


def test_the_peer_list_reads_point_codes_and_global_titles() -> None:
    peers = PeerList.parse(" pc:2, PC:5 ,gt:491720000000, gt:4917300*")
    assert peers.point_codes == {2, 5} and peers.global_titles == {"491720000000"}
    assert peers.admit(SccpAddress(8, None, "49173001"), 9)  # by the GT prefix
    assert peers.admit(SccpAddress(8, None, ""), 5)  # by the point code
    assert not peers.admit(SccpAddress(8, None, "491720000001"), 9)
    assert not peers.admit(SccpAddress(8, 9, ""), 9)
    for bad in ("", "2", "pc:x", "pc:16384", "gt:", "gt:49*1", "host:msc1", "pc:2,,gt:1"):
        with pytest.raises(ValueError, match=r"expected|a point code is"):
            PeerList.parse(bad)
    with pytest.raises(ConfigError, match="OCS_CAMEL_PEERS"):
        load_settings({"OCS_CAMEL_PEERS": "pc:2,msc1"})
    assert load_settings({"OCS_CAMEL_PEERS": "pc:2"}).camel_peers == "pc:2"
    assert PeerList.parse(" * ").admit(SccpAddress(8, 9, ""), 9)
    with pytest.raises(ValueError, match="expected"):
        PeerList.parse("*, pc:2")


async def test_a_peer_not_on_the_list_is_refused_and_charged_nothing(scf: Scf) -> None:
    await add(scf.store, "491700000021", 10 * MICRO)
    agent = CamelAgent(scf.engine, scf.rater.book.at, CamelConfig(), clock=scf.clock)
    peers = PeerList.parse("pc:7, gt:4917299*")
    async with CapServer(agent, ScfConfig(), clock=scf.clock.monotonic,
                         admit=peers.admit) as server:  # fmt: skip
        # Point code 2, GT 491720000000: on neither list. A U-Abort with an AARE refusing
        # the dialogue (reject-permanent, no reason given); the agent never hears of it.
        async with loopback_msc(server, SsfConfig(point_code=2)) as msc:
            tid = begin(msc, "491700000021", Phase.V2)
            ab = await msc.answer(tid)
            assert ab.type is MessageType.ABORT and ab.dialogue is not None
            assert (ab.dialogue.kind, ab.dialogue.result, ab.dialogue.diagnostic) == (
                tcap.DialogueKind.RESPONSE, 1, 1)  # fmt: skip
            assert server.counters.refused == 1 and len(server.dialogues) == 0
        assert await money(scf.store, "491700000021") == (10 * MICRO, 0)
        # Point code 7 is admitted; so is an MSC of the GT pool at another point code.
        for cfg in (SsfConfig(point_code=7), SsfConfig(point_code=3, msc_gt="491729900001")):
            async with loopback_msc(server, cfg) as msc:
                out = await place_call(msc, CallSpec("491700000021", "4930123456", 30))
                assert out.result == "ended", out
        assert server.counters.refused == 1
