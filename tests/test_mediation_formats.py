"""CDR decoders on bytes: TS 32.298 BER records (plain and in the TS 32.297 framing) and the
ASCII format.

The records are built with pycrate's TS 32.298 types directly, from octets written out in this
file (TBCD, BCD time stamps, PLMN ids, by small helpers here), and the TS 32.297 headers with
``struct``: nothing of the decoders' own encoding code is used to make the input, so a
symmetric bug in encoder and decoder cannot hide. Both BER decoders (``fast`` and the
``pycrate`` reference) must give the same answer.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrate_asn1dir import CDR
from pycrate_asn1rt.codecs import ASN1CodecBER

from ocs.mediation.formats import Rejected, decode, detect_format, network_id
from ocs.mediation.usage import Direction, Usage

CS = CDR.CSChargingDataTypes.CSRecord
DECODERS = ("fast", "pycrate")


# -- an independent encoder: octets spelled out by hand --------------------------------------


def tbcd(digits: str) -> bytes:
    """Digits -> TBCD: the first digit in the low nibble, 0xF fills an odd count."""
    if len(digits) % 2:
        digits += "F"
    return bytes(int(digits[i + 1] + digits[i], 16) for i in range(0, len(digits), 2))


def number(toa: int, digits: str) -> bytes:
    """Type-of-number/numbering-plan octet, then TBCD (0x91 international E.164, 0xA1
    national, 0x81 unknown)."""
    return bytes([toa]) + tbcd(digits)


def stamp(text: str) -> bytes:
    """'260315140312+0100' -> the 9-octet TS 32.298 TimeStamp."""
    assert len(text) == 17
    return bytes.fromhex(text[:12]) + text[12].encode() + bytes.fromhex(text[13:])


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


CELL = {"locationAreaCode": b"\x12\x34", "cellId": b"\x30\x39", "mCC-MNC": b"\x62\xf2\x10"}
CELL_TEXT = "26201-4660-12345"  # 0x1234, 0x3039; 262 01


def moc(**over: Any) -> dict[str, Any]:
    v = {
        "recordType": 0,
        "servedIMSI": tbcd("262019876543210"),
        "servedIMEI": tbcd("3569380356438091"),
        "servedMSISDN": number(0x91, "491700000001"),
        "callingNumber": number(0x91, "491700000001"),
        "calledNumber": number(0x91, "33123456789"),
        "recordingEntity": number(0x91, "491720000001"),
        "location": dict(CELL),
        "basicService": ("teleservice", b"\x11"),
        "seizureTime": stamp("260315140312+0100"),
        "answerTime": stamp("260315140318+0100"),
        "releaseTime": stamp("260315140513+0100"),
        "callDuration": 115,
        "causeForTerm": 0,
        "callReference": b"\x00\x01\xe2\x40",
        "mSCAddress": number(0x91, "491720000001"),
    }
    v.update(over)
    return v


#: The identity of moc(): recordingEntity, record type, servedMSISDN, callReference, partial.
MOC_ID = "491720000001:moCallRecord:491700000001:0001e240:0"


@pytest.mark.parametrize("decoder", DECODERS)
def test_a_record_is_identified_by_what_the_switch_wrote_not_by_its_file(decoder: str) -> None:
    # TS 32.298: recordingEntity + callReference (+ sequenceNumber for a partial record).
    [a] = usages(run(ber("moCallRecord", moc()), decoder, file="MSC01_-_0007.ber"))
    [b] = usages(run(ber("moCallRecord", moc()), decoder, file="MSC01_-_0008.ber"))
    assert a.record_id == b.record_id == MOC_ID
    [p2] = usages(run(ber("moCallRecord", moc(sequenceNumber=2)), decoder))
    assert p2.record_id == MOC_ID[:-1] + "2"
    [other] = usages(run(ber("moCallRecord", moc(callReference=b"\x00\x01\xe2\x41")), decoder))
    assert other.record_id != MOC_ID


def ber(choice: str, value: dict[str, Any]) -> bytes:
    CS.set_val((choice, value))
    out: bytes = CS.to_ber()
    return out


def framed(
    records: list[bytes], *, count: int | None = None, formats: list[int] | None = None
) -> bytes:
    """A TS 32.297 file: header with Rel-13 extension octets, CDR headers of 5 octets (data
    format 1 = BER unless ``formats`` says otherwise, TS number 6 = TS 32.250)."""
    fmts = formats or [1] * len(records)
    cdrs = b"".join(
        struct.pack(">HBBB", len(r), 7 << 5, f << 5 | 6, 3) + r
        for r, f in zip(records, fmts, strict=True)
    )
    ts = struct.pack(">I", 3 << 28 | 15 << 23 | 14 << 18 | 3 << 12 | 1 << 11 | 1 << 6)
    rest = (
        bytes([7 << 5, 7 << 5]) + ts + ts
        + struct.pack(">IIB", len(records) if count is None else count, 42, 2)
        + b"\xff" * 16 + bytes([192, 0, 2, 1]) + b"\x00" + b"\x00\x00" + b"\x00\x00"
        + bytes([3, 3])
    )  # fmt: skip
    hlen = 8 + len(rest)
    return struct.pack(">II", hlen + len(cdrs), hlen) + rest + cdrs


def run(data: bytes, decoder: str = "fast", file: str = "f.ber") -> list[Usage | Rejected]:
    return list(decode(data, switch="MSC01", file=file, decoder=decoder))  # type: ignore[arg-type]


def usages(items: list[Usage | Rejected]) -> list[Usage]:
    assert all(isinstance(i, Usage) for i in items), items
    return [i for i in items if isinstance(i, Usage)]


# -- field mapping ------------------------------------------------------------------------------


@pytest.mark.parametrize("decoder", DECODERS)
def test_a_mo_call_record_maps_field_by_field(decoder: str) -> None:
    [u] = usages(run(ber("moCallRecord", moc()), decoder))
    assert u == Usage(
        record_id=MOC_ID, switch="MSC01", file="f.ber", sequence=1,
        direction=Direction.MOC, served_msisdn="491700000001", served_imsi="262019876543210",
        other_party="+33123456789", start=ms("2026-03-15T14:03:12+01:00"),
        answer=ms("2026-03-15T14:03:18+01:00"), release=ms("2026-03-15T14:05:13+01:00"),
        duration=115, location=CELL_TEXT, service="voice",
    )  # fmt: skip
    assert network_id(u.location) == "26201"


@pytest.mark.parametrize("decoder", DECODERS)
def test_an_mt_call_record_roaming_with_a_three_digit_mnc_and_a_negative_offset(
    decoder: str,
) -> None:
    v = {
        "recordType": 1,
        "servedIMSI": tbcd("262019876543210"),
        "servedMSISDN": number(0x91, "491700000002"),
        "callingNumber": number(0xA1, "301234567"),  # national: 030 1234567
        "recordingEntity": number(0x91, "13105550000"),
        "location": {"locationAreaCode": b"\x00\x07", "cellId": b"\xff\xff",
                     "mCC-MNC": b"\x13\x00\x62"},  # 310 260
        "seizureTime": stamp("261231235950-0500"),
        "answerTime": stamp("261231235955-0500"),
        "releaseTime": stamp("270101000105-0500"),
        "callDuration": 70,
        "causeForTerm": 0,
        "callReference": b"\x07",
    }  # fmt: skip
    [u] = usages(run(ber("mtCallRecord", v), decoder))
    assert u.direction is Direction.MTC and u.service == "voice"
    assert u.other_party == "0301234567"
    assert u.location == "310260-7-65535" and network_id(u.location) == "310260"
    assert u.start == ms("2027-01-01T04:59:50+00:00")
    assert u.release == ms("2027-01-01T05:01:05+00:00")
    assert u.duration == 70


@pytest.mark.parametrize("decoder", DECODERS)
def test_sms_records(decoder: str) -> None:
    mo = {
        "recordType": 6,
        "servedIMSI": tbcd("262019876543210"),
        "servedMSISDN": number(0x91, "491700000003"),
        "msClassmark": b"\x33\x59\x81",
        "serviceCentre": number(0x91, "491720000009"),
        "recordingEntity": number(0x91, "491720000001"),
        "location": dict(CELL),
        "messageReference": b"\x05",
        "originationTime": stamp("260315140312+0100"),
        # TS 23.040 TP-DA: 11 digits, international, then TBCD
        "destinationNumber": bytes([11, 0x91]) + tbcd("12125550100"),
    }
    mt = {
        "recordType": 7,
        "serviceCentre": number(0x91, "491720000009"),
        "servedIMSI": tbcd("262019876543211"),
        "servedMSISDN": number(0x91, "491700000004"),
        "msClassmark": b"\x33\x59\x81",
        "recordingEntity": number(0x91, "491720000001"),
        "deliveryTime": stamp("260315140400+0100"),
    }
    a, b = usages(run(ber("moSMSRecord", mo) + ber("mtSMSRecord", mt), decoder))
    assert (a.direction, a.service, a.other_party, a.duration) == (
        Direction.SMS_MO, "sms", "+12125550100", 0,
    )  # fmt: skip
    assert a.start == ms("2026-03-15T14:03:12+01:00") and a.answer is a.release is None
    assert (b.direction, b.sequence, b.served_msisdn, b.other_party) == (
        Direction.SMS_MT, 2, "491700000004", "",
    )  # fmt: skip
    # No cell: the location is the recording MSC's number.
    assert b.location == "491720000001" and b.start == ms("2026-03-15T14:04:00+01:00")


@pytest.mark.parametrize("decoder", DECODERS)
def test_an_unanswered_call_has_no_chargeable_duration(decoder: str) -> None:
    v = moc(causeForTerm=3, callDuration=25)
    del v["answerTime"]
    [u] = usages(run(ber("moCallRecord", v), decoder))
    assert u.answer is None and u.duration == 0
    assert u.start == ms("2026-03-15T14:03:12+01:00")


@pytest.mark.parametrize("decoder", DECODERS)
def test_the_location_falls_back_to_the_msc_address_then_the_recording_entity(
    decoder: str,
) -> None:
    no_cell = moc()
    del no_cell["location"]
    no_mcc = moc(location={"locationAreaCode": b"\x00\x01", "cellId": b"\x00\x02"})
    no_msc = moc()
    del no_msc["location"], no_msc["mSCAddress"]
    no_msc["recordingEntity"] = number(0x91, "491720000077")
    got = usages(run(b"".join(ber("moCallRecord", v) for v in (no_cell, no_mcc, no_msc)),
                     decoder))  # fmt: skip
    assert [u.location for u in got] == ["491720000001", "491720000001", "491720000077"]


@pytest.mark.parametrize("decoder", DECODERS)
def test_numbers_of_unknown_type_are_given_as_dialled(decoder: str) -> None:
    called = number(0x81, "0800123AB")  # TBCD A = '*', B = '#'
    [u] = usages(run(ber("moCallRecord", moc(calledNumber=called)), decoder))
    assert u.other_party == "0800123*#"


# -- tolerance: later releases, other encodings, other record types ---------------------------


def _with_extra_fields(record: bytes) -> bytes:
    """The record with fields of a later release appended to its SET: [90] primitive and
    [91] constructed (high tag number form), re-wrapped with a long-form length."""
    assert record[1] & 0x80  # long-form length: 0x81 n
    k = record[1] & 0x7F
    body = record[2 + k :] + bytes.fromhex("9f5a02abcd") + bytes.fromhex("bf5b0480020102")
    return bytes([record[0], 0x82]) + len(body).to_bytes(2, "big") + body


@pytest.mark.parametrize("decoder", DECODERS)
def test_fields_of_a_later_release_are_ignored(decoder: str) -> None:
    plain = ber("moCallRecord", moc())
    assert len(plain) > 127
    [u] = usages(run(_with_extra_fields(plain), decoder))
    [expected] = usages(run(plain, decoder))
    assert u == expected


@contextmanager
def ber_options(**opts: Any) -> Iterator[None]:
    old = {k: getattr(ASN1CodecBER, k) for k in opts}
    for k, v in opts.items():
        setattr(ASN1CodecBER, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(ASN1CodecBER, k, v)


@pytest.mark.parametrize("decoder", DECODERS)
def test_indefinite_lengths_and_constructed_strings_decode_the_same(decoder: str) -> None:
    definite = ber("moCallRecord", moc())
    with ber_options(ENC_LUNDEF=True):
        indefinite = ber("moCallRecord", moc())
    with ber_options(ENC_OSTR_FRAG=3):
        fragmented = ber("moCallRecord", moc())
    assert definite not in (indefinite, fragmented)
    got = usages(run(indefinite + fragmented + definite, decoder))
    assert [u.sequence for u in got] == [1, 2, 3]
    assert {(u.served_msisdn, u.other_party, u.start, u.duration, u.location) for u in got} == {
        ("491700000001", "+33123456789", ms("2026-03-15T14:03:12+01:00"), 115, CELL_TEXT)
    }


@pytest.mark.parametrize("decoder", DECODERS)
def test_cs_records_that_are_not_charged_are_skipped(decoder: str) -> None:
    location_update = bytes.fromhex("ad03800102")  # [13] locUpdateVLRRecord
    data = location_update + ber("moCallRecord", moc()) + location_update
    [u] = usages(run(data, decoder))
    assert u.sequence == 2


# -- the TS 32.297 file framing -------------------------------------------------------------------


@pytest.mark.parametrize("decoder", DECODERS)
def test_a_framed_file_decodes_like_the_plain_records(decoder: str) -> None:
    records = [ber("moCallRecord", moc(callDuration=d)) for d in (1, 2, 3)]
    f, p = run(framed(records), decoder), run(b"".join(records), decoder)
    assert [u.duration for u in usages(f)] == [1, 2, 3]
    assert usages(f) == usages(p)


def test_a_framed_file_without_records_yields_nothing() -> None:
    assert run(framed([])) == []


def test_a_truncated_framed_file_yields_what_it_holds_and_one_rejection() -> None:
    records = [ber("moCallRecord", moc(callDuration=d)) for d in (1, 2, 3)]
    data = framed(records)
    cut = data[: len(data) - 10]
    items = run(cut)
    assert [type(i).__name__ for i in items] == ["Usage", "Usage", "Rejected"]
    r = items[2]
    assert isinstance(r, Rejected) and r.sequence == 3 and "truncated" in r.reason
    assert cut[r.offset : r.offset + len(r.raw)] == r.raw and r.raw


def test_a_file_cut_between_records_says_it_is_shorter_than_its_header() -> None:
    records = [ber("moCallRecord", moc()) for _ in range(2)]
    data = framed(records)
    cut = data[: len(data) - len(records[1]) - 5]
    *ok, r = run(cut)
    assert len(usages(ok)) == 1
    assert isinstance(r, Rejected) and "truncated file" in r.reason


def test_a_bad_file_header_rejects_the_file_once() -> None:
    data = framed([ber("moCallRecord", moc())])
    bad = data[:4] + struct.pack(">I", 20) + data[8:]  # header length below the minimum
    [r] = run(bad)
    assert isinstance(r, Rejected) and "file header" in r.reason and r.raw == bad
    [r] = run(b"\x00\x00\x00")
    assert isinstance(r, Rejected)


def test_records_in_another_encoding_are_rejected_and_the_rest_decodes() -> None:
    records = [ber("moCallRecord", moc(callDuration=d)) for d in (1, 2)]
    items = run(framed(records, formats=[3, 1]))
    assert isinstance(items[0], Rejected) and "aligned PER" in items[0].reason
    assert isinstance(items[1], Usage) and items[1].sequence == 2 and items[1].duration == 2


def test_fewer_records_than_the_header_announces_are_reported() -> None:
    items = run(framed([ber("moCallRecord", moc())], count=3))
    assert isinstance(items[0], Usage)
    assert isinstance(items[1], Rejected) and "announces 3 CDRs" in items[1].reason


# -- bad records among good ones ------------------------------------------------------------------


@pytest.mark.parametrize("decoder", DECODERS)
def test_a_bad_record_is_rejected_with_its_reason_and_decoding_goes_on(decoder: str) -> None:
    bad_time = ber("moCallRecord", moc(seizureTime=b"\x26\x13\x15\x14\x03\x12+\x01\x00"))
    no_msisdn = moc()
    del no_msisdn["servedMSISDN"]
    national_msisdn = moc(servedMSISDN=number(0xA1, "1700000001"))
    good = ber("moCallRecord", moc())
    records = [good, bad_time, ber("moCallRecord", no_msisdn), good,
               ber("moCallRecord", national_msisdn), good]  # fmt: skip
    for data in (b"".join(records), framed(records)):
        items = run(data, decoder)
        assert [i.sequence for i in items] == [1, 2, 3, 4, 5, 6]
        kinds = [type(i).__name__ for i in items]
        assert kinds == ["Usage", "Rejected", "Rejected", "Usage", "Rejected", "Usage"]
        reasons = [i.reason for i in items if isinstance(i, Rejected)]
        assert "month 13" in reasons[0]
        assert "no servedMSISDN" in reasons[1]
        assert "not an international number" in reasons[2]
        for r in items:
            if isinstance(r, Rejected):
                assert data[r.offset : r.offset + len(r.raw)] == r.raw == records[r.sequence - 1]


def test_broken_ber_inside_a_record_is_rejected_and_the_next_record_decodes() -> None:
    good = ber("moCallRecord", moc())
    # A SET whose first component claims more octets than the SET holds.
    broken = bytes.fromhex("a0058010ffffff")
    [r, u] = run(broken + good)
    assert isinstance(r, Rejected) and r.reason.startswith("BER")
    assert isinstance(u, Usage) and u.sequence == 2


def test_a_plain_file_whose_framing_breaks_rejects_the_rest() -> None:
    good = ber("moCallRecord", moc())
    items = run(good + good[:40])
    assert isinstance(items[0], Usage)
    assert isinstance(items[1], Rejected) and "remaining 40 octets" in items[1].reason


def test_padding_after_the_last_record_is_not_a_record() -> None:
    good = ber("moCallRecord", moc())
    assert len(usages(run(good + b"\x00" * 100))) == 1
    assert len(usages(run(good + b"\xff" * 100))) == 1


def test_an_unknown_record_tag_is_rejected() -> None:
    [r] = run(bytes.fromhex("bf3f03800101"))  # [63]
    assert isinstance(r, Rejected) and "unknown CS record type [63]" in r.reason


# -- never raises; the fast decoder agrees with pycrate -----------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_bytes_never_raise(data: bytes) -> None:
    for decoder in DECODERS:
        for item in run(data, decoder):
            assert isinstance(item, Usage | Rejected)
            if isinstance(item, Rejected):
                assert not item.reason.startswith("decoder error"), item.reason


SAMPLE = framed([ber("moCallRecord", moc()), ber("moCallRecord", moc(callDuration=7))])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(SAMPLE) - 1), st.integers(0, 255)), max_size=4),
       st.integers(0, len(SAMPLE)))  # fmt: skip
def test_corrupted_files_never_raise_and_both_decoders_agree_on_what_pycrate_accepts(
    flips: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(SAMPLE)
    for pos, val in flips:
        data[pos] = val
    corrupt = bytes(data[:cut])
    fast, ref = run(corrupt, "fast"), run(corrupt, "pycrate")
    for f in fast:
        assert not (isinstance(f, Rejected) and f.reason.startswith("decoder error")), f
    by_seq = {f.sequence: f for f in fast}
    for r in ref:
        if isinstance(r, Usage):
            assert by_seq.get(r.sequence) == r


digits = st.text("0123456789", min_size=1, max_size=15)
when = st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31, 23, 59, 59)).map(
    lambda d: d.replace(microsecond=0)
)
offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59)


def stamp_of(t: datetime, offset: int) -> bytes:
    sign = "+" if offset >= 0 else "-"
    h, m = divmod(abs(offset), 60)
    return stamp(f"{t:%y%m%d%H%M%S}{sign}{h:02d}{m:02d}")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msisdn=digits, called=digits, toa=st.sampled_from([0x81, 0x91, 0xA1]), t=when,
       offset=offsets, duration=st.integers(0, 2**31 - 1), answered=st.booleans(),
       lac=st.integers(0, 0xFFFF), mcc=st.text("0123456789", min_size=3, max_size=3),
       mnc=st.text("0123456789", min_size=2, max_size=3))  # fmt: skip
def test_generated_records_decode_to_what_was_encoded(
    msisdn: str, called: str, toa: int, t: datetime, offset: int, duration: int,
    answered: bool, lac: int, mcc: str, mnc: str,
) -> None:  # fmt: skip
    plmn = bytes([int(mcc[1] + mcc[0], 16), int((mnc[2] if len(mnc) == 3 else "F") + mcc[2], 16),
                  int(mnc[1] + mnc[0], 16)])  # fmt: skip
    v = moc(servedMSISDN=number(0x91, msisdn), calledNumber=number(toa, called),
            seizureTime=stamp_of(t, offset), answerTime=stamp_of(t, offset),
            callDuration=duration,
            location={"locationAreaCode": lac.to_bytes(2, "big"), "cellId": b"\x00\x01",
                      "mCC-MNC": plmn})  # fmt: skip
    del v["releaseTime"]
    if not answered:
        del v["answerTime"]
    data = ber("moCallRecord", v)
    fast, ref = run(data, "fast"), run(data, "pycrate")
    assert fast == ref
    [u] = usages(fast)
    local = int(t.replace(tzinfo=UTC).timestamp() * 1000) - offset * 60_000
    assert u.start == local and u.answer == (local if answered else None)
    assert u.duration == (duration if answered else 0)
    assert u.served_msisdn == msisdn
    assert u.other_party == {0x81: called, 0x91: "+" + called, 0xA1: "0" + called}[toa]
    assert u.location == f"{mcc}{mnc}-{lac}-1"


# -- the ASCII format ---------------------------------------------------------------------------

ASCII = (
    b"#OCS-CDR-ASCII 1\n"
    b"#type|served_msisdn|served_imsi|other_party|seizure|answer|release|duration|mcc_mnc|lac"
    b"|ci|msc|call_reference\n"
    b"MOC|491700000001|262019876543210|+33123456789|20260315140312+0100|20260315140318+0100|"
    b"20260315140513+0100|115|26201|4660|12345|491720000001|0001e240\n"
    b"MTC|491700000002||0301234567|20260315140312+0100|||25||||491720000001|\r\n"
    b"\n"
    b"# a comment\n"
    b"SMSMO|491700000003||+12125550100|20260315140312+0100|||||||491720000001|\n"
    b"SMSMT|491700000004||+4917012345|20260315140400+0100|||||||491720000001|"
)


def test_the_ascii_format_maps_like_ber() -> None:
    a, b, c, d = usages(run(ASCII, file="f.txt"))
    [expected] = usages(run(ber("moCallRecord", moc())))
    assert (a.sequence, a.record_id) == (3, MOC_ID)  # the same call as the BER record
    assert (b.sequence, b.record_id) == (4, "MSC01:f.txt:4")  # (no call reference)
    assert (a.direction, a.served_msisdn, a.served_imsi, a.other_party, a.start, a.answer,
            a.release, a.duration, a.location, a.service) == (
        expected.direction, expected.served_msisdn, expected.served_imsi,
        expected.other_party, expected.start, expected.answer, expected.release,
        expected.duration, expected.location, expected.service)  # fmt: skip
    assert (b.direction, b.sequence, b.other_party, b.duration, b.location) == (
        Direction.MTC, 4, "0301234567", 0, "491720000001",
    )  # fmt: skip
    assert b.served_imsi == "" and b.answer is None
    assert (c.direction, c.sequence, c.other_party) == (Direction.SMS_MO, 7, "+12125550100")
    assert (d.direction, d.sequence, d.other_party) == (Direction.SMS_MT, 8, "+4917012345")


def test_bad_ascii_lines_are_rejected_with_their_line_number() -> None:
    lines = [
        b"#OCS-CDR-ASCII 1",
        b"MOC|491700000001||+33123456789|20260315140312+0100|20260315140318+0100||60||||4917|",
        b"XYZ|491700000001||+33123456789|20260315140312+0100|||0||||4917|",
        b"MOC|491700000001||+33123456789|20260315146012+0100|||0||||4917|",
        b"MOC|49170000000a||+33123456789|20260315140312+0100|||0||||4917|",
        b"MOC|491700000001||+33123456789|20260315140312+0100|||0||||4917",
        b"MOC|491700000001||+33 123|20260315140312+0100|||0||||4917|",
        b"MOC|491700000001|||20260315140312+0100|||0||||4917|",
        "MOC|491700000001||+3312345678\u00e9|20260315140312+0100|||0||||4917|".encode(),
        b"MTC|491700000001||+33123456789|20260315140312+0100|||-5||||4917|",
        b"MOC|491700000001||+33123456789|20260315140312+0100|20260315140318+0100||60|26201|"
        b"70000|1|4917|",
    ]
    data = b"\n".join(lines) + b"\n"
    items = run(data, file="x.txt")
    assert isinstance(items[0], Usage) and items[0].sequence == 2
    rejected = [i for i in items if isinstance(i, Rejected)]
    assert [r.sequence for r in rejected] == list(range(3, 12))
    reasons = [r.reason for r in rejected]
    for r, fragment in zip(reasons, ["type", "seizure", "served_msisdn", "12 fields",
                                     "other_party", "calledNumber", "not ASCII", "duration",
                                     "lac"], strict=True):  # fmt: skip
        assert fragment in r and r.startswith("line "), r
    for r in rejected:
        assert data[r.offset : r.offset + len(r.raw)] == r.raw


def test_an_ascii_file_of_another_version_or_without_header_is_rejected_once() -> None:
    [r] = run(b"#OCS-CDR-ASCII 2\nMOC|...\n", file="x.txt")
    assert isinstance(r, Rejected) and "version" in r.reason
    [r] = run(b"MOC|491700000001\n", file="x.txt")
    assert isinstance(r, Rejected) and "first line" in r.reason
    assert run(b"", file="x.txt") == []


def test_the_format_comes_from_the_content_then_the_name() -> None:
    assert detect_format(ASCII, "f.ber") == "ascii"
    assert detect_format(b"MOC|", "f.asc") == "ascii"
    assert detect_format(b"\xa0\x03", "f.txt") == "ascii"
    assert detect_format(b"\xa0\x03", "f.ber") == "ber"
    assert detect_format(b"", "f") == "ber"


def test_the_ascii_example_of_the_docs_decodes() -> None:
    text = (Path(__file__).parent.parent / "docs" / "cdr-formats.md").read_text()
    block = re.search(r"```\n(#OCS-CDR-ASCII 1\n.*?)```", text, re.S)
    assert block is not None
    got = usages(run(block.group(1).encode(), file="doc.txt"))
    assert [u.direction for u in got] == [Direction.MOC, Direction.MTC, Direction.SMS_MO]
    [expected] = usages(run(ber("moCallRecord", moc())))
    assert got[0].location == expected.location and got[0].start == expected.start


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_ascii_never_raises(tail: bytes) -> None:
    for item in run(b"#OCS-CDR-ASCII 1\n" + tail, file="x.txt"):
        assert isinstance(item, Usage | Rejected)
