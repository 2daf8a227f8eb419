"""The BER fast path (protocols/sigtran/fastber.py) held to pycrate: for every hot message of
the prepaid flow in each phase, ours encodes byte for byte what pycrate encodes (so pycrate
decodes it to the same value), ours decodes pycrate's bytes (random values, hypothesis) to
pycrate's value, and on mutated bytes ours gives pycrate's value or falls back to it -- never
a different value, never another exception."""

from __future__ import annotations

import dataclasses
import random
import subprocess
import sys
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from protocols.sigtran import cap, fastber, tcap
from protocols.sigtran.constants import (
    AC_OF_PHASE,
    O_EVENTS,
    T_EVENTS,
    InvokeProblem,
    Op,
    PAbortCause,
    Phase,
)
from protocols.sigtran.errors import TcapError
from protocols.sigtran.tcap import Invoke, MessageType, TcapMessage

_SETTINGS = settings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])  # fmt: skip


def _theirs(data: bytes) -> Any:
    m = tcap.grammar()
    m.from_ber(data)
    return m.get_val()


def _value(msg: TcapMessage) -> Any:
    """The pycrate value tcap.encode builds for a message (whichever codec then writes it)."""
    was, fastber.enabled = fastber.enabled, False
    try:
        return _theirs(tcap.encode(msg))
    finally:
        fastber.enabled = was


def _no_pycrate(value: Any) -> bytes:
    raise AssertionError(f"not by the fast path: {value!r}"[:300])


def _check(msg: TcapMessage) -> bytes:
    """Ours and pycrate's encoding are the same bytes; both decoders read them the same."""
    value = _value(msg)
    theirs = tcap.encode_pycrate(value)
    assert fastber.encode(value) == theirs  # (raises Fallback if the fast path did not know it)
    # tcap.encode takes the fast path for it (pycrate would fail here) and writes the same.
    slow, tcap.encode_pycrate = tcap.encode_pycrate, _no_pycrate  # type: ignore[assignment]
    try:
        ours = tcap.encode(msg)
    finally:
        tcap.encode_pycrate = slow  # type: ignore[assignment]
    assert ours == theirs
    assert fastber.decode(theirs) == _theirs(theirs) == value
    assert tcap.decode(ours) == msg
    return ours


digits = st.text("0123456789", min_size=4, max_size=15)
phases = st.sampled_from(list(Phase))
tids = st.binary(min_size=1, max_size=4)
iids = st.integers(-128, 127)


@st.composite
def initial_dps(draw: st.DrawFn) -> Any:
    terminating = draw(st.booleans())
    location = draw(st.none() | st.tuples(st.sampled_from(["262", "310", "234"]),
                                          st.sampled_from(["01", "02", "410"])))  # fmt: skip
    return cap.initial_dp(
        service_key=draw(st.integers(0, 2**31 - 1)),
        calling=draw(st.text("0123456789", min_size=2, max_size=16)),
        called=draw(digits),
        imsi=draw(st.sampled_from(["", "262011234567890", "31041000000001"])),
        location=location,
        msc=draw(st.sampled_from(["", "491720000000", "4917"])),
        call_reference=draw(st.binary(min_size=0, max_size=8)),
        terminating=terminating,
    )


@st.composite
def applies(draw: st.DrawFn, phase: Phase) -> Any:
    return cap.apply_charging(
        phase,
        draw(st.integers(1, 864000)),
        release=draw(st.booleans()),
        tone=draw(st.booleans()),
        tariff_switch=draw(st.none() | st.integers(1, 86400)),
    )


@st.composite
def reports(draw: st.DrawFn) -> bytes:
    since = draw(st.none() | st.integers(0, 864000))
    return cap.call_result(
        draw(st.integers(0, 864000)),
        leg_active=draw(st.booleans()),
        since_switch=since,
        switch_interval=None if since is None else draw(st.none() | st.integers(1, 864000)),
    )


@_SETTINGS
@given(phases, tids, iids, initial_dps())
def test_begin_with_initial_dp(phase: Phase, otid: bytes, iid: int, arg: Any) -> None:
    _check(TcapMessage(MessageType.BEGIN, otid=otid, dialogue=tcap.request(phase),
                       components=(Invoke(iid, Op.INITIAL_DP, arg),)))  # fmt: skip


@_SETTINGS
@given(phases, tids, tids, st.data())
def test_continue_with_rrb_apply_charging_continue(
    phase: Phase, otid: bytes, dtid: bytes, data: st.DataObject
) -> None:
    events = data.draw(st.sampled_from([O_EVENTS, T_EVENTS]))
    mode = data.draw(st.sampled_from(["notifyAndContinue", "interrupted"]))
    first = data.draw(st.booleans())
    _check(TcapMessage(
        MessageType.CONTINUE, otid=otid, dtid=dtid,
        dialogue=tcap.accepted(phase) if first else None,
        components=(Invoke(1, Op.REQUEST_REPORT_BCSM_EVENT, cap.request_report(events, mode)),
                    Invoke(2, Op.APPLY_CHARGING, data.draw(applies(phase))),
                    Invoke(3, Op.CONTINUE))))  # fmt: skip
    # The payload alone: ours is pycrate's, both ways.
    ach = data.draw(applies(phase))["aChBillingChargingCharacteristics"]
    codec, name = cap._ACH[phase]
    t = getattr(cap.charging_module(), name)
    t.from_ber(ach)
    assert fastber.decode_value(codec, ach) == t.get_val()
    assert fastber.encode_value(codec, t.get_val()) == bytes(t.to_ber())


@_SETTINGS
@given(
    tids,
    tids,
    iids,
    iids,
    reports(),
    st.sampled_from(["oAnswer", "oDisconnect", "tDisconnect", "oNoAnswer"]),
)
def test_continue_with_reports_and_events(
    otid: bytes, dtid: bytes, i1: int, i2: int, report: bytes, event: str
) -> None:
    _check(TcapMessage(MessageType.CONTINUE, otid=otid, dtid=dtid, components=(
        Invoke(i1, Op.APPLY_CHARGING_REPORT, report),
        Invoke(i2, Op.EVENT_REPORT_BCSM, cap.event_report(event, 1)))))  # fmt: skip
    m = cap.charging_module().CAMEL_CallResult
    m.from_ber(report)
    assert fastber.decode_value(fastber.CALL_RESULT, report) == m.get_val()


@_SETTINGS
@given(tids, iids, st.integers(1, 127), st.booleans())
def test_end_with_release_call_or_nothing(dtid: bytes, iid: int, cause: int, empty: bool) -> None:
    comps = () if empty else (Invoke(iid, Op.RELEASE_CALL, cap.release_call(cause)),)
    _check(TcapMessage(MessageType.END, dtid=dtid, components=comps))


def test_what_the_fast_path_does_not_know_goes_to_pycrate() -> None:
    """Rejects, aborts, unknown operations: pycrate writes and reads them, as before."""
    for msg in (
        TcapMessage(MessageType.CONTINUE, otid=b"\1", dtid=b"\2",
                    components=(tcap.Reject(3, InvokeProblem.MISTYPED_ARGUMENT),)),
        TcapMessage(MessageType.ABORT, dtid=b"\2", p_abort=PAbortCause.RESOURCE_LIMITATION),
        TcapMessage(MessageType.END, dtid=b"\2", components=(tcap.ReturnError(5, 14),)),
    ):  # fmt: skip
        with pytest.raises(fastber.Fallback):
            fastber.encode(_value(msg))
        raw = tcap.encode(msg)
        with pytest.raises(fastber.Fallback):
            fastber.decode(raw)
        assert tcap.decode(raw) == msg


@pytest.mark.parametrize("phase", list(Phase))
def test_dialogue_portions_are_pycrates(phase: Phase) -> None:
    """The AARQ and accepting AARE the fast path writes by hand are pycrate's bytes, and
    read back as pycrate's value."""
    by_bytes, _ = fastber._dialogues()
    for d in (tcap.request(phase), tcap.accepted(phase)):
        raw = tcap.encode_pycrate(
            ("end", {"dtid": b"\1", "dialoguePortion": tcap.dialogue_value(d)})
        )
        portion = raw[5:]  # (after the End's tag, length and dtid)
        assert portion == fastber.dialogue_portion(
            AC_OF_PHASE[phase], d.kind.value.endswith("Response")
        )
        assert by_bytes[portion] == _theirs(raw)[1]["dialoguePortion"]


def test_the_flow_never_loads_pycrate() -> None:
    """The seven messages of a call in every phase, written and read, with the payloads the
    agent and the simulator read: pycrate's grammar stays unimported (its import takes a
    second or more and leaves ~110,000 objects for the garbage collector)."""
    script = (
        "import sys\n"
        "from bench.camel import _call_messages\n"
        "from protocols.sigtran import cap, tcap\n"
        "from protocols.sigtran.constants import Phase\n"
        "from protocols.sigtran.tcap import Invoke\n"
        "for p in Phase:\n"
        "    for m in _call_messages(p):\n"
        "        assert tcap.decode(tcap.encode(m)) == m\n"
        "    cap.read_apply_charging(p, Invoke(1, 35, cap.apply_charging(p, 600, release=True)))\n"
        "cap.read_call_result(Invoke(1, 36, cap.call_result(600, since_switch=20)))\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('pycrate'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


def _outcome(raw: bytes) -> Any:
    """What the codec makes of bytes, comparable: the message (its bad components by what
    they say) or the TcapError's cause."""
    try:
        msg = tcap.decode(raw)
    except TcapError as exc:
        return exc.cause
    bad = [(e.problem, e.invoke_id, str(e)) for e in msg.bad_components]
    return dataclasses.replace(msg, bad_components=()), bad


def _seeds() -> list[bytes]:
    out = []
    for p in Phase:
        out.append(tcap.encode(TcapMessage(MessageType.BEGIN, otid=b"\0\0\0\1",
                   dialogue=tcap.request(p), components=(Invoke(1, Op.INITIAL_DP, cap.initial_dp(
                       service_key=7, calling="491700000001", called="4930123456",
                       imsi="262011234567890", location=("262", "01"), msc="4917",
                       call_reference=b"\1\2")),))))  # fmt: skip
        out.append(tcap.encode(TcapMessage(MessageType.CONTINUE, otid=b"\0\1", dtid=b"\0\2",
                   dialogue=tcap.accepted(p), components=(
                       Invoke(1, Op.REQUEST_REPORT_BCSM_EVENT, cap.request_report(O_EVENTS)),
                       Invoke(2, Op.APPLY_CHARGING, cap.apply_charging(p, 600, release=True,
                                                                       tone=True)),
                       Invoke(3, Op.CONTINUE)))))  # fmt: skip
    out.append(tcap.encode(TcapMessage(MessageType.CONTINUE, otid=b"\1", dtid=b"\2", components=(
        Invoke(4, Op.APPLY_CHARGING_REPORT, cap.call_result(600, since_switch=30)),
        Invoke(5, Op.EVENT_REPORT_BCSM, cap.event_report("oDisconnect", 1))))))  # fmt: skip
    out.append(tcap.encode(TcapMessage(MessageType.END, dtid=b"\2", components=(
        Invoke(6, Op.RELEASE_CALL, cap.release_call(31)),))))  # fmt: skip
    return out


def test_mutated_bytes_get_pycrates_answer_or_go_to_pycrate() -> None:
    rng = random.Random(1414)
    seeds = _seeds()
    for s in seeds:
        assert fastber.decode(s) == _theirs(s)  # every seed is the fast path's own
    fast = same_reject = 0
    for i in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 3)):
            what, pos = rng.random(), rng.randrange(len(data))
            if what < 0.6:
                data[pos] = rng.randrange(256)
            elif what < 0.8:
                del data[pos : pos + rng.randrange(1, 4)]
            else:
                data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
        raw = bytes(data)
        try:
            ours = fastber.decode(raw)
        except fastber.Fallback:
            ours = None
        try:
            theirs = _theirs(raw)
        except Exception:  # pycrate raises more than its own errors on malformed input
            theirs = None
        if ours is not None:
            fast += 1
            assert ours == theirs, (i, raw.hex())
        # And whichever path read it, the codec answers with a TcapError or a message.
        was, fastber.enabled = fastber.enabled, False
        try:
            slow = _outcome(raw)
        finally:
            fastber.enabled = was
        both = _outcome(raw)
        same_reject += slow == both
        assert slow == both, (i, raw.hex())
    assert fast > 200 and same_reject == 3000  # (a mutated byte is often still valid)
