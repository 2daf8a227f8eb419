"""ASN.1 BER CS records (TS 32.298 ``CSRecord``, the CS alternatives of ``CallEventRecord``),
in the TS 32.297 file framing or as a plain concatenation of records.

Two decoders find a record's fields; the same rules (``_fields``) turn them into a ``Usage``:

- ``pycrate`` (the reference): pycrate's compiled TS 32.298 module decodes the whole record
  and checks it against the ASN.1 (mandatory fields, sizes). Fields it does not know (a later
  release's) are dropped from the TLV tree before it decodes, so they are tolerated.
- ``fast`` (the default): reads the record's TLVs and keeps only the fields charging needs,
  4 to 5 times faster (bench/cdr_decode.py). It skips what it does not need, known or not.
  Where a record uses a BER form it does not read (a constructed OCTET STRING), it hands the
  record to pycrate. tests/test_mediation_formats.py checks that both agree on every record
  pycrate accepts.

CHOICE alternatives charged: moCallRecord [0], mtCallRecord [1], moSMSRecord [6],
mtSMSRecord [7]. The other CS records (roaming, gateway, transit, supplementary service,
location update, ...) are valid but not charged: they are skipped. Any other tag is rejected.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from ocs.mediation.formats import _fields as fl
from ocs.mediation.formats import ts32297
from ocs.mediation.formats.record import CdrRecord
from ocs.mediation.formats.rejected import Rejected
from ocs.mediation.usage import Direction, RecordError, Usage

Decoder = Literal["fast", "pycrate"]

# Tag octets (class and constructed bits): context-specific primitive / constructed.
_CTX = 0x80
_CTX_CONS = 0xA0
_MAX_DEPTH = 24


class _Malformed(Exception):
    """The BER is broken; ``str()`` says where."""


class _Unsupported(Exception):
    """Valid BER in a form the fast decoder does not read: pycrate decides."""


@dataclass(frozen=True, slots=True)
class _Spec:
    direction: Direction
    choice: str  # the CSRecord alternative's name in TS 32.298
    fields: dict[int, str]  # context tag -> Fields name (primitive fields)
    location: int  # context tag of the LocationAreaAndCell


# TS 32.298 CSChargingDataTypes: the tags of the fields charging reads.
_SPECS: dict[int, _Spec] = {
    0: _Spec(
        Direction.MOC,
        "moCallRecord",
        {1: "imsi", 3: "msisdn", 5: "other", 9: "recording", 22: "seizure", 23: "answer",
         24: "release", 25: "duration", 32: "reference", 33: "partial", 39: "msc"},
        12,
    ),
    1: _Spec(
        Direction.MTC,
        "mtCallRecord",
        {1: "imsi", 3: "msisdn", 4: "other", 6: "recording", 19: "seizure", 20: "answer",
         21: "release", 22: "duration", 29: "reference", 30: "partial", 34: "msc"},
        9,
    ),
    6: _Spec(
        Direction.SMS_MO,
        "moSMSRecord",
        {1: "imsi", 3: "msisdn", 6: "recording", 8: "reference", 9: "seizure", 12: "other"},
        7,
    ),
    7: _Spec(
        Direction.SMS_MT,
        "mtSMSRecord",
        {2: "imsi", 4: "msisdn", 6: "recording", 8: "seizure"},
        7,
    ),
}  # fmt: skip
#: The other CSRecord alternatives (TS 32.298): valid records this system does not charge.
_NOT_CHARGED = {
    2: "roamingRecord", 3: "incGatewayRecord", 4: "outGatewayRecord", 5: "transitRecord",
    8: "moSMSIWRecord", 9: "mtSMSGWRecord", 10: "ssActionRecord", 11: "hlrIntRecord",
    12: "locUpdateHLRRecord", 13: "locUpdateVLRRecord", 14: "commonEquipRecord",
    15: "recTypeExtensions", 16: "termCAMELRecord", 17: "mtLCSRecord", 18: "moLCSRecord",
    19: "niLCSRecord", 20: "mSCsRVCCRecord", 21: "mMTRFRecord", 22: "iCSRegisterRecord",
}  # fmt: skip
_LOCATION = {0: "lac", 1: "ci", 2: "mcc_mnc"}


# -- TLV reading --------------------------------------------------------------------------------


def _tlv(buf: bytes, pos: int, end: int, depth: int = 0) -> tuple[int, int, int, int, int]:
    """The TLV at ``pos``: (class and constructed bits, tag number, value start, value end,
    next position). For an indefinite length the value ends at its end-of-contents octets."""
    if pos >= end:
        raise _Malformed(f"no tag at octet {pos}")
    first = buf[pos]
    pos += 1
    num = first & 0x1F
    if num == 0x1F:  # high tag number form: base-128, most significant group first
        num = 0
        for _ in range(4):
            if pos >= end:
                raise _Malformed(f"tag runs past the end at octet {pos}")
            c = buf[pos]
            pos += 1
            num = num << 7 | (c & 0x7F)
            if not c & 0x80:
                break
        else:
            raise _Malformed(f"tag number longer than 4 octets at octet {pos}")
    if pos >= end:
        raise _Malformed(f"no length at octet {pos}")
    n = buf[pos]
    pos += 1
    if n < 0x80:
        vend = pos + n
    elif n == 0x80:
        if not first & 0x20:
            raise _Malformed(f"indefinite length on a primitive value at octet {pos - 1}")
        if depth >= _MAX_DEPTH:
            raise _Malformed("constructed values nested too deep")
        p = pos
        while True:
            if p + 2 > end:
                raise _Malformed("no end-of-contents for an indefinite length")
            if buf[p] == 0 and buf[p + 1] == 0:
                return first & 0xE0, num, pos, p, p + 2
            p = _tlv(buf, p, end, depth + 1)[4]
    else:
        k = n & 0x7F
        if k > 4 or n == 0xFF:
            raise _Malformed(f"length of {k} octets at octet {pos - 1}")
        if pos + k > end:
            raise _Malformed(f"length runs past the end at octet {pos}")
        length = int.from_bytes(buf[pos : pos + k], "big")
        pos += k
        vend = pos + length
    if vend > end:
        raise _Malformed(f"value of {vend - pos} octets at octet {pos} runs past the end ({end})")
    return first & 0xE0, num, pos, vend, vend


def record_end(buf: bytes, pos: int, end: int) -> int:
    """Where the record (one TLV) that starts at ``pos`` ends; ``_Malformed`` if it cannot."""
    return _tlv(buf, pos, end)[4]


# -- the fast decoder -------------------------------------------------------------------------


_LOC = "\0location"  # the LocationAreaAndCell, read one level down
_CONS = "\0constructed"  # a wanted field in constructed form: pycrate reads it


def _keys(spec: _Spec) -> tuple[dict[int, str], dict[tuple[int, int], str]]:
    """What to do with each field, by its one-octet tag (the inline path) and by (class and
    constructed bits, tag number) (any tag)."""
    by_tag: dict[tuple[int, int], str] = {(_CTX, n): name for n, name in spec.fields.items()}
    by_tag.update({(_CTX_CONS, n): _CONS for n in spec.fields})
    by_tag[(_CTX_CONS, spec.location)] = _LOC
    by_octet = {c | n: name for (c, n), name in by_tag.items() if n < 31}
    return by_octet, by_tag


_KEYS = {num: _keys(spec) for num, spec in _SPECS.items()}


def _fast_fields(rec: bytes) -> fl.Fields | None:
    """The fields of one record, or None for a record type that is not charged."""
    cls, num, pos, end, _ = _tlv(rec, 0, len(rec))
    spec = _choice(cls, num)
    if spec is None:
        return None
    by_octet, by_tag = _KEYS[num]
    raw: dict[str, bytes] = {}
    while pos < end:
        # Most fields have a one-octet tag and a short length: read those inline.
        first = rec[pos]
        if first & 0x1F != 0x1F and pos + 1 < end and rec[pos + 1] < 0x80:
            s = pos + 2
            e = pos = s + rec[pos + 1]
            if e > end:
                raise _Malformed(f"value of {e - s} octets at octet {s} runs past the end")
            name = by_octet.get(first)
        else:
            c, n, s, e, pos = _tlv(rec, pos, end, 1)
            name = by_tag.get((c, n))
        if name is None:
            continue
        if name is _LOC:
            # A SEQUENCE: its fields in tag order; a repeated or out-of-order tag is not one
            # of them (pycrate takes it for an extension: it is skipped the same way here).
            p, last = s, -1
            while p < e:
                c2, n2, s2, e2, p = _tlv(rec, p, e, 2)
                field = _LOCATION.get(n2)
                if field is None or n2 <= last:
                    continue
                if c2 != _CTX:
                    raise _Unsupported(f"constructed location field [{n2}]")
                raw[field] = rec[s2:e2]
                last = n2
        elif name is _CONS:
            raise _Unsupported("a field in constructed form")
        else:
            raw[name] = rec[s:e]
    d = raw.pop("duration", None)
    duration = fl.integer(d, "callDuration") if d is not None else None
    d = raw.pop("partial", None)
    partial = fl.integer(d, "sequenceNumber") if d is not None else None
    return fl.from_octets(spec.direction, raw, duration, partial)


def _choice(cls: int, num: int) -> _Spec | None:
    if cls != _CTX_CONS:
        raise RecordError(f"not a CS record: the record's tag is not [n] constructed ({cls:#x})")
    spec = _SPECS.get(num)
    if spec is None and num not in _NOT_CHARGED:
        raise RecordError(f"unknown CS record type [{num}]")
    return spec


# -- the pycrate decoder ----------------------------------------------------------------------


@functools.cache
def _pycrate() -> Any:
    """pycrate's TS 32.298 CSRecord CHOICE (imported once: the import takes ~2 s)."""
    from pycrate_asn1dir import CDR

    return CDR.CSChargingDataTypes.CSRecord


def _pycrate_value(rec: bytes) -> tuple[_Spec, dict[str, Any]] | None:
    """pycrate's decoded value of the record's alternative (fields it does not know dropped)."""
    from pycrate_asn1rt.codecs import ASN1CodecBER
    from pycrate_asn1rt.utils import Charpy

    cs = _pycrate()
    char = Charpy(rec)
    tlv = ASN1CodecBER.decode_single(char)[0]
    _check_bounds([tlv], 0, len(rec) * 8, exact=False)
    cl, pc, tval = tlv[0], tlv[1], tlv[2]
    spec = _choice(_CTX_CONS if (cl, pc) == (2, 1) else 0, tval)
    if spec is None:
        return None
    alt = cs._cont[spec.choice]
    known = alt._cont_tags
    # pycrate rejects a SET component it does not know (its SET extension path fails on
    # them), while TS 32.298 records grow fields from release to release: drop them first.
    tlv[4] = [t for t in tlv[4] if (t[0], t[2]) in known or t[0:4] == [0, 0, 0, 0]]
    alt._from_ber(char, [tlv])
    return spec, alt._val


def _check_bounds(tlvs: list[Any], start: int, end: int, *, exact: bool) -> int:
    """pycrate's generic TLV scan neither checks that a value ends within the one that holds
    it, nor that the components fill a constructed value (it stops when less than 2 octets are
    left): check both, so that such BER is refused as the fast decoder refuses it. ``tlvs`` are
    pycrate TLVs ``[class, pc, tag, length, value, value start]``, positions in bits; returns
    where the last one ends."""
    pos = start
    for t in tlvs:
        _, pc, _, length, value, vstart = t[:6]
        if pc == 1 and length >= 0:
            stop = vstart + 8 * length
            if stop > end:
                raise _Malformed(
                    f"value of {length} octets at octet {vstart // 8} runs past the end"
                )
            _check_bounds(value, vstart, stop, exact=True)
        elif pc == 1:
            stop = _check_bounds(value, vstart, end, exact=False)
        else:
            stop = value[1] if isinstance(value, tuple) else vstart
            if stop > end:
                raise _Malformed(
                    f"value of {length} octets at octet {vstart // 8} runs past the end"
                )
        pos = stop
    if exact and pos != end:
        raise _Malformed(f"{(end - pos) // 8} octets left over in a constructed value")
    return pos


def _pycrate_fields(rec: bytes) -> fl.Fields | None:
    try:
        decoded = _pycrate_value(rec)
    except RecordError:
        raise
    except _Malformed as exc:
        raise RecordError(f"BER: {exc}") from None
    except Exception as exc:  # pycrate raises several types (and IndexError) on bad BER
        raise RecordError(f"BER: {exc}") from None
    if decoded is None:
        return None
    spec, val = decoded
    names = _pycrate_names(spec.choice)
    raw: dict[str, bytes] = {}
    duration = partial = None
    for key, v in val.items():
        name = names.get(key)
        if name is None:
            continue
        if name == "location":
            for k2, n2 in (("locationAreaCode", "lac"), ("cellId", "ci"), ("mCC-MNC", "mcc_mnc")):
                if k2 in v:
                    raw[n2] = v[k2]
        elif name == "duration":
            duration = v
        elif name == "partial":
            partial = v
        else:
            raw[name] = v
    return fl.from_octets(spec.direction, raw, duration, partial)


@functools.cache
def _pycrate_names(choice: str) -> dict[str, str]:
    """pycrate component name -> Fields name, from the tags of ``_SPECS``."""
    spec = next(s for s in _SPECS.values() if s.choice == choice)
    out = {}
    for name, comp in _pycrate()._cont[choice]._cont.items():
        tag = comp._tagc[0][1] if comp._tagc else None
        if tag == spec.location:
            out[name] = "location"
        elif tag in spec.fields:
            out[name] = spec.fields[tag]
    return out


# -- records and files ------------------------------------------------------------------------


def decode_record(
    rec: bytes, *, switch: str, file: str, sequence: int, decoder: Decoder = "fast"
) -> Usage | None:
    """One BER record -> ``Usage``, None for a record type that is not charged;
    ``RecordError`` with the reason otherwise."""
    if decoder == "pycrate":
        f = _pycrate_fields(rec)
    else:
        try:
            f = _fast_fields(rec)
        except _Malformed as exc:
            raise RecordError(f"BER: {exc}") from None
        except _Unsupported:
            f = _pycrate_fields(rec)
    if f is None:
        return None
    return fl.to_usage(f, switch=switch, file=file, sequence=sequence)


def _one(
    data: bytes, start: int, end: int, seq: int, switch: str, file: str, decoder: Decoder
) -> Usage | Rejected | None:
    rec = data[start:end]
    try:
        return decode_record(rec, switch=switch, file=file, sequence=seq, decoder=decoder)
    except RecordError as exc:
        return Rejected(seq, start, str(exc), rec)
    except Exception as exc:  # a decoder bug must not stop the file: report it as the reason
        return Rejected(seq, start, f"decoder error: {type(exc).__name__}: {exc}", rec)


def is_framed(data: bytes) -> bool:
    """True when ``data`` starts like a TS 32.297 file rather than a BER record: a record's
    first octet is a context-specific constructed tag (0xA0-0xBF), a file's is the top octet
    of its length (0x00 for any file under 16 MiB)."""
    return bool(data) and data[0] & 0xE0 != _CTX_CONS


def decode_ber(
    data: bytes, *, switch: str, file: str, decoder: Decoder = "fast"
) -> Iterator[Usage | Rejected]:
    """Every record of a BER file, framed (TS 32.297) or plain, in file order."""
    if is_framed(data):
        yield from _framed(data, switch, file, decoder)
    else:
        yield from _plain(data, 0, len(data), 0, switch, file, decoder)


def _filler(data: bytes, pos: int, end: int) -> bool:
    """True when the rest is padding (all 0x00 or all 0xFF), as block-writing switches add."""
    rest = data[pos:end]
    return not rest.strip(b"\x00") or not rest.strip(b"\xff")


def _plain(
    data: bytes, pos: int, end: int, seq: int, switch: str, file: str, decoder: Decoder
) -> Iterator[Usage | Rejected]:
    while pos < end:
        if data[pos] in (0x00, 0xFF) and _filler(data, pos, end):
            return
        seq += 1
        try:
            nxt = record_end(data, pos, end)
        except _Malformed as exc:
            yield Rejected(
                seq, pos, f"cannot find the end of this record ({exc}): the remaining "
                f"{end - pos} octets are not read", data[pos:end],
            )  # fmt: skip
            return
        out = _one(data, pos, nxt, seq, switch, file, decoder)
        if out is not None:
            yield out
        pos = nxt


def _framed(data: bytes, switch: str, file: str, decoder: Decoder) -> Iterator[Usage | Rejected]:
    try:
        h = ts32297.read_file_header(data)
    except ts32297.FramingError as exc:
        yield Rejected(1, 0, f"TS 32.297 file header: {exc}", data)
        return
    end = min(h.file_length, len(data))
    pos, seq = h.header_length, 0
    while pos < end:
        seq += 1
        ch = ts32297.read_cdr_header(data, pos, end)
        if ch is None:
            yield Rejected(seq, pos, f"truncated CDR header ({end - pos} octets)", data[pos:end])
            return
        start = pos + ch.header_length
        nxt = start + ch.length
        if nxt > end:
            yield Rejected(
                seq, start, f"truncated: the CDR header announces {ch.length} octets, "
                f"{end - start} are left", data[start:end],
            )  # fmt: skip
            return
        if ch.data_format != ts32297.FORMAT_BER:
            fmt = ts32297.FORMAT_NAMES.get(ch.data_format, f"format {ch.data_format}")
            yield Rejected(seq, start, f"record encoded in {fmt}, not BER", data[start:nxt])
        elif ch.length == 0:
            yield Rejected(seq, start, "empty CDR", b"")
        else:
            out = _one(data, start, nxt, seq, switch, file, decoder)
            if out is not None:
                yield out
        pos = nxt
    if h.file_length > len(data):
        yield Rejected(
            seq + 1, len(data), f"truncated file: the header announces {h.file_length} octets, "
            f"the file has {len(data)}", b"",
        )  # fmt: skip
    elif len(data) > h.file_length and not _filler(data, h.file_length, len(data)):
        extra = len(data) - h.file_length
        yield Rejected(
            seq + 1, h.file_length, f"{extra} octets after the file length of the header",
            data[h.file_length :],
        )  # fmt: skip
    elif seq < h.cdr_count:
        yield Rejected(
            seq + 1, end, f"the file header announces {h.cdr_count} CDRs, the file holds {seq}",
            b"",
        )  # fmt: skip


# -- encoding (the switch simulator's side) -----------------------------------------------------


def _party(text: str) -> bytes:
    a = fl.recorded_party(text)
    return fl.encode_address(a.ton, a.digits)


def record_value(r: CdrRecord) -> tuple[str, dict[str, Any]]:
    """The pycrate value of ``r``'s CSRecord alternative, with the fields a real MSC fills."""
    msc = fl.encode_address(fl.TON_INTERNATIONAL, r.msc)
    loc = {
        "locationAreaCode": r.lac.to_bytes(2, "big"),
        "cellId": r.ci.to_bytes(2, "big"),
        "mCC-MNC": fl.encode_plmn(r.mcc_mnc),
    }
    imsi = fl.encode_tbcd(r.served_imsi)
    msisdn = fl.encode_address(fl.TON_INTERNATIONAL, r.served_msisdn)
    ref = r.call_reference.to_bytes(4, "big")
    classmark = b"\x33\x59\x81"  # a TS 24.008 mobile station classmark 2
    if r.direction in (Direction.MOC, Direction.MTC):
        v: dict[str, Any] = {
            "recordType": 0 if r.direction is Direction.MOC else 1,
            "servedIMSI": imsi,
            "servedIMEI": fl.encode_tbcd("3569380356438091"),
            "servedMSISDN": msisdn,
            "recordingEntity": msc,
            "location": loc,
            "basicService": ("teleservice", b"\x11"),  # telephony
            "msClassmark": classmark,
            "seizureTime": fl.encode_timestamp(r.seizure),
            "callDuration": r.duration,
            "causeForTerm": r.cause,
            "callReference": ref,
            "mSCAddress": msc,
        }
        if r.answer is not None:
            v["answerTime"] = fl.encode_timestamp(r.answer)
        if r.release is not None:
            v["releaseTime"] = fl.encode_timestamp(r.release)
        if r.direction is Direction.MOC:
            v["calledNumber"] = _party(r.other)
            v["callingNumber"] = msisdn
            return "moCallRecord", v
        if r.other:
            v["callingNumber"] = _party(r.other)
        return "mtCallRecord", v
    sc = fl.encode_address(fl.TON_INTERNATIONAL, r.msc[:-1] + "9")  # the SMS centre
    if r.direction is Direction.SMS_MO:
        v = {
            "recordType": 6,
            "servedIMSI": imsi,
            "servedMSISDN": msisdn,
            "msClassmark": classmark,
            "serviceCentre": sc,
            "recordingEntity": msc,
            "location": loc,
            "messageReference": bytes([r.call_reference & 0xFF]),
            "originationTime": fl.encode_timestamp(r.seizure),
        }
        if r.other:
            a = fl.recorded_party(r.other)
            v["destinationNumber"] = fl.encode_tp_address(a.ton, a.digits)
        return "moSMSRecord", v
    return "mtSMSRecord", {
        "recordType": 7,
        "serviceCentre": sc,
        "servedIMSI": imsi,
        "servedMSISDN": msisdn,
        "msClassmark": classmark,
        "recordingEntity": msc,
        "location": loc,
        "deliveryTime": fl.encode_timestamp(r.seizure),
    }


# TS 32.298 context tags of the components ``record_value`` fills, per CSRecord alternative.
ENCODE_TAGS: dict[str, dict[str, int]] = {
    "moCallRecord": {
        "recordType": 0, "servedIMSI": 1, "servedIMEI": 2, "servedMSISDN": 3,
        "callingNumber": 4, "calledNumber": 5, "recordingEntity": 9, "location": 12,
        "basicService": 14, "msClassmark": 20, "seizureTime": 22, "answerTime": 23,
        "releaseTime": 24, "callDuration": 25, "causeForTerm": 30, "callReference": 32,
        "mSCAddress": 39,
    },
    "mtCallRecord": {
        "recordType": 0, "servedIMSI": 1, "servedIMEI": 2, "servedMSISDN": 3,
        "callingNumber": 4, "recordingEntity": 6, "location": 9, "basicService": 11,
        "msClassmark": 17, "seizureTime": 19, "answerTime": 20, "releaseTime": 21,
        "callDuration": 22, "causeForTerm": 27, "callReference": 29, "mSCAddress": 34,
    },
    "moSMSRecord": {
        "recordType": 0, "servedIMSI": 1, "servedMSISDN": 3, "msClassmark": 4,
        "serviceCentre": 5, "recordingEntity": 6, "location": 7, "messageReference": 8,
        "originationTime": 9, "destinationNumber": 12,
    },
    "mtSMSRecord": {
        "recordType": 0, "serviceCentre": 1, "servedIMSI": 2, "servedMSISDN": 4,
        "msClassmark": 5, "recordingEntity": 6, "location": 7, "deliveryTime": 8,
    },
}  # fmt: skip
_CHOICE_TAGS = {"moCallRecord": 0, "mtCallRecord": 1, "moSMSRecord": 6, "mtSMSRecord": 7}
_LOCATION_TAGS = {"locationAreaCode": 0, "cellId": 1, "mCC-MNC": 2}
_BASIC_SERVICE_TAGS = {"bearerService": 2, "teleservice": 3}


def _tag(num: int, constructed: bool) -> bytes:
    first = _CTX_CONS if constructed else _CTX
    if num < 31:
        return bytes([first | num])
    groups = [num & 0x7F]
    num >>= 7
    while num:
        groups.append(num & 0x7F | 0x80)
        num >>= 7
    return bytes([first | 0x1F, *reversed(groups)])


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def _put(num: int, value: bytes, constructed: bool = False) -> bytes:
    return _tag(num, constructed) + _length(len(value)) + value


def _int(v: int) -> bytes:
    return v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big", signed=True)


def encode_value(choice: str, value: dict[str, Any]) -> bytes:
    """A ``record_value`` as DER-style BER: definite lengths, components in tag order (what
    pycrate's encoder writes, byte for byte: tests/test_switchsim.py checks it)."""
    tags = ENCODE_TAGS[choice]
    parts = []
    for name, v in sorted(value.items(), key=lambda kv: tags[kv[0]]):
        num = tags[name]
        if isinstance(v, bytes):
            parts.append(_put(num, v))
        elif isinstance(v, int):
            parts.append(_put(num, _int(v)))
        elif isinstance(v, dict):  # LocationAreaAndCell: a SEQUENCE
            inner = b"".join(_put(_LOCATION_TAGS[k], v[k]) for k in _LOCATION_TAGS if k in v)
            parts.append(_put(num, inner, constructed=True))
        else:  # BasicServiceCode: a CHOICE, so the [n] tag is explicit
            alt, code = v
            parts.append(_put(num, _put(_BASIC_SERVICE_TAGS[alt], code), constructed=True))
    return _put(_CHOICE_TAGS[choice], b"".join(parts), constructed=True)


def encode_record(r: CdrRecord) -> bytes:
    """One record as BER."""
    return encode_value(*record_value(r))


def frame_file(
    records: Sequence[bytes],
    *,
    sequence: int,
    opened: datetime,
    last_append: datetime,
    closure_reason: int = ts32297.CLOSE_TIME,
    node_ip: str = "192.0.2.1",
) -> bytes:
    """BER records in the TS 32.297 file framing: the file header, then each record behind
    its CDR header."""
    body = b"".join(ts32297.cdr_header(len(r)) + r for r in records)
    head = ts32297.file_header(
        body_length=len(body), cdr_count=len(records), sequence=sequence, opened=opened,
        last_append=last_append, closure_reason=closure_reason, node_ip=node_ip,
    )  # fmt: skip
    return head + body
