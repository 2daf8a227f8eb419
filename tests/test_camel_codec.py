"""The SIGTRAN codecs on bytes: M3UA and SCCP checked against pycrate_mobile's independent
SIGTRAN and SCCP parsers, TCAP/CAP against pycrate's TCAP_CAP grammar directly (encode ours,
decode theirs, and back) for every operation of the prepaid flow in each phase; malformed
input becomes the protocol's own error, never another exception."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pycrate_mobile import SCCP as PySCCP
from pycrate_mobile import SIGTRAN as PySIGTRAN

from protocols.sigtran import cap, m3ua, sccp, tcap
from protocols.sigtran.constants import (
    AC_OF_PHASE,
    ASPAC,
    ASPUP,
    BEAT,
    DATA,
    ErrorCode,
    Op,
    PAbortCause,
    Phase,
    SccpType,
    Tag,
)
from protocols.sigtran.errors import ComponentError, M3uaError, SccpError, TcapError
from protocols.sigtran.m3ua import Asp, AspState, M3uaMessage, ProtocolData
from protocols.sigtran.sccp import SccpAddress, Unitdata
from protocols.sigtran.tcap import Invoke, MessageType, TcapMessage

# -- M3UA -------------------------------------------------------------------------------------


def _pysigtran(data: bytes) -> Any:
    m = PySIGTRAN.SIGTRAN()
    m.from_bytes(data)
    return m.get_val()


def test_m3ua_data_as_pycrate_reads_it_and_back() -> None:
    pd = ProtocolData(opc=2, dpc=1, data=b"abcde", sls=3)
    raw = m3ua.encode(M3uaMessage(*DATA, ((Tag.ROUTING_CONTEXT, m3ua.u32(7)),
                                          (Tag.PROTOCOL_DATA, pd.encode()))))  # fmt: skip
    (version, _, cls, typ, length), params = _pysigtran(raw)
    assert (version, cls, typ, length) == (1, 1, 1, len(raw)) and length % 4 == 0
    assert [(p[0], p[1], p[2]) for p in params] == [
        (6, 8, b"\0\0\0\x07"), (0x210, 4 + 17, pd.encode())]  # fmt: skip
    assert params[1][3] == b"\0\0\0"  # padding to four octets, not counted in the length
    # pycrate's bytes back through ours.
    m = PySIGTRAN.SIGTRAN()
    m.from_bytes(raw)
    back = m3ua.decode(m.to_bytes())
    assert back.get_u32(Tag.ROUTING_CONTEXT) == 7
    assert ProtocolData.decode(back.get(Tag.PROTOCOL_DATA) or b"") == pd


@pytest.mark.parametrize(("rc", "na"), [(None, None), (7, None), (None, 9), (5, 6)])
def test_asp_sends_data_as_the_general_encoder_writes_it(rc: int | None, na: int | None) -> None:
    """Asp.send_data writes DATA without a message object: the same bytes as m3ua.encode."""
    for n in range(9):
        asp = Asp(server=True, routing_context=rc, network_appearance=na)
        asp.state = AspState.ACTIVE
        pd = ProtocolData(1, 2, bytes(range(n)), sls=3)
        asp.send_data(pd, 2)
        want = m3ua.encode(M3uaMessage(*DATA, (*asp._context(), (Tag.PROTOCOL_DATA, pd.encode()))))
        assert asp.data_to_send() == [(2, want)]


def test_asp_server_and_client_bring_the_association_up_and_carry_data() -> None:
    server, client = Asp(server=True, routing_context=7), Asp(server=False, routing_context=7)
    client.start()
    for _ in range(4):  # ASPUP, ASPUP_ACK + ASPAC, ASPAC_ACK + NTFY
        for stream, data in client.data_to_send():
            server.receive_data(data, stream)
        for stream, data in server.data_to_send():
            client.receive_data(data, stream)
    assert server.state is client.state is AspState.ACTIVE
    client.send_data(ProtocolData(2, 1, b"hello"), stream=1)
    [(stream, data)] = client.data_to_send()
    server.receive_data(data, stream)
    [ev] = [e for e in server.events() if isinstance(e, m3ua.Transfer)]
    assert (ev.data.data, ev.data.opc, ev.stream) == (b"hello", 2, 1)
    # A transport without message boundaries (stream -1): framed by the length.
    server.receive_data(data[:5], -1)
    server.receive_data(data[5:] + data + data[:3], -1)
    server.receive_data(data[3:], -1)
    assert len([e for e in server.events() if isinstance(e, m3ua.Transfer)]) == 3
    # A heartbeat comes back with its data.
    client.heartbeat(b"ping")
    [(_, beat)] = client.data_to_send()
    server.receive_data(beat)
    [(_, ack)] = server.data_to_send()
    assert (
        m3ua.decode(ack).kind == m3ua.BEAT_ACK
        and m3ua.decode(ack).get(Tag.HEARTBEAT_DATA) == b"ping"
    )


def _errors(asp: Asp) -> list[int]:
    out = []
    for _, data in asp.data_to_send():
        msg = m3ua.decode(data)
        if msg.kind == m3ua.ERR:
            out.append(msg.get_u32(Tag.ERROR_CODE) or 0)
    return out


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (m3ua.encode(M3uaMessage(*DATA, ((Tag.PROTOCOL_DATA, b"x" * 12),))),
         ErrorCode.UNEXPECTED_MESSAGE),  # DATA before ASP Active
        (m3ua.encode(M3uaMessage(*ASPAC)), ErrorCode.UNEXPECTED_MESSAGE),  # ASPAC before ASPUP
        (b"\x02" + m3ua.encode(M3uaMessage(*BEAT))[1:], ErrorCode.INVALID_VERSION),
        (m3ua.encode(M3uaMessage(7, 1)), ErrorCode.UNSUPPORTED_MESSAGE_CLASS),
        (m3ua.encode(M3uaMessage(3, 9)), ErrorCode.UNSUPPORTED_MESSAGE_TYPE),
        (m3ua.encode(M3uaMessage(*ASPUP))[:8] .replace(b"\0\0\0\x08", b"\0\0\0\x0c")
         + b"\x00\x11\x00\x02", ErrorCode.PARAMETER_FIELD_ERROR),
    ],
)  # fmt: skip
def test_bad_m3ua_gets_an_err_with_its_error_code(data: bytes, code: ErrorCode) -> None:
    asp = Asp(server=True)
    asp.receive_data(data, 1)
    assert _errors(asp) == [code]
    assert asp.state is AspState.DOWN


def test_m3ua_decode_raises_only_its_own_error_on_any_prefix() -> None:
    raw = m3ua.encode(M3uaMessage(*DATA, ((Tag.PROTOCOL_DATA, ProtocolData(2, 1, b"x").encode()),)))
    for n in range(len(raw)):
        with pytest.raises(M3uaError):
            m3ua.decode(raw[:n])


# -- SCCP -------------------------------------------------------------------------------------

CALLED = SccpAddress(146, None, "491720000146", route_on_gt=True)
CALLING = SccpAddress(8, 5, "4917200000001", route_on_gt=False)


@pytest.mark.parametrize("kind", [SccpType.UDT, SccpType.XUDT])
def test_sccp_unitdata_as_pycrate_reads_it_and_back(kind: SccpType) -> None:
    raw = sccp.encode(Unitdata(CALLED, CALLING, b"tcap bytes", kind))
    msg, err = PySCCP.parse_SCCP(raw)
    assert err == 0
    v = msg.get_val()
    assert v[0] == kind
    text = msg.show()
    assert "491720000146" in text and "4917200000001" in text and "146" in text
    assert "route on GT" in text and "route on SSN" in text
    back = sccp.decode(msg.to_bytes())
    assert (back.called, back.calling, back.data, back.kind) == (CALLED, CALLING, b"tcap bytes",
                                                                  kind)  # fmt: skip
    assert back.return_on_error


def test_sccp_service_message_returns_to_the_caller_with_its_cause() -> None:
    u = Unitdata(CALLED, CALLING, b"data")
    udts = sccp.decode(sccp.encode(u.service_message(4)))
    assert (udts.kind, udts.return_cause, udts.called, udts.calling) == (
        SccpType.UDTS, 4, CALLING, CALLED)  # fmt: skip
    msg, err = PySCCP.parse_SCCP(sccp.encode(u.service_message(4)))
    assert err == 0 and msg.get_val()[1] == 4


def test_sccp_decode_raises_only_its_own_error() -> None:
    raw = sccp.encode(Unitdata(CALLED, CALLING, b"data"))
    for n in range(len(raw)):
        with pytest.raises(SccpError):
            sccp.decode(raw[:n])
    with pytest.raises(SccpError):
        sccp.decode(b"\x01" + raw[1:])  # a connection-oriented message type


# -- TCAP / CAP -------------------------------------------------------------------------------


def _theirs(raw: bytes) -> Any:
    m = tcap.grammar()
    m.from_ber(raw)
    return m.get_val()


def _encode_theirs(value: Any) -> bytes:
    m = tcap.grammar()
    m.set_val(value)
    return bytes(m.to_ber())


def _operations(phase: Phase) -> list[Invoke]:
    return [
        cap.invoke(Op.INITIAL_DP, 1, cap.initial_dp(
            service_key=100, calling="491700000001", called="4930123456",
            imsi="262011234567890", location=("262", "01"), msc="491720000000",
            call_reference=b"\x01\x02")),
        cap.invoke(Op.REQUEST_REPORT_BCSM_EVENT, 2, cap.request_report([("oAnswer", 2),
                                                                         ("oDisconnect", 1)])),
        cap.invoke(Op.APPLY_CHARGING, 3, cap.apply_charging(phase, 600, release=True, tone=True,
                                                            tariff_switch=30)),
        cap.invoke(Op.CONTINUE, 4),
        cap.invoke(Op.APPLY_CHARGING_REPORT, 5, cap.call_result(
            600, leg_active=False, since_switch=300, switch_interval=300)),
        cap.invoke(Op.EVENT_REPORT_BCSM, 6, cap.event_report("oDisconnect", 1)),
        cap.invoke(Op.RELEASE_CALL, 7, cap.release_call(31)),
        cap.invoke(Op.CONNECT, 8, cap.connect("4980012345")),
    ]  # fmt: skip


@pytest.mark.parametrize("phase", list(Phase))
def test_every_operation_in_every_phase_against_pycrate(phase: Phase) -> None:
    for inv in _operations(phase):
        msg = TcapMessage(MessageType.BEGIN, otid=b"\0\0\0\x2a", dialogue=tcap.request(phase),
                          components=(inv,))  # fmt: skip
        raw = tcap.encode(msg)
        kind, body = _theirs(raw)
        assert kind == "begin" and body["otid"] == b"\0\0\0\x2a"
        dlg = body["dialoguePortion"]["encoding"][1][1][1]
        assert dlg["application-context-name"] == AC_OF_PHASE[phase]
        [(_, (ckind, comp))] = body["components"]
        assert (ckind, comp["invokeId"], comp["opcode"]) == (
            "invoke",
            ("present", inv.invoke_id),
            ("local", inv.opcode),
        )
        if inv.argument is not None:
            assert comp["argument"][1] == inv.argument
        # pycrate's encoding of the same value back through ours.
        again = tcap.decode(_encode_theirs((kind, body)))
        assert again.components == (inv,) and again.dialogue is not None
        assert again.dialogue.phase is phase
    initial, _, charging, _, report, event, release, connect = (tcap.decode(tcap.encode(TcapMessage(
        MessageType.CONTINUE, otid=b"\1", dtid=b"\2", components=(i,)))).components[0]
        for i in _operations(phase))  # fmt: skip
    assert isinstance(initial, Invoke) and isinstance(charging, Invoke)
    idp = cap.read_initial_dp(initial)
    assert (idp.service_key, idp.calling, idp.called, idp.imsi, idp.location, idp.msc_address) == (
        100,
        "491700000001",
        "4930123456",
        "262011234567890",
        "26201",
        "491720000000",
    )
    ac = cap.read_apply_charging(phase, charging)
    assert ac == cap.ApplyCharging(600, True, phase is not Phase.V3, 30)
    assert isinstance(report, Invoke) and isinstance(event, Invoke)
    assert cap.read_call_result(report) == cap.CallResult(300, True, 300, False, 1)
    assert cap.read_event_report(event) == cap.EventReport("oDisconnect", 1)
    assert isinstance(release, Invoke) and release.argument == ("allCallSegments", b"\x80\x9f")
    assert isinstance(connect, Invoke) and cap.read_connect(connect) == "4980012345"


def test_connect_carries_the_redirection_number_as_an_isup_called_party_number() -> None:
    """ConnectArg { destinationRoutingAddress [0] SEQUENCE SIZE (1..) OF CalledPartyNumber }
    (TS 29.078), the number even (no filler), international (NAI 4), E.164 (NPI 1)."""
    connect = cap.invoke(Op.CONNECT, 1, cap.connect("4980012345"))
    msg = TcapMessage(MessageType.END, dtid=b"\0\0\0\1", components=(connect,))
    raw = tcap.encode(msg)
    number = bytes.fromhex("0410") + bytes.fromhex("9408103254")  # 49 80 01 23 45, BCD
    arg = bytes.fromhex("30") + bytes([len(number) + 4]) + bytes.fromhex("a0") + bytes(
        [len(number) + 2]) + bytes.fromhex("04") + bytes([len(number)]) + number  # fmt: skip
    invoke = bytes.fromhex("020101020114") + arg  # invoke id 1, opcode 20 (connect)
    assert raw.endswith(bytes.fromhex("6c") + bytes([len(invoke) + 2]) + bytes.fromhex("a1")
                        + bytes([len(invoke)]) + invoke)  # fmt: skip
    _, body = _theirs(raw)
    [(_, (_, comp))] = body["components"]
    assert comp["argument"] == ("ConnectArg", {"destinationRoutingAddress": [number]})


def test_the_phase_shapes_of_release_if_duration_exceeded() -> None:
    """Phase 2: [1] SEQUENCE { tone BOOLEAN }; phase 3 and 4: [1] BOOLEAN (TS 29.078)."""
    v2 = cap.apply_charging(Phase.V2, 600, release=True, tone=True)
    v3 = cap.apply_charging(Phase.V3, 600, release=True)
    # timeDurationCharging [0] { maxCallPeriodDuration [0] 600, releaseIfdurationExceeded [1] }
    assert v2["aChBillingChargingCharacteristics"] == bytes.fromhex("a00980020258a1030101ff")
    assert v3["aChBillingChargingCharacteristics"] == bytes.fromhex("a007800202588101ff")


def test_dialogue_answers_and_aborts_round_trip() -> None:
    for msg in (
        TcapMessage(MessageType.CONTINUE, otid=b"\0\0\0\1", dtid=b"\0\0\0\2",
                    dialogue=tcap.accepted(Phase.V4), components=(
                        tcap.Reject(3, tcap.InvokeProblem.MISTYPED_ARGUMENT),
                        tcap.Reject(None, tcap.GeneralProblem.BADLY_STRUCTURED_COMPONENT))),
        TcapMessage(MessageType.ABORT, dtid=b"\0\0\0\2",
                    p_abort=PAbortCause.UNRECOGNIZED_TRANSACTION_ID),
        TcapMessage(MessageType.ABORT, dtid=b"\0\0\0\2", dialogue=tcap.DialoguePortion(
            tcap.DialogueKind.RESPONSE, AC_OF_PHASE[Phase.V2], 1, 2)),
        TcapMessage(MessageType.END, dtid=b"\0\0\0\2"),
    ):  # fmt: skip
        assert tcap.decode(tcap.encode(msg)) == msg


def test_unreadable_arguments_and_unknown_operations_become_rejects() -> None:
    raw = tcap.encode(TcapMessage(MessageType.BEGIN, otid=b"\0\0\0\1",
                                  dialogue=tcap.request(Phase.V2),
                                  components=tuple(_operations(Phase.V2)[:1])))  # fmt: skip
    # serviceKey's tag [0] -> [10]: pycrate keeps the argument unread; opcode 0 -> 99.
    mistyped = tcap.decode(raw.replace(bytes.fromhex("800164"), bytes.fromhex("8a0164"), 1))
    unknown = tcap.decode(raw.replace(bytes.fromhex("020100"), bytes.fromhex("020163"), 1))
    assert [(e.problem, e.invoke_id) for e in mistyped.bad_components] == [
        (tcap.InvokeProblem.MISTYPED_ARGUMENT, 1)
    ]
    assert [(e.problem, e.invoke_id) for e in unknown.bad_components] == [
        (tcap.InvokeProblem.UNRECOGNIZED_OPERATION, 1)
    ]
    with pytest.raises(ComponentError):
        cap.read_call_result(cap.invoke(Op.APPLY_CHARGING_REPORT, 1, b"\xa0\x03\x80\x01"))


def test_mutated_tcap_never_raises_anything_but_a_tcap_error() -> None:
    rng = random.Random(14)
    seeds = [tcap.encode(TcapMessage(MessageType.BEGIN, otid=b"\0\0\0\1",
                                     dialogue=tcap.request(p), components=(inv,)))
             for p in Phase for inv in _operations(p)]  # fmt: skip
    aborts_with_otid = 0
    for i in range(1500):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 4)):
            what = rng.random()
            pos = rng.randrange(len(data))
            if what < 0.5:
                data[pos] = rng.randrange(256)
            elif what < 0.75:
                del data[pos : pos + rng.randrange(1, 8)]
            else:
                data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6)))
        try:
            msg = tcap.decode(bytes(data))
        except TcapError as exc:
            aborts_with_otid += exc.otid is not None
            continue
        assert isinstance(msg, TcapMessage), i
    assert aborts_with_otid > 100
