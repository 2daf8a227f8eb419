"""CAP operation arguments (3GPP TS 29.078) as plain values, both ways: what the gsmSCF reads
(InitialDP, EventReportBCSM, ApplyChargingReport) and sends (RequestReportBCSMEvent,
ApplyCharging, Continue, ReleaseCall), and what an SSF simulator reads and sends.

The pycrate values (dicts, tuples for CHOICEs) stay in this module and :mod:`tcap`. The two
payloads the CAP grammar leaves as OCTET STRINGs, ``AChBillingChargingCharacteristics`` and
``CAMEL-CallResult``, are BER of the small module ``camel_charging.asn`` beside this file,
compiled with pycrate's compiler once, on first use. Anything unreadable in an argument is a
:class:`ComponentError` (a Reject with mistypedArgument).
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import tempfile
import types
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

from protocols.sigtran import fastber
from protocols.sigtran.constants import (
    CAUSE_NORMAL_UNSPECIFIED,
    InvokeProblem,
    Op,
    Phase,
)
from protocols.sigtran.errors import ComponentError
from protocols.sigtran.tcap import Invoke

_TBCD: Final = "0123456789*#abc"


@functools.cache
def charging_module() -> Any:
    """The compiled CAMEL-Charging module (pycrate runtime objects)."""
    from pycrate_asn1c.asnproc import GLOBAL, PycrateGenerator, compile_text, generate_modules

    text = resources.files("protocols.sigtran").joinpath("camel_charging.asn").read_text()
    quiet = io.StringIO()  # (the compiler reports its progress: at INFO, and on stdout)
    compiler_log = logging.getLogger("pycrate.asn1c")
    level = compiler_log.level
    compiler_log.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            compile_text(text)
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "camel_charging.py")
                generate_modules(PycrateGenerator, path)
                with open(path, encoding="utf-8") as f:
                    source = f.read()
    finally:
        GLOBAL.clear()
        compiler_log.setLevel(level)
    mod = types.ModuleType("camel_charging")
    exec(compile(source, "camel_charging.asn", "exec"), mod.__dict__)
    return mod.CAMEL_Charging


#: The fast codec and the compiled type of AChBillingChargingCharacteristics per phase.
_ACH: Final = {Phase.V2: (fastber.ACH_V2, "AChBillingChargingCharacteristicsV2"),
               Phase.V3: (fastber.ACH_V3, "AChBillingChargingCharacteristicsV3"),
               Phase.V4: (fastber.ACH_V4, "AChBillingChargingCharacteristicsV4")}  # fmt: skip


def _decode(codec: Any, name: str, data: bytes) -> Any:
    """A camel_charging.asn value: the fast path's, else pycrate's (which raises on what it
    cannot read)."""
    if fastber.enabled:
        try:
            return fastber.decode_value(codec, data)
        except fastber.Fallback:
            pass
    t = getattr(charging_module(), name)
    t.from_ber(data)
    return t.get_val()


def _encode(codec: Any, name: str, value: Any) -> bytes:
    if fastber.enabled:
        try:
            return fastber.encode_value(codec, value)
        except fastber.Fallback:
            pass
    t = getattr(charging_module(), name)
    t.set_val(value)
    return bytes(t.to_ber())


def _bad(invoke: Invoke, detail: str) -> ComponentError:
    return ComponentError(InvokeProblem.MISTYPED_ARGUMENT, invoke.invoke_id, detail)


# -- numbers ------------------------------------------------------------------------------------


def tbcd_encode(digits: str) -> bytes:
    """TBCD (TS 29.002): two digits an octet, low nibble first, filler F."""
    nib = [_TBCD.index(d) for d in digits.lower()]
    if len(nib) % 2:
        nib.append(0x0F)
    return bytes(nib[i] | nib[i + 1] << 4 for i in range(0, len(nib), 2))


def tbcd_decode(data: bytes) -> str:
    out: list[str] = []
    for b in data:
        for n in (b & 0x0F, b >> 4):
            if n == 0x0F:
                return "".join(out)
            out.append(_TBCD[n] if n < len(_TBCD) else "?")
    return "".join(out)


def bcd_number(digits: str) -> bytes:
    """CalledPartyBCDNumber / ISDN-AddressString: 0x91 (international, E.164) + TBCD."""
    return b"\x91" + tbcd_encode(digits)


def read_bcd_number(data: bytes) -> str:
    """Digits of a CalledPartyBCDNumber (TS 24.008 §10.5.4.7), '+' free: international
    numbers as they are, others as dialled."""
    if not data:
        return ""
    return tbcd_decode(data[1:])


def isup_number(digits: str, nai: int = 4, calling: bool = True) -> bytes:
    """An ISUP CallingPartyNumber (Q.763 §3.10) or CalledPartyNumber (§3.9): odd/even and
    nature of address (4: international), numbering plan E.164, BCD digits."""
    odd = len(digits) % 2
    second = 0x13 if calling else 0x10  # NPI E.164; calling: network provided, allowed
    nib = [int(d, 16) for d in digits]
    if odd:
        nib.append(0)
    body = bytes(nib[i] | nib[i + 1] << 4 for i in range(0, len(nib), 2))
    return bytes([(0x80 if odd else 0) | nai, second]) + body


def read_isup_number(data: bytes) -> tuple[str, int]:
    """(digits, nature of address) of an ISUP number."""
    if len(data) < 2:
        return "", 0
    odd, nai = bool(data[0] & 0x80), data[0] & 0x7F
    out = []
    for b in data[2:]:
        out += [f"{b & 0x0F:x}", f"{b >> 4:x}"]
    if odd and out:
        out.pop()
    return "".join(out), nai


def cell_global_id(mcc: str, mnc: str, lac: int = 1, ci: int = 1) -> bytes:
    """CellGlobalIdOrServiceAreaIdFixedLength (TS 29.002): MCC/MNC in TBCD, LAC, CI."""
    mnc3 = mnc if len(mnc) == 3 else mnc + "f"
    plmn = bytes([int(mcc[1]) << 4 | int(mcc[0]), int(mnc3[2], 16) << 4 | int(mcc[2]),
                  int(mnc3[1]) << 4 | int(mnc3[0])])  # fmt: skip
    return plmn + lac.to_bytes(2, "big") + ci.to_bytes(2, "big")


def read_plmn(data: bytes) -> str:
    """MCC+MNC of the first three octets of a cell id or LAI ('26201')."""
    if len(data) < 3:
        return ""
    d = [data[0] & 0x0F, data[0] >> 4, data[1] & 0x0F, data[2] & 0x0F, data[2] >> 4,
         data[1] >> 4]  # fmt: skip
    mcc = "".join(str(x) for x in d[:3])
    mnc = "".join(str(x) for x in d[3:5]) + ("" if d[5] == 0x0F else str(d[5]))
    return mcc + mnc


def cause(value: int = CAUSE_NORMAL_UNSPECIFIED) -> bytes:
    """A Q.850 cause: ITU-T coding, location user, extension bits set."""
    return bytes([0x80, 0x80 | (value & 0x7F)])


# -- what the gsmSCF reads ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InitialDp:
    service_key: int
    event_type: str
    #: The calling party's digits (ISUP), the called party's (BCD for MO, ISUP for MT).
    calling: str
    called: str
    imsi: str
    #: MCC+MNC where the subscriber is (from the cell id / LAI), '' if not given.
    location: str
    msc_address: str
    call_reference: bytes


def read_initial_dp(invoke: Invoke) -> InitialDp:
    a = invoke.argument
    try:
        calling = read_isup_number(a["callingPartyNumber"])[0] if "callingPartyNumber" in a else ""
        if "calledPartyBCDNumber" in a:
            called = read_bcd_number(a["calledPartyBCDNumber"])
        elif "calledPartyNumber" in a:
            called = read_isup_number(a["calledPartyNumber"])[0]
        else:
            called = ""
        loc = ""
        info = a.get("locationInformation")
        if info is not None and "cellGlobalIdOrServiceAreaIdOrLAI" in info:
            loc = read_plmn(info["cellGlobalIdOrServiceAreaIdOrLAI"][1])
        return InitialDp(
            int(a["serviceKey"]),
            str(a.get("eventTypeBCSM", "collectedInfo")),
            calling,
            called,
            tbcd_decode(a["iMSI"]) if "iMSI" in a else "",
            loc,
            read_bcd_number(a["mscAddress"]) if "mscAddress" in a else "",
            bytes(a.get("callReferenceNumber", b"")),
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise _bad(invoke, f"InitialDP: {exc}") from None


@dataclass(frozen=True, slots=True)
class EventReport:
    event: str
    #: 1 calling party, 2 called party (0: not said).
    leg: int


def read_event_report(invoke: Invoke) -> EventReport:
    a = invoke.argument
    try:
        leg = a.get("legID")
        return EventReport(str(a["eventTypeBCSM"]), leg[1][0] if leg else 0)
    except (KeyError, TypeError, IndexError) as exc:
        raise _bad(invoke, f"EventReportBCSM: {exc}") from None


@dataclass(frozen=True, slots=True)
class CallResult:
    """A timeDurationChargingResult: time in 100 ms since answer (``tariff_switch`` False) or
    since the last tariff switch (True, with the interval the switch came after)."""

    time: int
    tariff_switch: bool = False
    switch_interval: int | None = None
    leg_active: bool = True
    leg: int = 1


def read_call_result(invoke: Invoke) -> CallResult:
    """The CAMEL-CallResult inside an ApplyChargingReport."""
    try:
        _, r = _decode(fastber.CALL_RESULT, "CAMEL_CallResult", invoke.argument)
        ti_kind, ti = r["timeInformation"]
        party = r["partyToCharge"][1]
        if ti_kind == "timeIfNoTariffSwitch":
            return CallResult(int(ti), False, None, bool(r.get("legActive", True)), party[0])
        return CallResult(int(ti["timeSinceTariffSwitch"]), True, ti.get("tariffSwitchInterval"),
                          bool(r.get("legActive", True)), party[0])  # fmt: skip
    except Exception as exc:  # pycrate, on a malformed OCTET STRING's content
        raise _bad(invoke, f"CAMEL-CallResult: {type(exc).__name__}") from None


# -- what the gsmSCF sends ----------------------------------------------------------------------


def request_report(events: Sequence[tuple[str, int]], mode: str = "notifyAndContinue") -> Any:
    """RequestReportBCSMEventArg arming ``events`` (name, leg). The value is shared (made
    once for each set of events, and its encoding with it): do not change it."""
    return _request_report(tuple(events), mode)


@functools.lru_cache(maxsize=256)
def _request_report(events: tuple[tuple[str, int], ...], mode: str) -> Any:
    return fastber.freeze({"bcsmEvents": [
        {"eventTypeBCSM": e, "monitorMode": "interrupted" if e.endswith("Disconnect") and
         mode == "interrupted" else mode, "legID": ("sendingSideID", bytes([leg]))}
        for e, leg in events
    ]})  # fmt: skip


@functools.lru_cache(maxsize=4096)
def apply_charging(
    phase: Phase,
    max_duration: int,
    *,
    release: bool = False,
    tone: bool = False,
    tariff_switch: int | None = None,
) -> Any:
    """ApplyChargingArg: ``max_duration`` in 100 ms, ``tariff_switch`` in seconds; the
    phase's shape of releaseIfdurationExceeded (TS 29.078: a SEQUENCE {tone} in phase 2, a
    BOOLEAN later, with the tone as the audible indicator in phase 4). Shared, as
    :func:`request_report`'s: the grants of the default quota repeat call after call."""
    tdc: dict[str, Any] = {"maxCallPeriodDuration": max_duration}
    if phase is Phase.V2:
        if release:
            tdc["releaseIfdurationExceeded"] = {"tone": tone}
    else:
        if release:
            tdc["releaseIfdurationExceeded"] = True
        if phase is Phase.V4 and tone:
            tdc["audibleIndicator"] = ("tone", True)
    if tariff_switch is not None:
        tdc["tariffSwitchInterval"] = tariff_switch
    codec, name = _ACH[phase]
    return fastber.freeze({
        "aChBillingChargingCharacteristics": _encode(codec, name, ("timeDurationCharging", tdc)),
        "partyToCharge": ("sendingSideID", b"\x01"),
    })  # fmt: skip


@functools.lru_cache(maxsize=256)
def connect(digits: str) -> Any:
    """ConnectArg routing the call to ``digits`` (international, E.164): the
    destinationRoutingAddress, one ISUP CalledPartyNumber (TS 29.078 §8.6, Q.763 §3.9)."""
    return fastber.freeze({"destinationRoutingAddress": [isup_number(digits, calling=False)]})


def read_connect(invoke: Invoke) -> str:
    """The digits a Connect routes the call to (an SSF's reading)."""
    try:
        return read_isup_number(invoke.argument["destinationRoutingAddress"][0])[0]
    except (KeyError, TypeError, IndexError) as exc:
        raise _bad(invoke, f"Connect: {exc}") from None


@functools.lru_cache(maxsize=256)
def release_call(value: int = CAUSE_NORMAL_UNSPECIFIED) -> Any:
    return fastber.freeze(("allCallSegments", cause(value)))


# -- what an SSF sends and reads (the MSC simulator, tests) --------------------------------------


def initial_dp(
    *,
    service_key: int,
    calling: str,
    called: str,
    imsi: str = "",
    location: tuple[str, str] | None = None,
    msc: str = "",
    call_reference: bytes = b"",
    terminating: bool = False,
) -> Any:
    """An InitialDPArg for an originating call (collectedInfo, CalledPartyBCDNumber) or a
    terminating one (termAttemptAuthorized, CalledPartyNumber)."""
    arg: dict[str, Any] = {"serviceKey": service_key, "callingPartyNumber": isup_number(calling)}
    if terminating:
        arg["calledPartyNumber"] = isup_number(called, calling=False)
        arg["eventTypeBCSM"] = "termAttemptAuthorized"
    else:
        arg["calledPartyBCDNumber"] = bcd_number(called)
        arg["eventTypeBCSM"] = "collectedInfo"
    if imsi:
        arg["iMSI"] = tbcd_encode(imsi)
    if location is not None:
        arg["locationInformation"] = {"cellGlobalIdOrServiceAreaIdOrLAI": (
            "cellGlobalIdOrServiceAreaIdFixedLength", cell_global_id(*location))}  # fmt: skip
    if call_reference:
        arg["callReferenceNumber"] = call_reference
    if msc:
        arg["mscAddress"] = bcd_number(msc)
    return arg


def event_report(event: str, leg: int) -> Any:
    return {"eventTypeBCSM": event, "legID": ("receivingSideID", bytes([leg])),
            "miscCallInfo": {"messageType": "notification"}}  # fmt: skip


def call_result(
    time: int,
    *,
    leg_active: bool = True,
    since_switch: int | None = None,
    switch_interval: int | None = None,
) -> bytes:
    """ApplyChargingReportArg: a CAMEL-CallResult (times in 100 ms)."""
    if since_switch is None:
        ti: Any = ("timeIfNoTariffSwitch", time)
    else:
        tis: dict[str, int] = {"timeSinceTariffSwitch": since_switch}
        if switch_interval is not None:
            tis["tariffSwitchInterval"] = switch_interval
        ti = ("timeIfTariffSwitch", tis)
    value = (
        "timeDurationChargingResult",
        {
            "partyToCharge": ("receivingSideID", b"\x01"),
            "timeInformation": ti,
            "legActive": leg_active,
        },
    )
    return _encode(fastber.CALL_RESULT, "CAMEL_CallResult", value)


@dataclass(frozen=True, slots=True)
class ApplyCharging:
    max_duration: int
    release: bool = False
    tone: bool = False
    tariff_switch: int | None = None


def read_apply_charging(phase: Phase, invoke: Invoke) -> ApplyCharging:
    codec, name = _ACH[phase]
    try:
        _, tdc = _decode(codec, name, invoke.argument["aChBillingChargingCharacteristics"])
        rel = tdc.get("releaseIfdurationExceeded", False)
        if isinstance(rel, dict):
            release, tone = True, bool(rel.get("tone", False))
        else:
            release = bool(rel)
            tone = tdc.get("audibleIndicator", ("tone", False)) == ("tone", True)
        return ApplyCharging(int(tdc["maxCallPeriodDuration"]), release, tone,
                             tdc.get("tariffSwitchInterval"))  # fmt: skip
    except Exception as exc:
        raise _bad(invoke, f"AChBillingChargingCharacteristics: {type(exc).__name__}") from None


def invoke(op: Op, iid: int, argument: Any = None) -> Invoke:
    return Invoke(iid, int(op), argument)
