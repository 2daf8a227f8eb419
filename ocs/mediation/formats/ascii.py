"""The ASCII CDR format (version 1): one record per line, 13 fields separated by '|'.

    #OCS-CDR-ASCII 1
    #type|served_msisdn|served_imsi|other_party|seizure|answer|release|duration|mcc_mnc|lac|ci|msc|call_reference
    MOC|491700000001|262010000000001|+33123456789|20260315140312+0100|20260315140315+0100|20260315140415+0100|60|26201|4660|12345|4917200001|0001e240

The first line names the format and its version. Other lines starting with '#' are comments,
blank lines are skipped, a line ends with LF or CR LF. docs/cdr-formats.md describes every
field; the mapping to ``Usage`` is the BER format's (``_fields.to_usage``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import datetime

from ocs.mediation.formats import _fields as fl
from ocs.mediation.formats.record import CdrRecord
from ocs.mediation.formats.rejected import Rejected
from ocs.mediation.usage import Direction, RecordError, Usage

MAGIC = b"#OCS-CDR-ASCII "
VERSION = 1
FIELDS = (
    "type", "served_msisdn", "served_imsi", "other_party", "seizure", "answer", "release",
    "duration", "mcc_mnc", "lac", "ci", "msc", "call_reference",
)  # fmt: skip
TYPES = {
    "MOC": Direction.MOC,
    "MTC": Direction.MTC,
    "SMSMO": Direction.SMS_MO,
    "SMSMT": Direction.SMS_MT,
}
_CODES = {d: c for c, d in TYPES.items()}
_TIME = re.compile(
    r"([0-9]{4})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([+-])([0-9]{2})([0-9]{2})"
)
_DIGITS = re.compile(r"[0-9]+")
_PARTY = re.compile(r"\+?[0-9]+")
_HEX = re.compile(r"[0-9A-Fa-f]+")


def header(version: int = VERSION) -> str:
    return f"{MAGIC.decode()}{version}\n#{'|'.join(FIELDS)}\n"


def is_ascii(data: bytes) -> bool:
    return data.startswith(MAGIC)


def _time(text: str, what: str) -> int | None:
    if not text:
        return None
    m = _TIME.fullmatch(text)
    if m is None:
        raise RecordError(f"{what}: {text!r} is not YYYYMMDDhhmmss+hhmm")
    y, mo, d, h, mi, s, sign, oh, om = m.groups()
    if int(oh) > 23 or int(om) > 59:
        raise RecordError(f"{what}: bad UTC offset in {text!r}")
    offset = int(oh) * 60 + int(om)
    if sign == "-":
        offset = -offset
    return fl.local_ms(int(y), int(mo), int(d), int(h), int(mi), int(s), offset, what)


def _int(text: str, what: str, limit: int) -> int | None:
    if not text:
        return None
    if not _DIGITS.fullmatch(text) or len(text) > 10 or int(text) > limit:
        raise RecordError(f"{what}: {text!r} is not a whole number from 0 to {limit}")
    return int(text)


def _digits(text: str, what: str) -> str | None:
    if not text:
        return None
    if not _DIGITS.fullmatch(text) or len(text) > 20:
        raise RecordError(f"{what}: {text!r} is not 1 to 20 digits")
    return text


def parse_line(line: str) -> fl.Fields:
    """One record line -> its fields; ``RecordError`` says which field is wrong."""
    parts = line.split("|")
    if len(parts) != len(FIELDS):
        raise RecordError(f"{len(parts)} fields, version {VERSION} lines have {len(FIELDS)}")
    (kind, msisdn, imsi, other, seizure, answer, release, duration, mcc_mnc, lac, ci, msc,
     ref) = parts  # fmt: skip
    direction = TYPES.get(kind)
    if direction is None:
        raise RecordError(f"type: {kind!r} is not one of {', '.join(TYPES)}")
    served = _digits(msisdn, "served_msisdn")
    if other and not _PARTY.fullmatch(other):
        raise RecordError(f"other_party: {other!r} is not a number ('+' and digits, or digits)")
    if mcc_mnc and (not _DIGITS.fullmatch(mcc_mnc) or len(mcc_mnc) not in (5, 6)):
        raise RecordError(f"mcc_mnc: {mcc_mnc!r} is not 5 or 6 digits")
    if ref and (not _HEX.fullmatch(ref) or len(ref) > 16):
        raise RecordError(f"call_reference: {ref!r} is not 1 to 16 hexadecimal digits")
    msc_digits = _digits(msc, "msc")
    party = None
    if other:
        party = (
            fl.Address(fl.TON_INTERNATIONAL, other[1:])
            if other.startswith("+")
            else fl.Address(fl.TON_UNKNOWN, other)
        )
    return fl.Fields(
        direction=direction,
        msisdn=fl.Address(fl.TON_INTERNATIONAL, served) if served else None,
        imsi=_digits(imsi, "served_imsi"),
        other=party,
        seizure=_time(seizure, "seizure"),
        answer=_time(answer, "answer"),
        release=_time(release, "release"),
        duration=_int(duration, "duration", 10**9),
        mcc_mnc=mcc_mnc or None,
        lac=_int(lac, "lac", 0xFFFF),
        ci=_int(ci, "ci", 0xFFFF),
        msc=fl.Address(fl.TON_INTERNATIONAL, msc_digits) if msc_digits else None,
        recording=msc_digits,
        reference=ref.lower() if ref else None,
    )


def decode_ascii(data: bytes, *, switch: str, file: str) -> Iterator[Usage | Rejected]:
    """Every record line of an ASCII file, in order; ``sequence`` is the line number."""
    if not data:
        return
    first, _, _ = data.partition(b"\n")
    if not first.startswith(MAGIC):
        yield Rejected(1, 0, f"not an ASCII CDR file: the first line must be '{MAGIC.decode()}"
                       f"{VERSION}'", data)  # fmt: skip
        return
    version = first[len(MAGIC) :].strip()
    if version != str(VERSION).encode():
        yield Rejected(1, 0, f"ASCII CDR format version {version[:20]!r} is not {VERSION}", data)
        return
    pos, number = 0, 0
    n = len(data)
    while pos < n:
        eol = data.find(b"\n", pos)
        end = n if eol < 0 else eol
        raw = data[pos:end]
        number += 1
        start, pos = pos, end + 1
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if not line.strip() or line.startswith(b"#"):
            continue
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            yield Rejected(number, start, "line is not ASCII", raw)
            continue
        try:
            f = parse_line(text)
            yield fl.to_usage(f, switch=switch, file=file, sequence=number)
        except RecordError as exc:
            yield Rejected(number, start, f"line {number}: {exc}", raw)


# -- encoding (the switch simulator's side) -----------------------------------------------------


def _t(t: datetime | None) -> str:
    if t is None:
        return ""
    offset = t.utcoffset()
    if offset is None:
        raise ValueError("times must be time-zone aware")
    minutes = int(offset.total_seconds()) // 60
    oh, om = divmod(abs(minutes), 60)
    return f"{t:%Y%m%d%H%M%S}{'-' if minutes < 0 else '+'}{oh:02d}{om:02d}"


def encode_line(r: CdrRecord) -> str:
    """One record as a line (with its LF)."""
    calls = r.direction in (Direction.MOC, Direction.MTC)
    other = fl.recorded_party(r.other).as_party() if r.other else ""
    fields = (
        _CODES[r.direction], r.served_msisdn, r.served_imsi, other, _t(r.seizure),
        _t(r.answer) if calls else "", _t(r.release) if calls else "",
        str(r.duration) if calls else "", r.mcc_mnc, str(r.lac), str(r.ci), r.msc,
        f"{r.call_reference:08x}",
    )  # fmt: skip
    return "|".join(fields) + "\n"


def encode_file(records: Iterable[CdrRecord]) -> bytes:
    return (header() + "".join(encode_line(r) for r in records)).encode("ascii")
