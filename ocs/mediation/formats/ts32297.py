"""The TS 32.297 CDR file framing (clause 6.1): a file header, then each CDR behind its own
CDR header. Octets are big-endian; bit fields are packed from the most significant bit.

File header::

    file length            4   the whole file, header included
    header length          4   the file header, these 8 octets included
    high release/version   1   release identifier (3 bits) + version (5 bits)
    low release/version    1
    file opening time      4   month 4 bits, day 5, hour 5, minute 6, offset sign 1 (1 = +),
    last CDR append time   4   offset hours 5, offset minutes 6 (local time)
    number of CDRs         4
    file sequence number   4
    closure reason         1   0 normal, 1 size limit, 2 time limit, 3 CDR count limit, ...
    node IP address       20
    lost CDR indicator     1
    routing filter         2 + n   length, then the filter
    private extension      2 + n   length, then the extension
    high release ext.      1   present when the high release identifier is 7 (Rel-10 and
    low release ext.       1   later): release - 10; the same for the low release

CDR header, before each record::

    CDR length             2   the record alone, without this header
    release/version        1   release identifier (3 bits) + version (5 bits)
    format + TS number     1   data record format (3 bits: 1 BER, 2 unaligned PER, 3 aligned
                               PER, 4 XER) + the TS that defines the record (5 bits: 6 =
                               TS 32.250, the circuit-switched domain)
    release extension      1   present when the release identifier is 7
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

#: Release identifiers (3 bits) for releases 99 (0) and 4..9 (1..6); 7 means 10 or later,
#: with the release - 10 in an extension octet.
_REL_EXT = 7
MIN_HEADER = 52  # the fixed fields and two empty variable-length ones

FORMAT_BER = 1
FORMAT_NAMES = {1: "BER", 2: "unaligned PER", 3: "aligned PER", 4: "XER"}
TS_32250 = 6  # TS number code of the CS domain (TS 32.250)

CLOSE_NORMAL = 0
CLOSE_SIZE = 1
CLOSE_TIME = 2


class FramingError(ValueError):
    """The file header cannot be read; ``str()`` is the reason."""


@dataclass(frozen=True, slots=True)
class FileHeader:
    """The TS 32.297 file header, as read (or to write)."""

    file_length: int
    header_length: int
    high_release: int
    high_version: int
    low_release: int
    low_version: int
    opened: tuple[int, int, int, int, int]  # month, day, hour, minute, UTC offset minutes
    last_append: tuple[int, int, int, int, int]
    cdr_count: int
    sequence: int
    closure_reason: int
    node_address: bytes = field(repr=False)
    lost_cdrs: int


def _release_id(release: int) -> tuple[int, int | None]:
    if release == 99:
        return 0, None
    if 4 <= release <= 9:
        return release - 3, None
    if 10 <= release <= 10 + 255:
        return _REL_EXT, release - 10
    raise ValueError(f"release {release} cannot be written")


def _release(ident: int, ext: int | None) -> int:
    if ident == 0:
        return 99
    if ident == _REL_EXT:
        return 10 + (ext or 0)
    return ident + 3


def pack_time(t: datetime) -> bytes:
    """A time-zone aware time -> the 4-octet file header time stamp (local time)."""
    offset = t.utcoffset()
    if offset is None:
        raise ValueError("the time must be time-zone aware")
    minutes = int(offset.total_seconds()) // 60
    positive = 1 if minutes >= 0 else 0
    oh, om = divmod(abs(minutes), 60)
    v = (
        t.month << 28 | t.day << 23 | t.hour << 18 | t.minute << 12
        | positive << 11 | oh << 6 | om
    )  # fmt: skip
    return v.to_bytes(4, "big")


def unpack_time(octets: bytes) -> tuple[int, int, int, int, int]:
    """4 octets -> (month, day, hour, minute, UTC offset in minutes)."""
    v = int.from_bytes(octets, "big")
    offset = ((v >> 6) & 0x1F) * 60 + (v & 0x3F)
    if not (v >> 11) & 1:
        offset = -offset
    return (v >> 28, (v >> 23) & 0x1F, (v >> 18) & 0x1F, (v >> 12) & 0x3F, offset)


def header_time(t: tuple[int, int, int, int, int], year: int) -> datetime | None:
    """A header time stamp as a datetime in ``year`` (the stamp carries none), or None when
    it is not a valid time."""
    month, day, hour, minute, offset = t
    try:
        return datetime(year, month, day, hour, minute, tzinfo=timezone(timedelta(minutes=offset)))
    except ValueError:
        return None


def read_file_header(data: bytes) -> FileHeader:
    """The file header at the start of ``data``; ``FramingError`` when it cannot be read."""
    if len(data) < MIN_HEADER:
        raise FramingError(
            f"a TS 32.297 file header has at least {MIN_HEADER} octets; the file has {len(data)}"
        )
    file_length, header_length = struct.unpack_from(">II", data)
    if header_length < MIN_HEADER:
        raise FramingError(f"file header length {header_length} is below {MIN_HEADER}")
    if header_length > len(data):
        raise FramingError(
            f"file header length {header_length} runs past the end of the file ({len(data)})"
        )
    if file_length < header_length:
        raise FramingError(f"file length {file_length} is below the header length {header_length}")
    hi, lo = data[8], data[9]
    count, seq = struct.unpack_from(">II", data, 18)
    pos = 48
    for what in ("CDR routing filter", "private extension"):
        if pos + 2 > header_length:
            raise FramingError(f"the {what} length runs past the file header")
        (n,) = struct.unpack_from(">H", data, pos)
        pos += 2 + n
        if pos > header_length:
            raise FramingError(f"the {what} ({n} octets) runs past the file header")
    hi_ext = lo_ext = None
    if hi >> 5 == _REL_EXT:
        if pos >= header_length:
            raise FramingError("the high release extension octet is missing")
        hi_ext, pos = data[pos], pos + 1
    if lo >> 5 == _REL_EXT:
        if pos >= header_length:
            raise FramingError("the low release extension octet is missing")
        lo_ext = data[pos]
    return FileHeader(
        file_length=file_length,
        header_length=header_length,
        high_release=_release(hi >> 5, hi_ext),
        high_version=hi & 0x1F,
        low_release=_release(lo >> 5, lo_ext),
        low_version=lo & 0x1F,
        opened=unpack_time(data[10:14]),
        last_append=unpack_time(data[14:18]),
        cdr_count=count,
        sequence=seq,
        closure_reason=data[26],
        node_address=data[27:47],
        lost_cdrs=data[47],
    )


@dataclass(frozen=True, slots=True)
class CdrHeader:
    length: int  # the record's, without this header
    header_length: int  # 4, or 5 with the release extension
    release: int
    version: int
    data_format: int
    ts_number: int


def read_cdr_header(data: bytes, pos: int, end: int) -> CdrHeader | None:
    """The CDR header at ``pos``, or None when it does not fit before ``end``."""
    if pos + 4 > end:
        return None
    (length,) = struct.unpack_from(">H", data, pos)
    rv, ft = data[pos + 2], data[pos + 3]
    ext = None
    hlen = 4
    if rv >> 5 == _REL_EXT:
        if pos + 5 > end:
            return None
        ext, hlen = data[pos + 4], 5
    return CdrHeader(length, hlen, _release(rv >> 5, ext), rv & 0x1F, ft >> 5, ft & 0x1F)


# -- writing (the switch simulator's side) ----------------------------------------------------


def node_address(ip: str) -> bytes:
    """The 20-octet node address field: an IPv4 address in the last 4 octets behind 16 octets
    of 0xFF, an IPv6 address in the last 16 behind 4 octets of 0xFF."""
    import ipaddress

    a = ipaddress.ip_address(ip)
    packed = a.packed
    return b"\xff" * (20 - len(packed)) + packed


def cdr_header(record_length: int, release: int = 13, version: int = 0) -> bytes:
    """The CDR header for one BER record of the CS domain (TS 32.250)."""
    if record_length > 0xFFFF:
        raise ValueError(f"a CDR of {record_length} octets does not fit a CDR header")
    ident, ext = _release_id(release)
    out = struct.pack(">HBB", record_length, ident << 5 | version, FORMAT_BER << 5 | TS_32250)
    return out + (bytes([ext]) if ext is not None else b"")


def file_header(
    *,
    body_length: int,
    cdr_count: int,
    sequence: int,
    opened: datetime,
    last_append: datetime,
    closure_reason: int = CLOSE_TIME,
    node_ip: str = "192.0.2.1",
    release: int = 13,
    version: int = 0,
) -> bytes:
    """The file header for a file whose CDRs (with their CDR headers) take ``body_length``."""
    ident, ext = _release_id(release)
    exts = bytes([ext, ext]) if ext is not None else b""
    header_length = MIN_HEADER + len(exts)
    rv = ident << 5 | version
    return (
        struct.pack(">IIBB", header_length + body_length, header_length, rv, rv)
        + pack_time(opened)
        + pack_time(last_append)
        + struct.pack(">IIB", cdr_count, sequence & 0xFFFFFFFF, closure_reason)
        + node_address(node_ip)
        + b"\x00"  # no CDR lost
        + b"\x00\x00"  # no routing filter
        + b"\x00\x00"  # no private extension
        + exts
    )
