"""What every format shares: the decoded fields of one record and their mapping to ``Usage``.

A format's decoder only finds the fields (raw octets as TS 32.298 encodes them, or the ASCII
format's text); the rules that turn them into a ``Usage`` live here, once, so that the BER
decoders (the fast one and pycrate) and the ASCII one cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from ocs.mediation.usage import Direction, RecordError, Usage
from tariffs.digits import is_digits

#: TBCD nibbles (TS 29.002 TBCD-STRING, TS 24.008 BCD number digits): 0-9, '*', '#', a, b, c.
_TBCD = "0123456789*#abc"

#: Type of number (TS 24.008 10.5.4.7, TS 29.002 AddressString "nature of address").
TON_UNKNOWN = 0
TON_INTERNATIONAL = 1
TON_NATIONAL = 2
TON_NETWORK = 3
TON_SUBSCRIBER = 4
TON_ALPHANUMERIC = 5  # TS 23.040 TP-DA only

#: What a record type's service is, as the decoder sees it (Usage.service).
SERVICES = {
    Direction.MOC: "voice",
    Direction.MTC: "voice",
    Direction.SMS_MO: "sms",
    Direction.SMS_MT: "sms",
}


class Address(NamedTuple):
    """A number with its type of number (``ton``); ``digits`` as the record gives them."""

    ton: int
    digits: str

    def as_party(self) -> str:
        """The other party as ``Usage.other_party`` carries it: ``+`` and the digits when the
        type of number is international (``+33123456789``); ``0`` and the digits when it is
        national (the record holds the national significant number without the trunk prefix;
        ``0`` is the prefix the shipped plans read); otherwise the digits as given."""
        if not self.digits:
            return ""
        if self.ton == TON_INTERNATIONAL:
            return "+" + self.digits
        if self.ton == TON_NATIONAL:
            return "0" + self.digits
        return self.digits


@dataclass(slots=True)
class Fields:
    """One record's fields, decoded from the file's encoding but before the ``Usage`` rules
    (docs/cdr-formats.md) apply. ``None``: the record does not carry the field."""

    direction: Direction
    msisdn: Address | None = None
    imsi: str | None = None
    other: Address | None = None
    #: seizureTime for calls; originationTime (MO) / deliveryTime (MT) for SMS. Unix ms.
    seizure: int | None = None
    answer: int | None = None
    release: int | None = None
    duration: int | None = None
    mcc_mnc: str | None = None
    lac: int | None = None
    ci: int | None = None
    msc: Address | None = None
    #: recordingEntity (digits): the switch that wrote the record.
    recording: str | None = None
    #: callReference (calls) or messageReference (MO SMS), as hex text.
    reference: str | None = None
    #: sequenceNumber of a partial record (TS 32.298: 1, 2... for the parts of a long call).
    partial: int | None = None


#: bytes.translate table swapping the two nibbles of an octet: TBCD -> BCD order for .hex().
_SWAP = bytes(((b & 0x0F) << 4) | (b >> 4) for b in range(256))


def tbcd(octets: bytes, what: str) -> str:
    """TBCD digits (low nibble first, 0xF filler at the end only) -> text."""
    text = octets.translate(_SWAP).hex()
    if text.endswith("f"):
        text = text[:-1]
    if text.isdigit():
        return text
    out = []
    for ch in text:
        n = int(ch, 16)
        if n == 0x0F:
            raise RecordError(f"{what}: filler in the middle of the digits")
        out.append(_TBCD[n])
    return "".join(out)


def digits_only(text: str, what: str) -> str:
    if not is_digits(text):
        raise RecordError(f"{what}: not a string of digits: {text!r}")
    return text


def address(octets: bytes, what: str) -> Address:
    """AddressString (TS 29.002) or BCDDirectoryNumber (TS 24.008 called party BCD number):
    one octet of extension bit, type of number and numbering plan, then TBCD digits."""
    if not octets:
        raise RecordError(f"{what}: empty")
    ton = (octets[0] >> 4) & 0x07
    return Address(ton, tbcd(octets[1:], what))


def tp_address(octets: bytes, what: str) -> Address:
    """A TS 23.040 9.1.2.5 address (TP-DA): number of digits, type of address, TBCD digits."""
    if len(octets) < 2:
        raise RecordError(f"{what}: shorter than 2 octets")
    count, toa = octets[0], octets[1]
    ton = (toa >> 4) & 0x07
    if ton == TON_ALPHANUMERIC:
        return Address(ton, "")  # an alphanumeric sender/recipient: no number to rate
    if len(octets) - 2 != (count + 1) // 2:
        raise RecordError(f"{what}: {count} digits do not fit {len(octets) - 2} octets")
    digits = tbcd(octets[2:], what)
    if len(digits) < count:
        raise RecordError(f"{what}: {count} digits announced, {len(digits)} found")
    return Address(ton, digits[:count])


#: BCD octet -> its value 0-99, or 255 when a nibble is not a decimal digit.
_BCD = bytes(
    (b >> 4) * 10 + (b & 0x0F) if b >> 4 < 10 and b & 0x0F < 10 else 255 for b in range(256)
)
#: (date octets, sign and offset octets) -> Unix minutes of that local midnight.
_MIDNIGHTS: dict[bytes, int] = {}


def timestamp_ms(octets: bytes, what: str) -> int:
    """TS 32.298 TimeStamp -> Unix milliseconds (UTC).

    9 octets: YYMMDDhhmmss in BCD (one octet per pair of digits, high nibble first), the
    ASCII sign '+' or '-' of the offset from UTC, and its hours and minutes in BCD. The time is
    local time at that offset; years 00-99 are 2000-2099.
    """
    if len(octets) != 9:
        raise RecordError(f"{what}: {len(octets)} octets, a TimeStamp has 9")
    key = octets[:3] + octets[6:]
    midnight = _MIDNIGHTS.get(key)
    if midnight is None:
        yy, mo, dd, oh, om = (_BCD[b] for b in key[:3] + key[4:])
        sign = key[3]
        if 255 in (yy, mo, dd, oh, om) or sign not in (0x2B, 0x2D):
            raise RecordError(f"{what}: not YYMMDDhhmmss, '+' or '-', hhmm in BCD: {octets.hex()}")
        if oh > 23 or om > 59:
            raise RecordError(f"{what}: bad UTC offset: {octets.hex()}")
        offset = oh * 60 + om
        midnight = local_ms(2000 + yy, mo, dd, 0, 0, 0, offset if sign == 0x2B else -offset, what)
        if len(_MIDNIGHTS) >= 4096:
            _MIDNIGHTS.clear()
        _MIDNIGHTS[key] = midnight
    hh, mi, ss = _BCD[octets[3]], _BCD[octets[4]], _BCD[octets[5]]
    if hh > 23 or mi > 59 or ss > 59:
        if 255 in (hh, mi, ss):
            raise RecordError(f"{what}: not YYMMDDhhmmss, '+' or '-', hhmm in BCD: {octets.hex()}")
        raise RecordError(f"{what}: time {hh:02d}:{mi:02d}:{ss:02d}")
    return midnight + ((hh * 60 + mi) * 60 + ss) * 1000


_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def local_ms(
    year: int, month: int, day: int, hour: int, minute: int, second: int, offset: int,
    what: str,
) -> int:  # fmt: skip
    """A local time at ``offset`` minutes from UTC -> Unix milliseconds; ``RecordError`` when
    it is not a valid time (a leap second, 23:59:60, is refused)."""
    if not 1 <= month <= 12:
        raise RecordError(f"{what}: month {month}")
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not 1 <= day <= _MONTH_DAYS[month - 1] + (month == 2 and leap):
        raise RecordError(f"{what}: day {day} of month {month}")
    if hour > 23 or minute > 59 or second > 59:
        raise RecordError(f"{what}: time {hour:02d}:{minute:02d}:{second:02d}")
    # Days from 1970-01-01 (H. Hinnant's days_from_civil): exact integer arithmetic.
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    return ((days * 24 + hour) * 60 + minute - offset) * 60_000 + second * 1000


def location(f: Fields) -> str:
    """``<MCC><MNC>-<LAC>-<CI>`` (LAC and CI in decimal) when the record carries the cell with
    its MCC+MNC (``<MCC><MNC>`` alone when it carries no cell); else the MSC's number
    (digits, as given); else "".

    The text before the first '-' is the visited network id (MCC+MNC) that a plan's places
    list (tariffs/plans/*.toml ``[places]``): ``network_id``.
    """
    if f.mcc_mnc is not None:
        if f.lac is None or f.ci is None:
            return f.mcc_mnc
        return f"{f.mcc_mnc}-{f.lac}-{f.ci}"
    if f.msc is not None and f.msc.digits:
        return digits_only(f.msc.digits, "mSCAddress")
    return ""


def plmn(octets: bytes) -> str:
    """TS 24.008 10.5.1.3 PLMN identity (3 octets) -> MCC+MNC digits ("26201", "310260")."""
    if len(octets) != 3:
        raise RecordError(f"mCC-MNC: {len(octets)} octets, not 3")
    d = [octets[0] & 0x0F, octets[0] >> 4, octets[1] & 0x0F, octets[2] & 0x0F, octets[2] >> 4]
    mnc3 = octets[1] >> 4
    if any(x > 9 for x in d) or (mnc3 > 9 and mnc3 != 0x0F):
        raise RecordError(f"mCC-MNC: not BCD: {octets.hex()}")
    text = "".join(map(str, d))
    return text if mnc3 == 0x0F else text + str(mnc3)


def network_id(location_text: str) -> str:
    """The visited network id (MCC+MNC) of a ``Usage.location`` (the text before the first
    '-'), or the whole text when it is an MSC number or empty."""
    return location_text.partition("-")[0]


def integer(octets: bytes, what: str) -> int:
    """A BER INTEGER's content octets (two's complement, big-endian)."""
    if not octets or len(octets) > 8:
        raise RecordError(f"{what}: an INTEGER of {len(octets)} octets")
    return int.from_bytes(octets, "big", signed=True)


def from_octets(
    direction: Direction,
    raw: Mapping[str, bytes],
    duration: int | None,
    partial: int | None = None,
) -> Fields:
    """Decode the TS 32.298 encodings of the fields a BER decoder found, keyed by the names
    of ``Fields`` (``recording`` is the recordingEntity; the location's are ``lac``, ``ci``,
    ``mcc_mnc``); ``duration`` (callDuration) and ``partial`` (sequenceNumber) are the
    INTEGERs already decoded."""
    g = raw.get
    v = g("imsi")
    imsi = digits_only(tbcd(v, "servedIMSI"), "servedIMSI") if v is not None else None
    v = g("msisdn")
    served = address(v, "servedMSISDN") if v is not None else None
    v = g("other")
    other: Address | None = None
    if v is not None:
        name = _OTHER_NAMES[direction]
        other = tp_address(v, name) if direction is Direction.SMS_MO else address(v, name)
    v = g("lac")
    if v is not None and len(v) != 2:
        raise RecordError(f"locationAreaCode: {len(v)} octets, not 2")
    lac = int.from_bytes(v, "big") if v is not None else None
    v = g("ci")
    if v is not None and len(v) != 2:
        raise RecordError(f"cellId: {len(v)} octets, not 2")
    ci = int.from_bytes(v, "big") if v is not None else None
    v = g("mcc_mnc")
    mcc_mnc = plmn(v) if v is not None else None
    v = g("recording")
    recording = address(v, "recordingEntity") if v is not None else None
    v = g("msc")
    msc = address(v, "mSCAddress") if v is not None else recording
    v = g("reference")
    reference = v.hex() if v else None
    times = []
    for key in ("seizure", "answer", "release"):
        v = g(key)
        name = _TIME_NAMES[direction] if key == "seizure" else key + "Time"
        times.append(timestamp_ms(v, name) if v is not None else None)
    return Fields(
        direction=direction, msisdn=served, imsi=imsi, other=other, seizure=times[0],
        answer=times[1], release=times[2], duration=duration, mcc_mnc=mcc_mnc, lac=lac,
        ci=ci, msc=msc, recording=recording.digits if recording else None, reference=reference,
        partial=partial,
    )  # fmt: skip


def to_usage(f: Fields, *, switch: str, file: str, sequence: int) -> Usage:
    """Apply the mapping rules of docs/cdr-formats.md; ``RecordError`` says why not."""
    if f.msisdn is None:
        raise RecordError("no servedMSISDN: the record cannot be charged to an account")
    if f.msisdn.ton not in (TON_INTERNATIONAL, TON_UNKNOWN):
        raise RecordError(
            f"servedMSISDN is not an international number (type of number {f.msisdn.ton})"
        )
    served = digits_only(f.msisdn.digits, "servedMSISDN")
    other = f.other.as_party() if f.other is not None else ""
    seizure, answer, release = f.seizure, f.answer, f.release
    if f.direction in (Direction.MOC, Direction.MTC):
        if f.direction is Direction.MOC and not other:
            raise RecordError("no calledNumber: the call cannot be rated")
        if f.duration is None:
            raise RecordError("no callDuration")
        if f.duration < 0:
            raise RecordError(f"negative callDuration {f.duration}")
        # TS 32.298 callDuration: the chargeable time from answer to release for a successful
        # call, the holding time for an unsuccessful attempt. Answered <=> answerTime present.
        duration = f.duration if answer is not None else 0
        if seizure is not None:
            start = seizure
        elif answer is not None:
            start = answer
        elif release is not None:
            start = release - f.duration * 1000
        else:
            raise RecordError("no seizureTime, answerTime or releaseTime")
    else:
        if seizure is None:
            raise RecordError(f"no {_TIME_NAMES[f.direction]}")
        start, answer, release, duration = seizure, None, None, 0
    return Usage(
        record_id=record_identity(f, served, start) or f"{switch}:{file}:{sequence}",
        switch=switch,
        file=file,
        sequence=sequence,
        direction=f.direction,
        served_msisdn=served,
        served_imsi=f.imsi or "",
        other_party=other,
        start=start,
        answer=answer,
        release=release,
        duration=duration,
        location=location(f),
        service=SERVICES[f.direction],
    )


def record_identity(f: Fields, served: str, start: int) -> str | None:
    """What identifies the record whatever file carries it (TS 32.298: the recording entity,
    the call reference and, for the parts of a long call, the partial record's sequence
    number), so that a file delivered again under another name, or records repeated in
    another file, charge nothing twice. The record type and served party are part of it (an
    MSC writes both the MOC and the MTC of a call between its subscribers with one call
    reference); an SMS's message reference wraps at 256, so its time is too. None when the
    record has no recording entity or reference: then it is identified by its place in its
    file (``<switch>:<file>:<sequence>``)."""
    node = f.recording or (f.msc.digits if f.msc is not None else None)
    if not node or not f.reference:
        return None
    if f.direction in (Direction.MOC, Direction.MTC):
        tail = f.partial if f.partial is not None else 0
    else:
        tail = start
    return f"{node}:{f.direction.record_type}:{served}:{f.reference}:{tail}"


_OTHER_NAMES = {
    Direction.MOC: "calledNumber",
    Direction.MTC: "callingNumber",
    Direction.SMS_MO: "destinationNumber",
    Direction.SMS_MT: "originator",
}
_TIME_NAMES = {
    Direction.MOC: "seizureTime",
    Direction.MTC: "seizureTime",
    Direction.SMS_MO: "originationTime",
    Direction.SMS_MT: "deliveryTime",
}


# -- encoding (the simulator's side) ----------------------------------------------------------


def recorded_party(text: str) -> Address:
    """How a switch records a number dialled as ``text``: ``+`` or ``00`` (the international
    prefix) and digits as an international number, ``0`` and digits as a national number
    (without the trunk prefix), anything else as a number of unknown type."""
    t = text.replace(" ", "")
    if t.startswith("+"):
        return Address(TON_INTERNATIONAL, t[1:])
    if t.startswith("00"):
        return Address(TON_INTERNATIONAL, t[2:])
    if t.startswith("0"):
        return Address(TON_NATIONAL, t[1:])
    return Address(TON_UNKNOWN, t)


def encode_tbcd(digits: str) -> bytes:
    """Text of digits (and * # a b c) -> TBCD octets, 0xF filler when odd."""
    nib = [_TBCD.index(c) for c in digits]
    if len(nib) % 2:
        nib.append(0x0F)
    return bytes(nib[i] | (nib[i + 1] << 4) for i in range(0, len(nib), 2))


def encode_address(ton: int, digits: str, npi: int = 1) -> bytes:
    """AddressString / BCDDirectoryNumber: extension bit set, TON, NPI (1 = E.164), TBCD."""
    return bytes([0x80 | (ton << 4) | npi]) + encode_tbcd(digits)


def encode_tp_address(ton: int, digits: str, npi: int = 1) -> bytes:
    """TS 23.040 TP-DA: number of digits, type of address, TBCD digits."""
    return bytes([len(digits), 0x80 | (ton << 4) | npi]) + encode_tbcd(digits)


def encode_timestamp(t: datetime) -> bytes:
    """A time-zone aware datetime -> TS 32.298 TimeStamp (local time, sign, offset)."""
    offset = t.utcoffset()
    if offset is None:
        raise ValueError("the time must be time-zone aware")
    minutes = int(offset.total_seconds()) // 60
    sign = b"-" if minutes < 0 else b"+"
    oh, om = divmod(abs(minutes), 60)

    def bcd(*vals: int) -> bytes:
        return bytes((v // 10) << 4 | (v % 10) for v in vals)

    return bcd(t.year % 100, t.month, t.day, t.hour, t.minute, t.second) + sign + bcd(oh, om)


def encode_plmn(mcc_mnc: str) -> bytes:
    """ "26201" / "310260" -> the 3-octet TS 24.008 PLMN identity."""
    if not is_digits(mcc_mnc) or len(mcc_mnc) not in (5, 6):
        raise ValueError(f"MCC+MNC must be 5 or 6 digits, not {mcc_mnc!r}")
    d = [int(c) for c in mcc_mnc]
    mnc3 = d[5] if len(d) == 6 else 0x0F
    return bytes([d[1] << 4 | d[0], mnc3 << 4 | d[2], d[4] << 4 | d[3]])
