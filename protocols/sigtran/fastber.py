"""A hand-written BER fast path for the hot CAP messages, beside pycrate (docs/camel.md).

pycrate costs 0.1-0.3 ms to encode or decode one TCAP message; a prepaid call is seven of
them. This module reads and writes the messages of the prepaid flow -- TC-BEGIN with
InitialDP, TC-CONTINUE with RequestReportBCSMEvent + ApplyCharging + Continue,
ApplyChargingReport, EventReportBCSM, ReleaseCall, TC-END, in CAP phases 2, 3 and 4 -- and
the two payloads of ``camel_charging.asn`` (AChBillingChargingCharacteristics, CAMEL-
CallResult), producing and taking **the same values as pycrate's** ``get_val`` / ``set_val``
(dicts, tuples for CHOICEs, bytes), so that :mod:`tcap` and :mod:`cap` read them unchanged.

It is strict, and it never decides alone: whatever it does not know exactly -- an element or
tag outside its tables, an operation it has no table for, a value out of the grammar's
constraints, a non-minimal length or integer, an indefinite length, a dialogue portion other
than the six of the supported phases, an Abort -- raises :class:`Fallback`, and the caller
hands the bytes (or the value) to pycrate, which accepts or rejects it as before. So on any
input the fast path either gives pycrate's answer or none; tests/test_camel_fastber.py holds
it to that (ours encodes -> pycrate decodes equal, pycrate encodes -> ours decodes equal,
mutated bytes -> same value or fallback).
"""

from __future__ import annotations

import functools
from typing import Any, Final

from protocols.sigtran.constants import AC_OF_PHASE, DIALOGUE_AS_ID, Op

#: Off: pycrate alone (bench/camel.py measures both in one run).
enabled = True


class Fallback(Exception):
    """Not for the fast path: let pycrate read or write it."""


_FALLBACK: Final = Fallback()

#: Values declared immutable (:func:`freeze`) and their encoding once made, by identity: the
#: gsmSCF sends the same few arguments and dialogue portions over and over (the events it
#: arms, the grant of the default quota, the AARE of each phase), built once by cached
#: builders in :mod:`cap` and :mod:`tcap`. The entry holds the value, so its id is not reused
#: while it is here; emptied when full (a miss costs one encoding).
_FROZEN: Final[dict[int, list[Any]]] = {}
_FROZEN_SIZE: Final = 8192


def freeze(value: Any) -> Any:
    """Declare ``value`` (an argument or a dialogue portion's value) never to change, so its
    encoding is made once; returns it. The caller must not mutate it afterwards."""
    if len(_FROZEN) >= _FROZEN_SIZE:
        _FROZEN.clear()
    _FROZEN[id(value)] = [value, None]
    return value


def _memo(value: Any) -> list[Any] | None:
    """The memo entry of a frozen value, or None."""
    m = _FROZEN.get(id(value))
    return m if m is not None and m[0] is value else None


# -- BER primitives ---------------------------------------------------------------------------


def _read(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """One TLV at ``pos``: (tag as the int of its octets, content start, content end)."""
    if pos >= end:
        raise _FALLBACK
    t = data[pos]
    pos += 1
    if t & 0x1F == 0x1F:  # high tag number: one or two more octets
        if pos >= end:
            raise _FALLBACK
        b = data[pos]
        pos += 1
        t = t << 8 | b
        if b & 0x80:
            if b == 0x80 or pos >= end or data[pos] & 0x80:
                raise _FALLBACK
            t = t << 8 | data[pos]
            pos += 1
        elif b < 31:
            raise _FALLBACK
    if pos >= end:
        raise _FALLBACK
    n = data[pos]
    pos += 1
    if n & 0x80:
        if n == 0x81 and pos < end and data[pos] >= 0x80:
            n = data[pos]
            pos += 1
        elif n == 0x82 and pos + 2 <= end and data[pos]:
            n = data[pos] << 8 | data[pos + 1]
            pos += 2
        else:  # indefinite, non-minimal or huge: pycrate's business
            raise _FALLBACK
    stop = pos + n
    if stop > end:
        raise _FALLBACK
    return t, pos, stop


def _head(tag: int, content: bytes) -> bytes:
    """Tag octets + definite minimal length + content."""
    n = len(content)
    tb = tag.to_bytes((tag.bit_length() + 7) // 8, "big")
    if n < 0x80:
        return tb + bytes((n,)) + content
    if n < 0x100:
        return tb + bytes((0x81, n)) + content
    if n < 0x10000:
        return tb + bytes((0x82, n >> 8, n & 0xFF)) + content
    raise _FALLBACK


def ctx(number: int, constructed: bool = False, cls: int = 0x80) -> int:
    """The tag int of [number] in class ``cls`` (context 0x80, application 0x40)."""
    first = cls | (0x20 if constructed else 0)
    if number < 31:
        return first | number
    if number < 128:
        return (first | 0x1F) << 8 | number
    return ((first | 0x1F) << 8 | 0x80 | number >> 7) << 8 | (number & 0x7F)


# -- content codecs (the V of a TLV) ------------------------------------------------------------


class _Content:
    constructed = False

    def dec(self, data: bytes, s: int, e: int) -> Any:
        raise NotImplementedError

    def enc(self, v: Any) -> bytes:
        raise NotImplementedError


class Int(_Content):
    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi

    def dec(self, data: bytes, s: int, e: int) -> int:
        n = e - s
        if n == 0 or n > 5:
            raise _FALLBACK
        if n > 1 and ((data[s] == 0 and data[s + 1] < 0x80)
                      or (data[s] == 0xFF and data[s + 1] >= 0x80)):  # fmt: skip
            raise _FALLBACK
        v = int.from_bytes(data[s:e], "big", signed=True)
        if not self.lo <= v <= self.hi:
            raise _FALLBACK
        return v

    def enc(self, v: Any) -> bytes:
        if not isinstance(v, int) or isinstance(v, bool) or not self.lo <= v <= self.hi:
            raise _FALLBACK
        i = int(v)  # (an IntEnum such as Op)
        n = (i if i >= 0 else ~i).bit_length() // 8 + 1
        return i.to_bytes(n, "big", signed=True)


class Enum(_Content):
    def __init__(self, names: dict[str, int]) -> None:
        self.by_name = names
        self.by_value = {v: k for k, v in names.items()}

    def dec(self, data: bytes, s: int, e: int) -> str:
        if e - s != 1:
            raise _FALLBACK
        name = self.by_value.get(data[s])
        if name is None:
            raise _FALLBACK
        return name

    def enc(self, v: Any) -> bytes:
        n = self.by_name.get(v) if isinstance(v, str) else None
        if n is None:
            raise _FALLBACK
        return bytes((n,))


class Bool(_Content):
    def dec(self, data: bytes, s: int, e: int) -> bool:
        if e - s != 1 or data[s] not in (0, 0xFF):
            raise _FALLBACK
        return data[s] == 0xFF

    def enc(self, v: Any) -> bytes:
        if type(v) is not bool:
            raise _FALLBACK
        return b"\xff" if v else b"\x00"


class Null(_Content):
    def dec(self, data: bytes, s: int, e: int) -> int:
        if e != s:
            raise _FALLBACK
        return 0

    def enc(self, v: Any) -> bytes:
        if v != 0 or type(v) is not int:
            raise _FALLBACK
        return b""


class Octets(_Content):
    def __init__(self, lo: int = 0, hi: int = 1 << 16) -> None:
        self.lo, self.hi = lo, hi

    def dec(self, data: bytes, s: int, e: int) -> bytes:
        if not self.lo <= e - s <= self.hi:
            raise _FALLBACK
        return data[s:e]

    def enc(self, v: Any) -> bytes:
        if type(v) is not bytes or not self.lo <= len(v) <= self.hi:
            raise _FALLBACK
        return v


# -- TLV codecs: a tag (or, for a CHOICE, a set of them) and what it carries ---------------------


class _Tlv:
    tags: frozenset[int]

    def dec_tlv(self, t: int, data: bytes, s: int, e: int) -> Any:
        raise NotImplementedError

    def enc_tlv(self, v: Any) -> bytes:
        raise NotImplementedError


class T(_Tlv):
    """A tagged (implicitly, or universal) element: ``content`` under ``tag``."""

    def __init__(self, tag: int, content: _Content) -> None:
        self.tag, self.content, self.tags = tag, content, frozenset((tag,))

    def dec_tlv(self, t: int, data: bytes, s: int, e: int) -> Any:
        return self.content.dec(data, s, e)

    def enc_tlv(self, v: Any) -> bytes:
        return _head(self.tag, self.content.enc(v))


class X(_Tlv):
    """An explicitly tagged element (a tagged CHOICE): ``inner``'s TLV inside ``tag``."""

    def __init__(self, tag: int, inner: _Tlv) -> None:
        self.tag, self.inner, self.tags = tag, inner, frozenset((tag,))

    def dec_tlv(self, t: int, data: bytes, s: int, e: int) -> Any:
        t2, cs, ce = _read(data, s, e)
        if ce != e or t2 not in self.inner.tags:
            raise _FALLBACK
        return self.inner.dec_tlv(t2, data, cs, ce)

    def enc_tlv(self, v: Any) -> bytes:
        return _head(self.tag, self.inner.enc_tlv(v))


class C(_Tlv):
    """An untagged CHOICE: the alternative's own tag says which; the value is (name, v)."""

    def __init__(self, *alts: tuple[str, _Tlv]) -> None:
        self.by_name = dict(alts)
        self.by_tag = {t: (name, alt) for name, alt in alts for t in alt.tags}
        self.tags = frozenset(self.by_tag)

    def dec_tlv(self, t: int, data: bytes, s: int, e: int) -> Any:
        name, alt = self.by_tag[t]
        return (name, alt.dec_tlv(t, data, s, e))

    def enc_tlv(self, v: Any) -> bytes:
        if not isinstance(v, tuple) or len(v) != 2 or v[0] not in self.by_name:
            raise _FALLBACK
        return self.by_name[v[0]].enc_tlv(v[1])


class Seq(_Content):
    """A SEQUENCE: fields (name, TLV codec, optional) in the grammar's order. Unknown
    elements (an extension, a field not in the table) are not ours."""

    constructed = True

    def __init__(self, *fields: tuple[str, _Tlv, bool]) -> None:
        self.fields = fields
        self.names = frozenset(f[0] for f in fields)
        n = len(fields)
        #: The fields each tag can open, in order (a lookup, not a walk down the table:
        #: InitialDP has 26 fields), and the first mandatory field at or after each place.
        self.by_tag: dict[int, tuple[int, ...]] = {}
        for i, (_, codec, _) in enumerate(fields):
            for t in codec.tags:
                self.by_tag[t] = (*self.by_tag.get(t, ()), i)
        self.next_mandatory = [n] * (n + 1)
        for i in range(n - 1, -1, -1):
            self.next_mandatory[i] = i if not fields[i][2] else self.next_mandatory[i + 1]

    def dec(self, data: bytes, s: int, e: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        fields, by_tag, mandatory = self.fields, self.by_tag, self.next_mandatory
        i = 0
        pos = s
        while pos < e:
            t, cs, ce = _read(data, pos, e)
            # The first field at or after i that the tag opens; the ones skipped must all be
            # optional (as walking the table field by field would find).
            for j in by_tag.get(t, ()):
                if j >= i:
                    break
            else:
                raise _FALLBACK
            if mandatory[i] < j:
                raise _FALLBACK
            name, codec, _ = fields[j]
            out[name] = codec.dec_tlv(t, data, cs, ce)
            i = j + 1
            pos = ce
        if mandatory[i] < len(fields):
            raise _FALLBACK
        return out

    def enc(self, v: Any) -> bytes:
        if type(v) is not dict or not self.names.issuperset(v):
            raise _FALLBACK
        parts = []
        for name, codec, optional in self.fields:
            if name in v:
                parts.append(codec.enc_tlv(v[name]))
            elif not optional:
                raise _FALLBACK
        return b"".join(parts)


class SeqOf(_Content):
    constructed = True

    def __init__(self, item: _Tlv, lo: int = 1, hi: int = 1 << 16) -> None:
        self.item, self.lo, self.hi = item, lo, hi

    def dec(self, data: bytes, s: int, e: int) -> list[Any]:
        out = []
        pos = s
        while pos < e:
            t, cs, ce = _read(data, pos, e)
            if t not in self.item.tags:
                raise _FALLBACK
            out.append(self.item.dec_tlv(t, data, cs, ce))
            pos = ce
        if not self.lo <= len(out) <= self.hi:
            raise _FALLBACK
        return out

    def enc(self, v: Any) -> bytes:
        if type(v) is not list or not self.lo <= len(v) <= self.hi:
            raise _FALLBACK
        return b"".join(self.item.enc_tlv(x) for x in v)


def tag(number: int, content: _Content, cls: int = 0x80) -> T:
    """[number] IMPLICIT content (constructed when the content is)."""
    return T(ctx(number, content.constructed, cls), content)


def _field(name: str, number: int, content: _Content) -> tuple[str, _Tlv, bool]:
    return (name, tag(number, content), True)


def _mandatory(name: str, number: int, content: _Content) -> tuple[str, _Tlv, bool]:
    return (name, tag(number, content), False)


# -- CAP (TS 29.078 v4 grammar, as pycrate's TCAP_CAP has it; phases 2-3 are subsets) --------------

EVENT_TYPES: Final = {
    "collectedInfo": 2, "analyzedInformation": 3, "routeSelectFailure": 4,
    "oCalledPartyBusy": 5, "oNoAnswer": 6, "oAnswer": 7, "oMidCall": 8, "oDisconnect": 9,
    "oAbandon": 10, "termAttemptAuthorized": 12, "tBusy": 13, "tNoAnswer": 14, "tAnswer": 15,
    "tMidCall": 16, "tDisconnect": 17, "tAbandon": 18, "oTermSeized": 19, "callAccepted": 27,
    "oChangeOfPosition": 50, "tChangeOfPosition": 51, "oServiceChange": 52,
    "tServiceChange": 53,
}  # fmt: skip
_EVENT: Final = Enum(EVENT_TYPES)
_LEG: Final = Octets(1, 1)
_LEG_ID: Final = C(("sendingSideID", tag(0, _LEG)), ("receivingSideID", tag(1, _LEG)))

_LOCATION: Final = Seq(
    ("ageOfLocationInformation", T(0x02, Int(0, 32767)), True),
    _field("geographicalInformation", 0, Octets(8, 8)),
    _field("vlr-number", 1, Octets(1, 9)),
    _field("locationNumber", 2, Octets(2, 10)),
    ("cellGlobalIdOrServiceAreaIdOrLAI", X(ctx(3, True), C(
        ("cellGlobalIdOrServiceAreaIdFixedLength", tag(0, Octets(7, 7))),
        ("laiFixedLength", tag(1, Octets(5, 5))))), True),
)  # fmt: skip

INITIAL_DP: Final = Seq(
    _mandatory("serviceKey", 0, Int(0, 2147483647)),
    _field("calledPartyNumber", 2, Octets(2, 18)),
    _field("callingPartyNumber", 3, Octets(2, 10)),
    _field("callingPartysCategory", 5, Octets(1, 1)),
    _field("iPSSPCapabilities", 8, Octets(1, 4)),
    _field("locationNumber", 10, Octets(2, 10)),
    _field("originalCalledPartyID", 12, Octets(2, 10)),
    _field("highLayerCompatibility", 23, Octets(2, 2)),
    _field("additionalCallingPartyNumber", 25, Octets(2, 16)),
    ("bearerCapability", X(ctx(27, True), C(("bearerCap", tag(0, Octets(2, 11))))), True),
    _field("eventTypeBCSM", 28, _EVENT),
    _field("redirectingPartyID", 29, Octets(2, 10)),
    _field("redirectionInformation", 30, Octets(2, 2)),
    _field("cause", 17, Octets(2, 32)),
    _field("carrier", 37, Octets(4, 4)),
    _field("cug-Index", 45, Int(0, 32767)),
    _field("cug-Interlock", 46, Octets(4, 4)),
    _field("cug-OutgoingAccess", 47, Null()),
    _field("iMSI", 50, Octets(3, 8)),
    _field("locationInformation", 52, _LOCATION),
    ("ext-basicServiceCode", X(ctx(53, True), C(
        ("ext-BearerService", tag(2, Octets(1, 5))),
        ("ext-Teleservice", tag(3, Octets(1, 5))))), True),
    _field("callReferenceNumber", 54, Octets(1, 8)),
    _field("mscAddress", 55, Octets(1, 9)),
    _field("calledPartyBCDNumber", 56, Octets(1, 41)),
    _field("timeAndTimezone", 57, Octets(8, 8)),
    _field("callForwardingSS-Pending", 58, Null()),
)  # fmt: skip

_BCSM_EVENT: Final = Seq(
    _mandatory("eventTypeBCSM", 0, _EVENT),
    _mandatory("monitorMode", 1, Enum({"interrupted": 0, "notifyAndContinue": 1,
                                       "transparent": 2})),
    ("legID", X(ctx(2, True), _LEG_ID), True),
    _field("automaticRearm", 50, Null()),
)  # fmt: skip
REQUEST_REPORT: Final = Seq(
    _mandatory("bcsmEvents", 0, SeqOf(T(0x30, _BCSM_EVENT), 1, 30)),
)

EVENT_REPORT: Final = Seq(
    _mandatory("eventTypeBCSM", 0, _EVENT),
    ("legID", X(ctx(3, True), C(("receivingSideID", tag(1, _LEG)))), True),
    _field("miscCallInfo", 4, Seq(
        _mandatory("messageType", 0, Enum({"request": 0, "notification": 1})),
        _field("dpAssignment", 1, Enum({"individualLine": 0, "groupBased": 1,
                                        "officeBased": 2})))),
)  # fmt: skip

APPLY_CHARGING: Final = Seq(
    _mandatory("aChBillingChargingCharacteristics", 0, Octets(5, 177)),
    ("partyToCharge", X(ctx(2, True), C(("sendingSideID", tag(0, _LEG)))), True),
)

#: The argument of each operation, as the TLV the Invoke carries (None: no argument).
ARGUMENTS: Final[dict[int, tuple[str, _Tlv] | None]] = {
    Op.INITIAL_DP: ("InitialDPArg", T(0x30, INITIAL_DP)),
    Op.REQUEST_REPORT_BCSM_EVENT: ("RequestReportBCSMEventArg", T(0x30, REQUEST_REPORT)),
    Op.EVENT_REPORT_BCSM: ("EventReportBCSMArg", T(0x30, EVENT_REPORT)),
    Op.APPLY_CHARGING: ("ApplyChargingArg", T(0x30, APPLY_CHARGING)),
    Op.APPLY_CHARGING_REPORT: ("ApplyChargingReportArg", T(0x04, Octets(12, 193))),
    Op.RELEASE_CALL: ("ReleaseCallArg", C(("allCallSegments", T(0x04, Octets(2, 32))))),
    Op.CONTINUE: None,
}

# -- camel_charging.asn -------------------------------------------------------------------------

_TDC_COMMON: Final = (_mandatory("maxCallPeriodDuration", 0, Int(1, 864000)),)
ACH_V2: Final = C(("timeDurationCharging", tag(0, Seq(
    *_TDC_COMMON,
    _field("releaseIfdurationExceeded", 1, Seq(("tone", T(0x01, Bool()), True))),
    _field("tariffSwitchInterval", 2, Int(1, 86400)),
))))  # fmt: skip
ACH_V3: Final = C(("timeDurationCharging", tag(0, Seq(
    *_TDC_COMMON,
    _field("releaseIfdurationExceeded", 1, Bool()),
    _field("tariffSwitchInterval", 2, Int(1, 86400)),
))))  # fmt: skip
ACH_V4: Final = C(("timeDurationCharging", tag(0, Seq(
    *_TDC_COMMON,
    _field("releaseIfdurationExceeded", 1, Bool()),
    _field("tariffSwitchInterval", 2, Int(1, 86400)),
    ("audibleIndicator", X(ctx(3, True), C(("tone", T(0x01, Bool())))), True),
))))  # fmt: skip
CALL_RESULT: Final = C(("timeDurationChargingResult", tag(0, Seq(
    ("partyToCharge", X(ctx(0, True), C(("receivingSideID", tag(1, _LEG)))), False),
    ("timeInformation", X(ctx(1, True), C(
        ("timeIfNoTariffSwitch", tag(0, Int(0, 864000))),
        ("timeIfTariffSwitch", tag(1, Seq(
            _mandatory("timeSinceTariffSwitch", 0, Int(0, 864000)),
            _field("tariffSwitchInterval", 1, Int(1, 864000))))))), False),
    _field("legActive", 2, Bool()),
    _field("callLegReleasedAtTcpExpiry", 3, Null()),
))))  # fmt: skip


def decode_value(codec: _Tlv, data: bytes) -> Any:
    """The value of one whole TLV of ``codec`` (Fallback when it is not exactly that)."""
    t, s, e = _read(data, 0, len(data))
    if e != len(data) or t not in codec.tags:
        raise _FALLBACK
    return codec.dec_tlv(t, data, s, e)


def encode_value(codec: _Tlv, value: Any) -> bytes:
    return codec.enc_tlv(value)


# -- TCAP (Q.773) -------------------------------------------------------------------------------

_INVOKE_ID: Final = Int(-128, 127)
_T_INT: Final = 0x02
_T_LINKED: Final = 0x80
_T_INVOKE: Final = 0xA1
_T_OTID: Final = 0x48
_T_DTID: Final = 0x49
_T_DIALOGUE: Final = 0x6B
_T_COMPONENTS: Final = 0x6C
_TID: Final = Octets(1, 4)
_MESSAGES: Final = {0x62: "begin", 0x65: "continue", 0x64: "end"}
_MESSAGE_TAGS: Final = {v: k for k, v in _MESSAGES.items()}
#: Which transaction ids each message carries, in order.
_TIDS: Final = {"begin": ("otid",), "continue": ("otid", "dtid"), "end": ("dtid",)}


def _oid(arcs: tuple[int, ...]) -> bytes:
    """The content of an OBJECT IDENTIFIER (X.690 §8.19): 40 * first + second, then each
    arc in base 128, high bit set on all its octets but the last."""
    out = bytearray()
    for arc in (40 * arcs[0] + arcs[1], *arcs[2:]):
        chunk = [arc & 0x7F]
        rest = arc >> 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        out += bytes(reversed(chunk))
    return bytes(out)


#: AARQ / AARE fields (Q.773 §4.2.3, the dialogue-as): protocol-version [0] BIT STRING
#: '1'B (one bit, version1), and the AARE's result [2] accepted and result-source-diagnostic
#: [3] dialogue-service-user [1] null.
_PROTOCOL_VERSION1: Final = bytes.fromhex("80020780")
_ACCEPTED: Final = bytes.fromhex("a203020100a305a103020100")


def dialogue_portion(ac: tuple[int, ...], response: bool) -> bytes:
    """The dialogue portion (tag 0x6B) of the AARQ (``response`` False) or accepting AARE of
    application context ``ac``: an EXTERNAL with the dialogue-as id and a single-ASN1-type
    DialoguePDU, as pycrate encodes it (tests/test_camel_fastber.py)."""
    fields = _PROTOCOL_VERSION1 + _head(0xA1, _head(0x06, _oid(ac)))
    pdu = _head(0x61, fields + _ACCEPTED) if response else _head(0x60, fields)
    external = _head(0x06, _oid(DIALOGUE_AS_ID)) + _head(0xA0, pdu)
    return _head(0x6B, _head(0x28, external))


@functools.cache
def _dialogues() -> tuple[dict[bytes, Any], list[tuple[Any, bytes]]]:
    """The dialogue portions of the supported phases (AARQ and accepting AARE of CAP v2, v3,
    v4): bytes -> pycrate's value, and (value, bytes) pairs. Written here rather than by
    pycrate, so that the messages of the flow never load pycrate's grammar (a second or
    more to import, and ~110,000 objects for the garbage collector to walk)."""
    from protocols.sigtran import tcap

    by_bytes: dict[bytes, Any] = {}
    pairs: list[tuple[Any, bytes]] = []
    for phase, ac in AC_OF_PHASE.items():
        for d, response in ((tcap.request(phase), False), (tcap.accepted(phase), True)):
            value, portion = tcap.dialogue_value(d), dialogue_portion(ac, response)
            by_bytes[portion] = value
            pairs.append((value, portion))
    return by_bytes, pairs


_OPCODE: Final = Int(0, 127)
#: The argument of an Invoke without one (:func:`invoke`, :func:`decode_parts`).
NO_ARGUMENT: Final = object()

#: An Invoke read: (invoke id, linked id or None, opcode, argument or NO_ARGUMENT).
InvokeParts = tuple[int, int | None, int, Any]


def _invoke(data: bytes, s: int, e: int) -> InvokeParts:
    t, cs, ce = _read(data, s, e)
    if t != _T_INT:
        raise _FALLBACK
    iid = _INVOKE_ID.dec(data, cs, ce)
    linked = None
    t, cs, ce = _read(data, ce, e)
    if t == _T_LINKED:
        linked = _INVOKE_ID.dec(data, cs, ce)
        t, cs, ce = _read(data, ce, e)
    if t != _T_INT:
        raise _FALLBACK
    op = _OPCODE.dec(data, cs, ce)
    if op not in ARGUMENTS:
        raise _FALLBACK
    if ce == e:
        return iid, linked, op, NO_ARGUMENT
    arg = ARGUMENTS[op]
    if arg is None:
        raise _FALLBACK
    codec = arg[1]
    t, cs, ae = _read(data, ce, e)
    if ae != e or t not in codec.tags:
        raise _FALLBACK
    return iid, linked, op, codec.dec_tlv(t, data, cs, ae)


def decode_parts(
    data: bytes,
) -> tuple[str, bytes | None, bytes | None, Any, list[InvokeParts] | None]:
    """A TC-BEGIN/CONTINUE/END of invokes of the prepaid flow, in parts: (message type,
    otid, dtid, the dialogue portion as pycrate's value or None, the invokes or None when
    there is no component portion), for :mod:`tcap`'s direct path; :func:`decode` makes
    pycrate's value of them."""
    t, s, e = _read(data, 0, len(data))
    kind = _MESSAGES.get(t)
    if kind is None or e != len(data):
        raise _FALLBACK
    otid = dtid = dialogue = invokes = None
    pos = s
    if kind != "end":
        t, cs, pos = _read(data, pos, e)
        if t != _T_OTID:
            raise _FALLBACK
        otid = _TID.dec(data, cs, pos)
    if kind != "begin":
        t, cs, pos = _read(data, pos, e)
        if t != _T_DTID:
            raise _FALLBACK
        dtid = _TID.dec(data, cs, pos)
    if pos < e:
        t, cs, ce = _read(data, pos, e)
        if t == _T_DIALOGUE:
            dialogue = _dialogues()[0].get(data[pos:ce])
            if dialogue is None:
                raise _FALLBACK
            pos = ce
            if pos < e:
                t, cs, ce = _read(data, pos, e)
        if pos < e:
            if t != _T_COMPONENTS or ce != e or cs == ce:
                raise _FALLBACK
            invokes = []
            while cs < ce:
                ct, ics, ice = _read(data, cs, ce)
                if ct != _T_INVOKE:
                    raise _FALLBACK
                invokes.append(_invoke(data, ics, ice))
                cs = ice
    return kind, otid, dtid, dialogue, invokes


def decode(data: bytes) -> tuple[str, dict[str, Any]]:
    """pycrate's value of a TC-BEGIN/CONTINUE/END of invokes of the prepaid flow."""
    kind, otid, dtid, dialogue, invokes = decode_parts(data)
    body: dict[str, Any] = {}
    if otid is not None:
        body["otid"] = otid
    if dtid is not None:
        body["dtid"] = dtid
    if dialogue is not None:
        body["dialoguePortion"] = dialogue
    if invokes is not None:
        comps = []
        for iid, linked, op, arg in invokes:
            inv: dict[str, Any] = {"invokeId": ("present", iid)}
            if linked is not None:
                inv["linkedId"] = ("present", linked)
            inv["opcode"] = ("local", op)
            if arg is not NO_ARGUMENT:
                inv["argument"] = (ARGUMENTS[op][0], arg)  # type: ignore[index]
            comps.append(("basicROS", ("invoke", inv)))
        body["components"] = comps
    return kind, body


def _encode_invoke(body: Any) -> bytes:
    if type(body) is not dict:
        raise _FALLBACK
    iid, op = body.get("invokeId"), body.get("opcode")
    if (not isinstance(iid, tuple) or iid[0] != "present" or not isinstance(op, tuple)
            or op[0] != "local" or op[1] not in ARGUMENTS
            or not {"invokeId", "opcode", "linkedId", "argument"}.issuperset(body)):  # fmt: skip
        raise _FALLBACK
    linked = body.get("linkedId")
    if linked is not None and (not isinstance(linked, tuple) or linked[0] != "present"):
        raise _FALLBACK
    if "argument" not in body:
        return invoke(iid[1], op[1], NO_ARGUMENT, None if linked is None else linked[1])
    spec, arg = ARGUMENTS[op[1]], body["argument"]
    if spec is None or not isinstance(arg, tuple) or arg[0] != spec[0]:
        raise _FALLBACK
    return invoke(iid[1], op[1], arg[1], None if linked is None else linked[1])


def invoke(invoke_id: int, opcode: int, argument: Any, linked_id: int | None = None) -> bytes:
    """The BER of an Invoke component of the flow: ``argument`` the operation's argument as
    pycrate's value (its encoding made once when it is frozen), or ``NO_ARGUMENT``."""
    if opcode not in ARGUMENTS:
        raise _FALLBACK
    out = _head(_T_INT, _INVOKE_ID.enc(invoke_id))
    if linked_id is not None:
        out += _head(_T_LINKED, _INVOKE_ID.enc(linked_id))
    out += _head(_T_INT, _OPCODE.enc(opcode))
    if argument is not NO_ARGUMENT:
        spec = ARGUMENTS[opcode]
        if spec is None:
            raise _FALLBACK
        m = _memo(argument)
        if m is None:
            out += spec[1].enc_tlv(argument)
        else:
            if m[1] is None:
                m[1] = spec[1].enc_tlv(argument)
            out += m[1]
    return _head(_T_INVOKE, out)


def _dialogue_bytes(dlg: Any) -> bytes:
    """The BER of one of the six dialogue portions, given as pycrate's value."""
    m = _memo(dlg)
    if m is not None and m[1] is not None:
        return m[1]  # type: ignore[no-any-return]
    for v, portion in _dialogues()[1]:
        if v == dlg:
            if m is not None:
                m[1] = portion
            return portion
    raise _FALLBACK


def message(kind: str, otid: bytes | None, dtid: bytes | None, dialogue: Any,
            components: list[bytes]) -> bytes:  # fmt: skip
    """A TC-BEGIN/CONTINUE/END from its parts: the transaction ids it carries, a dialogue
    portion's pycrate value (or None) and the components' BER (:func:`invoke`), for
    :mod:`tcap`'s direct path; what :func:`encode` makes of the same message's value."""
    tids = _TIDS.get(kind)
    if tids is None:
        raise _FALLBACK
    parts = []
    if kind != "end":
        parts.append(_head(_T_OTID, _TID.enc(otid)))
    elif otid is not None:
        raise _FALLBACK
    if kind != "begin":
        parts.append(_head(_T_DTID, _TID.enc(dtid)))
    elif dtid is not None:
        raise _FALLBACK
    if dialogue is not None:
        parts.append(_dialogue_bytes(dialogue))
    if components:
        parts.append(_head(_T_COMPONENTS, b"".join(components)))
    return _head(_MESSAGE_TAGS[kind], b"".join(parts))


def encode(value: tuple[str, dict[str, Any]]) -> bytes:
    """The BER of a pycrate value of a TC-BEGIN/CONTINUE/END of invokes of the flow."""
    kind, body = value
    tids = _TIDS.get(kind)
    if tids is None or not set(tids).union(("dialoguePortion", "components")).issuperset(body):
        raise _FALLBACK
    comps = body.get("components")
    items = []
    if comps is not None:
        if type(comps) is not list or not comps:
            raise _FALLBACK
        for c in comps:
            if not (isinstance(c, tuple) and c[0] == "basicROS" and isinstance(c[1], tuple)
                    and c[1][0] == "invoke"):  # fmt: skip
                raise _FALLBACK
            items.append(_encode_invoke(c[1][1]))
    return message(kind, body.get("otid"), body.get("dtid"), body.get("dialoguePortion"), items)
