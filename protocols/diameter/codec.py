"""Sans-IO Diameter codec (RFC 6733 §3-4): messages, AVPs, a stream framer, answers.

No I/O and no clock here. :class:`Framer` turns a byte stream into :class:`Message` objects
(``receive_data`` / ``next_message`` until :data:`NEED_DATA`) and messages into bytes
(``send``); :func:`decode` reads one whole message. Building goes through :func:`avp`,
:func:`build_avps`, :func:`make_request`, :func:`make_answer` and :func:`error_answer`.

Decoding reads the AVP tree once: every AVP becomes an :class:`Avp` holding its raw bytes
(grouped ones with their members), and a value is decoded on first access (``Avp.value``;
strings excepted, which the UTF-8 check decodes anyway). That one pass also finds every error
up front: bad AVP lengths (5014), values of the wrong size (5014) or not UTF-8 (5004), unknown
AVPs with the M-bit (5001), reserved AVP flag bits set (3009), a request with the E-bit (3008).
Such errors do not fail the decode: they are listed in ``Message.problems`` so that the server
can answer them (``error_answer``) and keep the connection. Only a stream that cannot be
trusted any more raises, :class:`FramingError`. (Splitting grouped AVPs lazily was measured and
dropped: the errors must be found at once anyway, and a Gy agent reads MSCC, Subscription-Id
and PS-Information in every request, so a second pass over them cost more than it saved.)
The decoder raises nothing else on any input (the tests fuzz it). A top-level AVP whose
bytes were decoded twice before without a problem is taken from a bounded cache
(:data:`_CLEAN_AVPS`): the same object, checks and shape as a fresh decoding would give.
A message is first tried in one flat pass over its top-level AVPs (``_decode_flat``: the
cached ones and the run of them after the Session-Id taken as they are, the others decoded in
full one by one); the first problem sends the whole message to the full decoder, so that every
problem found, and every error answer built from them, is the full decoder's.
:class:`AnswerTemplate` builds and encodes in one step the answers :func:`make_answer` would
build to clean requests.
"""

from __future__ import annotations

import functools
import random
import struct
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from enum import Enum
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, Final, NamedTuple, TypeAlias, overload

from protocols.diameter.constants import (
    APP_CREDIT_CONTROL,
    AVP_FLAG_MANDATORY,
    AVP_FLAG_VENDOR,
    AVP_FLAGS_RESERVED,
    CMD_CREDIT_CONTROL,
    COMMAND_NAMES,
    DEFAULT_MAX_MESSAGE_SIZE,
    DIAMETER_AVP_OCCURS_TOO_MANY_TIMES,
    DIAMETER_AVP_UNSUPPORTED,
    DIAMETER_INVALID_AVP_BITS,
    DIAMETER_INVALID_AVP_LENGTH,
    DIAMETER_INVALID_AVP_VALUE,
    DIAMETER_INVALID_HDR_BITS,
    DIAMETER_INVALID_MESSAGE_LENGTH,
    DIAMETER_MISSING_AVP,
    DIAMETER_UNSUPPORTED_VERSION,
    FLAG_ERROR,
    FLAG_PROXIABLE,
    FLAG_REQUEST,
    FLAG_RETRANSMIT,
    HEADER_SIZE,
    MAX_AVP_DEPTH,
    MAX_ERROR_MESSAGE_LEN,
    MAX_MESSAGE_LENGTH_FIELD,
    MIN_MAX_MESSAGE_SIZE,
    VERSION,
    is_protocol_error,
)
from protocols.diameter.dictionary import (
    BY_KEY,
    BY_NAME,
    COMMAND_RULES,
    ENUMERATIONS,
    ERROR_ANSWER_RULES,
    GROUPED_RULES,
    UNBOUNDED,
    AvpDef,
    AvpType,
    Occurs,
)
from protocols.diameter.errors import (
    FramingError,
    InvalidAvpValue,
    LocalProtocolError,
    Problem,
)

__all__ = [
    "NEED_DATA",
    "AnswerTemplate",
    "Avp",
    "AvpKey",
    "AvpValue",
    "Framer",
    "Identifiers",
    "Item",
    "Message",
    "NeedData",
    "OtherAddress",
    "avp",
    "build_avps",
    "decode",
    "error_answer",
    "make_answer",
    "make_request",
    "raw_avp",
    "validate",
]


class NeedData(Enum):
    """Type of the :data:`NEED_DATA` sentinel."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by ``Framer.next_message`` when the buffer holds no complete message.
NEED_DATA: Final = NeedData.NEED_DATA


class OtherAddress(NamedTuple):
    """An Address AVP of a family other than IPv4 (1) and IPv6 (2), e.g. E.164 (8)."""

    family: int
    data: bytes


#: What ``Avp.value`` returns, by type: bytes (OctetString), int (Integer*, Unsigned*,
#: Enumerated), float, str (UTF8String, DiameterIdentity, DiameterURI, IPFilterRule),
#: datetime (Time, UTC), an address, or the member AVPs (Grouped).
AvpValue: TypeAlias = (
    "bytes | int | float | str | datetime | IPv4Address | IPv6Address | OtherAddress | list[Avp]"
)
#: Names an AVP in finders: its dictionary name, its code (vendor 0) or (code, vendor).
AvpKey: TypeAlias = "str | int | tuple[int, int]"
#: One AVP to build: an :class:`Avp`, or (name, value) where a grouped value is an iterable of
#: items.
Item: TypeAlias = "Avp | tuple[str | AvpDef, Any]"

# --- wire structures -------------------------------------------------------------------------

_HEADER: Final = struct.Struct(">IIIII")
_AVP_HEAD: Final = struct.Struct(">II")
_AVP_HEAD_V: Final = struct.Struct(">III")
_U32: Final = struct.Struct(">I")
_I32: Final = struct.Struct(">i")
_U64: Final = struct.Struct(">Q")
_I64: Final = struct.Struct(">q")
_F32: Final = struct.Struct(">f")
_F64: Final = struct.Struct(">d")
_PAD: Final = (b"", b"\0\0\0", b"\0\0", b"\0")

_GROUPED: Final = AvpType.GROUPED
_ADDRESS: Final = AvpType.ADDRESS
#: Size of the fixed-size types' data; 0 for the others (indexed by AvpType).
_FIXED_SIZE: Final = (0, 4, 8, 4, 8, 4, 8, 0, 0, 4, 0, 0, 0, 4, 0)
_IS_STRING: Final = (
    False, False, False, False, False, False, False, False, False, False, True, True, True,
    False, True,
)  # fmt: skip

#: What the decoder checks of each known AVP, by key: (definition, data size of a fixed-size
#: type or 0, what else to check), looked up once per AVP.
_SCAN_OTHER, _SCAN_STRING, _SCAN_GROUPED, _SCAN_ADDRESS = range(4)
_SCAN_INFO: Final[dict[int, tuple[AvpDef, int, int]]] = {
    key: (
        d,
        d.size,
        _SCAN_GROUPED if d.type is _GROUPED
        else _SCAN_STRING if _IS_STRING[d.type]
        else _SCAN_ADDRESS if d.type is _ADDRESS
        else _SCAN_OTHER,
    )
    for key, d in BY_KEY.items()
}  # fmt: skip

#: The AVPs whose value validate() reads (the enumerated ones it checks, Auth-Application-Id
#: in a CCR), by key: their data is part of a message's shape (see ``_scan``).
_SHAPE_VALUES: Final = frozenset(
    {BY_NAME[name].key for name in ENUMERATIONS} | {BY_NAME["Auth-Application-Id"].key}
)

#: RFC 6733 §4.3.1 Time: NTP seconds. 1900-01-01 to 1970-01-01 is this many seconds.
_NTP_UNIX_OFFSET: Final = 2_208_988_800


def _error_text(text: str) -> str:
    return text[:MAX_ERROR_MESSAGE_LEN]


# --- values ----------------------------------------------------------------------------------


def _check_value(kind: AvpType, data: bytes) -> tuple[int, str] | None:
    """(result code, detail) when ``data`` is not a valid value of ``kind``; None when it is."""
    size = _FIXED_SIZE[kind]
    if size:
        if len(data) != size:
            return DIAMETER_INVALID_AVP_LENGTH, f"{kind.name} needs {size} bytes, not {len(data)}"
        return None
    if _IS_STRING[kind]:
        try:
            data.decode()
        except UnicodeDecodeError:
            return DIAMETER_INVALID_AVP_VALUE, "not valid UTF-8"
        return None
    if kind is _ADDRESS:
        n = len(data)
        if n < 2:
            return DIAMETER_INVALID_AVP_LENGTH, "Address shorter than its 2-byte family"
        family = (data[0] << 8) | data[1]
        if (family == 1 and n != 6) or (family == 2 and n != 18):
            return DIAMETER_INVALID_AVP_LENGTH, f"Address of family {family} with {n - 2} bytes"
    return None


def _decode_time(data: bytes) -> datetime:
    ntp = _U32.unpack(data)[0]
    # RFC 6733 §4.3.1 (via RFC 4330 §3): values with the top bit clear are after 2036-02-07.
    unix = ntp - _NTP_UNIX_OFFSET if ntp & 0x80000000 else ntp + 2**32 - _NTP_UNIX_OFFSET
    return datetime.fromtimestamp(unix, UTC)


def _decode_address(data: bytes) -> IPv4Address | IPv6Address | OtherAddress:
    family = (data[0] << 8) | data[1]
    if family == 1:
        return IPv4Address(data[2:])
    if family == 2:
        return IPv6Address(data[2:])
    return OtherAddress(family, data[2:])


def _unsigned(data: bytes) -> int:
    return int.from_bytes(data, "big")


def _signed(data: bytes) -> int:
    return int.from_bytes(data, "big", signed=True)


def _utf8(data: bytes) -> str:
    return data.decode()


def _octets(data: bytes) -> bytes:
    return data


def _float32(data: bytes) -> float:
    value: float = _F32.unpack(data)[0]
    return value


def _float64(data: bytes) -> float:
    value: float = _F64.unpack(data)[0]
    return value


#: AvpType -> decoder of AVP data, given data of the right size (Grouped is split apart).
_DECODERS: Final[dict[AvpType, Callable[[bytes], Any]]] = {
    AvpType.OCTET_STRING: _octets,
    AvpType.INTEGER32: _signed,
    AvpType.INTEGER64: _signed,
    AvpType.UNSIGNED32: _unsigned,
    AvpType.UNSIGNED64: _unsigned,
    AvpType.FLOAT32: _float32,
    AvpType.FLOAT64: _float64,
    AvpType.ADDRESS: _decode_address,
    AvpType.TIME: _decode_time,
    AvpType.UTF8STRING: _utf8,
    AvpType.DIAMETER_IDENTITY: _utf8,
    AvpType.DIAMETER_URI: _utf8,
    AvpType.ENUMERATED: _signed,
    AvpType.IP_FILTER_RULE: _utf8,
}


def _encode_time(value: Any) -> bytes:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise LocalProtocolError("a Time value must be an aware datetime (naive given)")
        unix = int(value.timestamp())
    elif type(value) is int:
        unix = value
    else:
        raise LocalProtocolError(f"a Time value must be a datetime, not {type(value).__name__}")
    ntp = unix + _NTP_UNIX_OFFSET
    if 0x80000000 <= ntp <= 0xFFFFFFFF:
        return _U32.pack(ntp)
    if 2**32 <= ntp < 2**32 + 0x80000000:
        return _U32.pack(ntp - 2**32)  # RFC 4330 §3 era after 2036
    raise LocalProtocolError("a Time value must be between 1968-01-20 and 2104-02-26")


def _encode_address(value: Any) -> bytes:
    if isinstance(value, OtherAddress):
        if not 0 <= value.family <= 0xFFFF:
            raise LocalProtocolError(f"address family {value.family} out of range")
        return value.family.to_bytes(2, "big") + bytes(value.data)
    if isinstance(value, str):
        try:
            value = ip_address(value)
        except ValueError:
            raise LocalProtocolError(f"{value!r} is not an IPv4 or IPv6 address") from None
    if isinstance(value, IPv4Address):
        return b"\0\x01" + value.packed
    if isinstance(value, IPv6Address):
        return b"\0\x02" + value.packed
    raise LocalProtocolError(f"an Address value cannot be a {type(value).__name__}")


def _encode_octets(value: Any) -> bytes:
    if type(value) is bytes:
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"bytes expected, not {type(value).__name__}")


def _encode_str(value: Any) -> bytes:
    if type(value) is not str:
        raise TypeError(f"str expected, not {type(value).__name__}")
    return value.encode()


#: AvpType -> encoder of a value to AVP data (Grouped is built apart).
_ENCODERS: Final[dict[AvpType, Callable[[Any], bytes]]] = {
    AvpType.OCTET_STRING: _encode_octets,
    AvpType.INTEGER32: _I32.pack,
    AvpType.INTEGER64: _I64.pack,
    AvpType.UNSIGNED32: _U32.pack,
    AvpType.UNSIGNED64: _U64.pack,
    AvpType.FLOAT32: _F32.pack,
    AvpType.FLOAT64: _F64.pack,
    AvpType.ADDRESS: _encode_address,
    AvpType.TIME: _encode_time,
    AvpType.UTF8STRING: _encode_str,
    AvpType.DIAMETER_IDENTITY: _encode_str,
    AvpType.DIAMETER_URI: _encode_str,
    AvpType.ENUMERATED: _I32.pack,
    AvpType.IP_FILTER_RULE: _encode_str,
}


# --- finders shared by messages and grouped AVPs ---------------------------------------------


#: Resolved finder keys: every dictionary name up front, codes and tuples as they come.
_KEYS: Final[dict[Any, tuple[int, int]]] = {d.name: (d.code, d.vendor) for d in BY_NAME.values()}


def _resolve(key: AvpKey) -> tuple[int, int]:
    resolved = _KEYS.get(key)
    if resolved is not None:
        return resolved
    if type(key) is str:
        raise KeyError(f"no AVP named {key!r} in the dictionary")
    if type(key) is int and 0 <= key <= 0xFFFFFFFF:
        resolved = (key, 0)
    elif (
        type(key) is tuple
        and len(key) == 2
        and all(type(k) is int and 0 <= k <= 0xFFFFFFFF for k in key)
    ):
        resolved = (key[0], key[1])
    else:
        raise TypeError(f"an AVP key is a name, a code or (code, vendor), not {key!r}")
    if len(_KEYS) < 4096:
        _KEYS[key] = resolved
    return resolved


def _first(avps: list[Avp], code: int, vendor: int) -> Avp | None:
    for a in avps:
        if a.code == code and a.vendor == vendor:
            return a
    return None


class _Container:
    """Finders over a list of AVPs (a message's, or a grouped AVP's members)."""

    __slots__ = ()

    def _members(self) -> list[Avp]:
        raise NotImplementedError

    def find(self, *path: AvpKey) -> Avp | None:
        """The first AVP named by ``path``, following the first match at each level.

        ``msg.find("Service-Information", "PS-Information", "3GPP-RAT-Type")``
        """
        avps = self._members()
        if len(path) == 1:
            code, vendor = _resolve(path[0])
            for a in avps:
                if a.code == code and a.vendor == vendor:
                    return a
            return None
        found: Avp | None = None
        for step, key in enumerate(path):
            code, vendor = _resolve(key)
            found = _first(avps, code, vendor)
            if found is None:
                return None
            if step + 1 < len(path):
                avps = found.avps
        return found

    def find_all(self, *path: AvpKey) -> list[Avp]:
        """Every AVP named by ``path``, following every match at each level."""
        level = self._members()
        for step, key in enumerate(path):
            code, vendor = _resolve(key)
            matches = [a for a in level if a.code == code and a.vendor == vendor]
            if step + 1 == len(path):
                return matches
            level = [m for a in matches for m in a.avps]
        return []

    def get(self, *path: AvpKey, default: Any = None) -> Any:
        """The value of ``find(*path)``, or ``default`` when it is absent."""
        found = self.find(*path)
        return default if found is None else found.value

    @overload
    def get_int(self, *path: AvpKey) -> int | None: ...
    @overload
    def get_int(self, *path: AvpKey, default: int) -> int: ...
    def get_int(self, *path: AvpKey, default: int | None = None) -> int | None:
        """The integer value of ``find(*path)`` (``TypeError`` if the type is not one)."""
        found = self.find(*path)
        if found is None:
            return default
        value = found.value
        if type(value) is not int:
            raise TypeError(f"{found.name} is not an integer AVP")
        return value

    @overload
    def get_str(self, *path: AvpKey) -> str | None: ...
    @overload
    def get_str(self, *path: AvpKey, default: str) -> str: ...
    def get_str(self, *path: AvpKey, default: str | None = None) -> str | None:
        """The string value of ``find(*path)`` (``TypeError`` if the type is not one)."""
        found = self.find(*path)
        if found is None:
            return default
        value = found.value
        if type(value) is not str:
            raise TypeError(f"{found.name} is not a string AVP")
        return value

    def get_bytes(self, *path: AvpKey) -> bytes | None:
        """The raw data of ``find(*path)`` (any type), or None."""
        found = self.find(*path)
        return None if found is None else found.data


# --- AVPs ------------------------------------------------------------------------------------

_UNSET: Final[Any] = object()


class Avp(_Container):
    """One AVP: code, flags, vendor id and raw data, with its value decoded on first access.

    Treat it as immutable: the same object may be shared by several messages (an answer
    reuses the request's Session-Id). Build one with :func:`avp` or :func:`raw_avp`.
    """

    __slots__ = ("_avps", "_value", "_wire", "code", "data", "definition", "flags", "vendor")

    def __init__(
        self,
        code: int,
        flags: int,
        vendor: int,
        data: bytes,
        definition: AvpDef | None = None,
        members: list[Avp] | None = None,
    ) -> None:
        self.code = code
        #: Flags as on the wire: V 0x80, M 0x40, P 0x20.
        self.flags = flags
        self.vendor = vendor
        #: The AVP data, without header or padding.
        self.data = data
        #: The dictionary entry, None for an AVP we do not know (decoded as OctetString).
        self.definition = definition
        self._value: Any = _UNSET
        self._avps = members
        self._wire: bytes | None = None

    @property
    def name(self) -> str:
        """The dictionary name, or ``"AVP <code>"`` / ``"AVP <vendor>:<code>"``."""
        if self.definition is not None:
            return self.definition.name
        return f"AVP {self.vendor}:{self.code}" if self.vendor else f"AVP {self.code}"

    @property
    def is_mandatory(self) -> bool:
        """The M-bit."""
        return bool(self.flags & AVP_FLAG_MANDATORY)

    @property
    def is_grouped(self) -> bool:
        """True when the dictionary says the AVP is Grouped."""
        return self.definition is not None and self.definition.type is _GROUPED

    @property
    def value(self) -> Any:
        """The decoded value (see :data:`AvpValue`); raw bytes for an unknown AVP.

        ``InvalidAvpValue`` when the bytes are not a value of the AVP's type (the decoder
        has listed that AVP in ``Message.problems`` already).
        """
        value = self._value
        if value is _UNSET:
            definition = self.definition
            if definition is None:
                value = self.data
            elif definition.type is _GROUPED:
                value = self.avps
            else:
                bad = _check_value(definition.type, self.data)
                if bad is not None:
                    detail = _error_text(f"{definition.name}: {bad[1]}")
                    raise InvalidAvpValue(Problem(bad[0], detail, self.to_bytes()))
                value = _DECODERS[definition.type](self.data)
            self._value = value
        return value

    @property
    def avps(self) -> list[Avp]:
        """The members of a grouped AVP; [] for other types."""
        members = self._avps
        if members is None:
            # Only a grouped AVP built from raw bytes (raw_avp) gets here: decoded ones are
            # split by the decoder, built ones keep their members.
            members = []
            if self.is_grouped:
                _scan(self.data, 0, len(self.data), 1, [], members)
            self._avps = members
        return members

    def _members(self) -> list[Avp]:
        return self.avps

    def to_bytes(self) -> bytes:
        """The AVP on the wire: header, data and padding to 4 bytes.

        Encoded once and kept (an AVP is immutable): the AVPs an answer shares with every
        other answer (Result-Code, Origin-Host, a cached Multiple-Services-Credit-Control)
        are pre-encoded bytes after their first use, so an answer is mostly a template of
        those bytes with the request's own AVPs between them (docs/diameter.md, Speed).
        """
        wire = self._wire
        if wire is None:
            data = self.data
            n = len(data)
            if self.flags & AVP_FLAG_VENDOR:
                head = _AVP_HEAD_V.pack(self.code, (self.flags << 24) | (n + 12), self.vendor)
            else:
                head = _AVP_HEAD.pack(self.code, (self.flags << 24) | (n + 8))
            wire = self._wire = head + data + _PAD[n & 3]
        return wire

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Avp):
            return NotImplemented
        return (self.code, self.vendor, self.flags, self.data) == (
            other.code,
            other.vendor,
            other.flags,
            other.data,
        )

    def __hash__(self) -> int:
        return hash((self.code, self.vendor, self.flags, self.data))

    def __repr__(self) -> str:
        try:
            value = self.value
        except InvalidAvpValue:
            value = self.data
        return f"Avp({self.name}, {value!r})"


def raw_avp(code: int, data: bytes, *, vendor: int = 0, mandatory: bool = False) -> Avp:
    """An AVP given as raw data, known to the dictionary or not."""
    if not 0 <= code <= 0xFFFFFFFF or not 0 <= vendor <= 0xFFFFFFFF:
        raise LocalProtocolError("AVP code and vendor are 32-bit unsigned")
    if len(data) > MAX_MESSAGE_LENGTH_FIELD - 12:
        raise LocalProtocolError("AVP data too long")
    flags = (AVP_FLAG_VENDOR if vendor else 0) | (AVP_FLAG_MANDATORY if mandatory else 0)
    definition = BY_KEY.get((vendor << 32) | code)
    return Avp(code, flags, vendor, bytes(data), definition)


def avp(key: str | AvpDef, value: Any, *, mandatory: bool | None = None) -> Avp:
    """Build one AVP from its dictionary name and a value (see :data:`Item` for Grouped).

    Flags follow the dictionary (V with a vendor, M when its rule is MUST) unless
    ``mandatory`` says otherwise. ``LocalProtocolError`` for a value of the wrong type or range.
    """
    definition = BY_NAME.get(key) if type(key) is str else key
    if type(definition) is not AvpDef:
        raise LocalProtocolError(f"no AVP named {key!r} in the dictionary")
    flags = definition.flags
    if mandatory is not None:
        flags = (flags | AVP_FLAG_MANDATORY) if mandatory else (flags & ~AVP_FLAG_MANDATORY)
    kind = definition.type
    if kind is _GROUPED:
        if (type(value) is not list and type(value) is not tuple) and (
            isinstance(value, str | bytes) or not isinstance(value, Iterable)
        ):
            raise LocalProtocolError(f"{definition.name} is Grouped: give a list of AVPs")
        members = build_avps(value)
        data = b"".join([m.to_bytes() for m in members])
        return Avp(definition.code, flags, definition.vendor, data, definition, members)
    try:
        data = _ENCODERS[kind](value)
    except (struct.error, OverflowError, UnicodeEncodeError, TypeError) as exc:
        raise LocalProtocolError(f"{definition.name}: cannot encode {value!r}: {exc}") from None
    except LocalProtocolError as exc:
        raise LocalProtocolError(f"{definition.name}: {exc}") from None
    return Avp(definition.code, flags, definition.vendor, data, definition)


def build_avps(items: Iterable[Item]) -> list[Avp]:
    """AVPs from a list of :class:`Avp` objects and (name, value) pairs.

    ``[("Rating-Group", 10), ("Granted-Service-Unit", [("CC-Time", 60)])]``
    """
    out: list[Avp] = []
    for item in items:
        if type(item) is Avp:
            out.append(item)
        elif type(item) is tuple and len(item) == 2:
            out.append(avp(item[0], item[1]))
        else:
            raise LocalProtocolError(f"an AVP item is an Avp or (name, value), not {item!r}")
    return out


# --- decoding --------------------------------------------------------------------------------


def _failed_header(buf: bytes, pos: int, end: int, kind: AvpType | None) -> bytes:
    """RFC 6733 §7.1.5 (5014): the offending header, zero-filled to a header's size, then a
    zero-filled payload of the type's minimum size."""
    flags = buf[pos + 4] if end - pos > 4 else 0
    header_size = 12 if flags & AVP_FLAG_VENDOR else 8
    head = bytes(buf[pos : min(end, pos + header_size)]).ljust(header_size, b"\0")
    return head + bytes(_FIXED_SIZE[kind] if kind is not None else 0)


def _well_formed(a: Avp) -> bool:
    """True when a grouped AVP's members decode without a problem."""
    problems: list[Problem] = []
    _scan(a.data, 0, len(a.data), 1, problems, [])
    return not problems


def _length_problem(buf: bytes, pos: int, end: int, detail: str, kind: AvpType | None) -> Problem:
    return Problem(DIAMETER_INVALID_AVP_LENGTH, detail, _failed_header(buf, pos, end, kind))


#: Top-level AVPs decoded before without a problem, by their bytes (header and data, no
#: padding): the AVP and what it adds to the message's shape. A gateway sends the same
#: Origin-Host, Auth-Application-Id, CC-Request-Type, Service-Context-Id, and mostly the same
#: Multiple-Services-Credit-Control, in every CCR: such an AVP is one dict lookup instead of
#: its checks, an object per member and (for a string) its UTF-8 decoding; and its encoding,
#: when an answer echoes it, is made once (``Avp.to_bytes``). An AVP is immutable, so one
#: object may stand in many messages. Bounded: emptied when full, AVPs over
#: ``_CLEAN_AVP_MAX_BYTES``, unknown AVPs and Session-Ids (new in every session) are not kept.
#: An AVP goes in on its second sighting (the bytes of those seen once are here, and bytes
#: are no work for the garbage collector): an AVP new in every message (a Used-Service-Unit
#: that differs, an Event-Timestamp) never takes a place, nor keeps objects alive.
_CLEAN_AVPS: dict[bytes, tuple[Avp, tuple[Any, ...]]] = {}
_SEEN_ONCE: set[bytes] = set()
_CLEAN_AVPS_SIZE: Final = 4096
_CLEAN_AVP_MAX_BYTES: Final = 512
_SESSION_ID_CODE: Final = 263
_SESSION_ID_DEF: Final = BY_KEY[_SESSION_ID_CODE]


def _scan(
    buf: bytes,
    pos: int,
    end: int,
    depth: int,
    problems: list[Problem],
    out: list[Avp],
    shape: list[Any] | None = None,
    clean: dict[bytes, tuple[Avp, tuple[Any, ...]]] | None = None,
) -> None:
    """Append the AVPs in ``buf[pos:end]`` to ``out`` (grouped ones with their members) and
    list in ``problems`` what is wrong with them. A bad AVP length ends the list: nothing after
    it can be found. Values stay raw (decoded on access), strings excepted: checking that they
    are UTF-8 decodes them, so the result is kept.

    ``shape`` (when given) gets what :func:`validate` looks at, in order: each AVP's key, the
    data of those whose value it checks (:data:`_SHAPE_VALUES`), and -1 / -2 around a grouped
    AVP's members. Two messages of one command with the same shape are valid alike.

    ``clean`` (for a message's top level, with ``shape``): :data:`_CLEAN_AVPS`. An AVP found
    there by its bytes is that entry's AVP and shape; one decoded without a problem goes in.
    """
    head = _AVP_HEAD.unpack_from
    scan_info = _SCAN_INFO
    append = out.append
    values = _SHAPE_VALUES
    while pos < end:
        if end - pos < 8:
            problems.append(
                _length_problem(buf, pos, end, f"{end - pos} bytes left: no AVP header", None)
            )
            return
        code, word = head(buf, pos)
        flags = word >> 24
        length = word & 0xFFFFFF
        if flags & 0x80:
            if length < 12 or end - pos < 12:
                problems.append(
                    _length_problem(buf, pos, end, f"AVP {code} (V-bit) of length {length}", None)
                )
                return
            vendor = _U32.unpack_from(buf, pos + 8)[0]
            start = pos + 12
            key = (vendor << 32) | code
        else:
            if length < 8:
                problems.append(
                    _length_problem(buf, pos, end, f"AVP {code} of length {length}", None)
                )
                return
            vendor = 0
            start = pos + 8
            key = code
        info = scan_info.get(key)
        definition = None if info is None else info[0]
        stop = pos + length
        if stop > end:
            problems.append(
                _length_problem(
                    buf,
                    pos,
                    end,
                    f"AVP {code} of length {length} overruns its container",
                    None if definition is None else definition.type,
                )
            )
            return
        wire = None
        if (
            clean is not None
            and shape is not None
            and key != _SESSION_ID_CODE
            and length <= _CLEAN_AVP_MAX_BYTES
        ):
            wire = buf[pos:stop]
            hit = clean.get(wire)
            if hit is not None:
                append(hit[0])
                shape.extend(hit[1])
                pos = stop + (-length & 3)
                continue
            before, mark = len(problems), len(shape)
        data = buf[start:stop]
        item = Avp(code, flags, vendor, data, definition)
        append(item)
        pos = stop + (-length & 3)
        if shape is not None:
            shape.append(key)
            if key in values:
                shape.append(data)
        if flags & AVP_FLAGS_RESERVED:
            problems.append(
                Problem(
                    DIAMETER_INVALID_AVP_BITS,
                    f"AVP {vendor}:{code} has reserved flag bits set (0x{flags:02x})",
                    buf[stop - length : stop] + _PAD[length & 3],
                )
            )
        if info is None:
            if flags & AVP_FLAG_MANDATORY:
                problems.append(
                    Problem(
                        DIAMETER_AVP_UNSUPPORTED,
                        f"unknown AVP {vendor}:{code} with the M-bit",
                        buf[stop - length : stop] + _PAD[length & 3],
                    )
                )
            continue
        _, size, mode = info
        if size:
            if len(data) != size:
                # RFC 6733 §7.1.5 (5014): "the offending AVPs within a Failed-AVP", as sent.
                problems.append(
                    Problem(
                        DIAMETER_INVALID_AVP_LENGTH,
                        f"{info[0].name}: {size} bytes expected, {len(data)} given",
                        buf[stop - length : stop] + _PAD[length & 3],
                    )
                )
        elif mode == _SCAN_STRING:
            try:
                item._value = data.decode()
            except UnicodeDecodeError:
                problems.append(
                    Problem(
                        DIAMETER_INVALID_AVP_VALUE,
                        f"{info[0].name}: not valid UTF-8",
                        buf[stop - length : stop] + _PAD[length & 3],
                    )
                )
        elif mode == _SCAN_GROUPED:
            members: list[Avp] = []
            item._avps = members
            if shape is not None:
                shape.append(-1)
            if depth >= MAX_AVP_DEPTH:
                problems.append(
                    Problem(
                        DIAMETER_INVALID_AVP_VALUE,
                        f"grouped AVPs nested deeper than {MAX_AVP_DEPTH}",
                        buf[stop - length : stop] + _PAD[length & 3],
                    )
                )
            elif code == 279 and vendor == 0:
                # Failed-AVP holds someone else's offending AVPs: what is wrong inside it is
                # reported, not a fault of this message (RFC 6733 §7.5).
                _scan(buf, start, stop, depth + 1, [], members, shape)
            else:
                _scan(buf, start, stop, depth + 1, problems, members, shape)
            if shape is not None:
                shape.append(-2)
        elif mode == _SCAN_ADDRESS:
            bad = _check_value(_ADDRESS, data)
            if bad is not None:
                problems.append(
                    Problem(
                        bad[0],
                        f"{info[0].name}: {bad[1]}",
                        buf[stop - length : stop] + _PAD[length & 3],
                    )
                )
        if wire is not None and shape is not None and clean is not None and len(problems) == before:
            seen = _SEEN_ONCE
            if wire in seen:
                if len(clean) >= _CLEAN_AVPS_SIZE:
                    clean.clear()
                clean[wire] = (item, tuple(shape[mark:]))
            else:
                if len(seen) >= _CLEAN_AVPS_SIZE:
                    seen.clear()
                seen.add(wire)


def _check_header(buf: bytes | bytearray, pos: int, max_size: int) -> int:
    """The message length announced at ``buf[pos:]`` (4 bytes needed); FramingError if bad."""
    word: int = _U32.unpack_from(buf, pos)[0]
    version = word >> 24
    length = word & 0xFFFFFF
    if version != VERSION:
        raise FramingError(
            DIAMETER_UNSUPPORTED_VERSION,
            f"version {version} (only {VERSION} exists)",
            _header_only(buf, pos),
        )
    if length < HEADER_SIZE or length & 3:
        raise FramingError(
            DIAMETER_INVALID_MESSAGE_LENGTH,
            f"message length {length} (a multiple of 4, at least {HEADER_SIZE})",
            _header_only(buf, pos),
        )
    if length > max_size:
        raise FramingError(
            DIAMETER_INVALID_MESSAGE_LENGTH,
            f"message length {length} is over the limit of {max_size}",
            _header_only(buf, pos),
        )
    return length


def _header_only(buf: bytes | bytearray, pos: int) -> Message | None:
    """The header at ``buf[pos:]`` as a message without AVPs, when it is a whole request."""
    if len(buf) - pos < HEADER_SIZE:
        return None
    _, word, app, hop, end = _HEADER.unpack_from(buf, pos)
    if not (word >> 24) & FLAG_REQUEST:
        return None
    return Message(word & 0xFFFFFF, [], app, word >> 24, hop, end)


#: Runs of top-level AVPs that followed a message's first Session-Id up to its first grouped
#: AVP, each AVP of them taken from :data:`_CLEAN_AVPS`, by their bytes (padding included):
#: the AVPs and their shape (in a CCR: Origin-Host ... CC-Request-Number). The
#: same bytes from the start of an AVP are the same AVPs, so a run found again is what the
#: decoder would make of them AVP by AVP. Bounded (emptied when full, as are the few sizes
#: looked up).
_RUNS: dict[bytes, tuple[list[Avp], tuple[Any, ...]]] = {}
_RUN_SIZES: list[int] = []
_RUNS_SIZE: Final = 1024
_RUN_SIZES_MAX: Final = 4


def _keep_run(wire: bytes, avps: list[Avp], shape: list[Any]) -> None:
    if len(avps) < 2:
        return
    size = len(wire)
    if len(_RUNS) >= _RUNS_SIZE or (size not in _RUN_SIZES and len(_RUN_SIZES) >= _RUN_SIZES_MAX):
        _RUNS.clear()
        _RUN_SIZES.clear()
    if size not in _RUN_SIZES:
        _RUN_SIZES.append(size)
    _RUNS[wire] = (avps, tuple(shape))


_SUBSCRIPTION_ID_CODE: Final = 443
_SUBSCRIPTION_ID_TYPE_CODE: Final = 450
_SUBSCRIPTION_ID_DATA_CODE: Final = 444
_SUBSCRIPTION_ID_DEFS: Final = (BY_KEY[443], BY_KEY[450], BY_KEY[444])
#: (Subscription-Id-Type is enumerated: its data is part of the shape.)
assert (
    _SUBSCRIPTION_ID_TYPE_CODE in _SHAPE_VALUES and _SUBSCRIPTION_ID_DATA_CODE not in _SHAPE_VALUES
)


def _subscription_id(buf: bytes, pos: int, stop: int) -> Avp | None:
    """The Subscription-Id at ``buf[pos:stop]`` (M-bit only) when it is exactly what a gateway
    sends, Subscription-Id-Type (M, 4 bytes) then Subscription-Id-Data (M, UTF-8) and nothing
    else: then ``_scan`` would find no problem in it, and these are the AVPs it would make.
    None for any other form (``_scan`` decodes it)."""
    if stop - pos < 28:
        return None
    head = _AVP_HEAD.unpack_from
    code, word = head(buf, pos + 8)
    if code != _SUBSCRIPTION_ID_TYPE_CODE or word != (AVP_FLAG_MANDATORY << 24) | 12:
        return None
    code, word = head(buf, pos + 20)
    n = word & 0xFFFFFF
    if (
        code != _SUBSCRIPTION_ID_DATA_CODE
        or word >> 24 != AVP_FLAG_MANDATORY
        or n < 8
        or pos + 20 + n + (-n & 3) != stop
    ):
        return None
    data = buf[pos + 28 : pos + 20 + n]
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return None
    group, kind, value = _SUBSCRIPTION_ID_DEFS
    member = Avp(_SUBSCRIPTION_ID_DATA_CODE, AVP_FLAG_MANDATORY, 0, data, value)
    member._value = text
    members = [Avp(_SUBSCRIPTION_ID_TYPE_CODE, AVP_FLAG_MANDATORY, 0, buf[pos + 16 : pos + 20],
                   kind), member]  # fmt: skip
    return Avp(_SUBSCRIPTION_ID_CODE, AVP_FLAG_MANDATORY, 0, buf[pos + 8 : stop], group, members)


def _decode_flat(buf: bytes, length: int) -> Message | None:
    """The message at ``buf[:length]`` in one flat pass over its top-level AVPs, or None when
    it holds anything unusual (docs/diameter.md, Speed: decoding lazily).

    A gateway's CCR is mostly AVPs the decoder has seen before: each of those is one slice
    and one lookup in :data:`_CLEAN_AVPS`, with none of the per-AVP checks; every other AVP
    (the Session-Id, a Used-Service-Unit new in this CCR) goes through the full decoder
    (``_scan``) alone, which keeps it when it is clean. The first AVP with a problem, a header
    that cannot be an AVP's, or a request with the E-bit gives None: the caller then decodes
    the whole message afresh with ``_scan``, so every problem, and every error answer with
    its Failed-AVP, is exactly what the full decoder finds. Otherwise the result is the full
    decoder's: the same AVPs (the cached objects where it takes them from the cache), no
    problems, the same shape (``tests/test_diameter_codec.py`` compares them on fuzzed input).
    """
    word = _U32.unpack_from(buf, 4)[0]
    flags = word >> 24
    if flags & FLAG_REQUEST and flags & FLAG_ERROR:
        return None
    head = _AVP_HEAD.unpack_from
    get = _CLEAN_AVPS.get
    avps: list[Avp] = []
    shape: list[Any] = []
    append = avps.append
    extend = shape.extend
    pos = HEADER_SIZE
    # The run of cached AVPs right after a first Session-Id: where it starts (-1: none), its
    # first AVP's and shape's places.
    run_at = run_avps = run_shape = -1
    while pos < length:
        if length - pos < 8:
            return None
        code, avp_word = head(buf, pos)
        n = avp_word & 0xFFFFFF
        stop = pos + n
        if n < 8 or stop > length:
            return None
        if code != _SESSION_ID_CODE and n <= _CLEAN_AVP_MAX_BYTES:
            hit = get(buf[pos:stop])
            if hit is not None:
                if run_at >= 0 and hit[0]._avps is not None:
                    # A grouped AVP (Subscription-Id, MSCC) is mostly the session's or the
                    # request's own: the run ends before it.
                    _keep_run(buf[run_at:pos], avps[run_avps:], shape[run_shape:])
                    run_at = -1
                append(hit[0])
                extend(hit[1])
                pos = stop + (-n & 3)
                continue
        if run_at >= 0:
            _keep_run(buf[run_at:pos], avps[run_avps:], shape[run_shape:])
            run_at = -1
        if code == _SESSION_ID_CODE and avp_word >> 24 in (AVP_FLAG_MANDATORY, 0):
            # Session-Id (new in every session, never cached): a UTF8String, no vendor, no
            # reserved bits: what ``_scan`` checks of it.
            data = buf[pos + 8 : stop]
            try:
                text = data.decode()
            except UnicodeDecodeError:
                return None
            item = Avp(code, avp_word >> 24, 0, data, _SESSION_ID_DEF)
            item._value = text
            append(item)
            shape.append(code)
            pos = stop + (-n & 3)
            if len(avps) == 1:
                # What follows a CCR's Session-Id is mostly the same bytes in every CCR of a
                # gateway (Origin-Host ... CC-Request-Number): a run of cached AVPs that was
                # seen before is one lookup (see _RUNS).
                for size in _RUN_SIZES:
                    run = _RUNS.get(buf[pos : pos + size])
                    if run is not None:
                        avps += run[0]
                        extend(run[1])
                        pos += size
                        break
                else:
                    run_at, run_avps, run_shape = pos, 1, len(shape)
            continue
        if code == _SUBSCRIPTION_ID_CODE and avp_word >> 24 == AVP_FLAG_MANDATORY:
            subscription = _subscription_id(buf, pos, stop)
            if subscription is not None:
                # (new in every session: its first two sightings are not cached)
                append(subscription)
                extend((code, -1, _SUBSCRIPTION_ID_TYPE_CODE, subscription.avps[0].data,
                        _SUBSCRIPTION_ID_DATA_CODE, -2))  # fmt: skip
                pos = stop + (-n & 3)
                continue
        problems: list[Problem] = []
        _scan(buf, pos, stop, 0, problems, avps, shape, _CLEAN_AVPS)
        if problems:
            return None
        pos = stop + (-n & 3)
    if run_at >= 0:
        _keep_run(buf[run_at:pos], avps[run_avps:], shape[run_shape:])
    _, _, app, hop, end = _HEADER.unpack_from(buf, 0)
    message = Message(word & 0xFFFFFF, avps, app, flags, hop, end)
    message.shape = tuple(shape)
    return message


def _decode_body(buf: bytes, length: int) -> Message:
    flat = _decode_flat(buf, length)
    if flat is not None:
        return flat
    _, word, app, hop, end = _HEADER.unpack_from(buf, 0)
    flags = word >> 24
    problems: list[Problem] = []
    if flags & FLAG_REQUEST and flags & FLAG_ERROR:
        # RFC 6733 §3: "the 'E' bit ... MUST NOT be set in request messages".
        problems.append(Problem(DIAMETER_INVALID_HDR_BITS, "request with the E-bit set"))
    avps: list[Avp] = []
    shape: list[Any] = []
    _scan(buf, HEADER_SIZE, length, 0, problems, avps, shape, _CLEAN_AVPS)
    message = Message(word & 0xFFFFFF, avps, app, flags, hop, end, problems)
    message.shape = tuple(shape)
    return message


def decode(data: bytes, *, max_message_size: int = MAX_MESSAGE_LENGTH_FIELD) -> Message:
    """Decode exactly one whole message. ``FramingError`` when its header is unusable or
    its length field differs from ``len(data)``; everything else goes to ``problems``."""
    data = bytes(data)
    if len(data) < 4:
        raise FramingError(DIAMETER_INVALID_MESSAGE_LENGTH, f"{len(data)} bytes is no header")
    length = _check_header(data, 0, max_message_size)
    if length != len(data):
        raise FramingError(
            DIAMETER_INVALID_MESSAGE_LENGTH,
            f"header says {length} bytes, {len(data)} given",
            _header_only(data, 0),
        )
    return _decode_body(data, length)


# --- messages --------------------------------------------------------------------------------


class Message(_Container):
    """A Diameter message: the header's fields and the top-level AVPs.

    ``problems`` lists what the decoder found wrong (empty for a clean or locally built
    message). Treat it as immutable once built or decoded.
    """

    __slots__ = (
        "_wire",
        "application_id",
        "avps",
        "command_code",
        "end_to_end",
        "flags",
        "hop_by_hop",
        "problems",
        "shape",
    )

    def __init__(
        self,
        command_code: int,
        avps: list[Avp],
        application_id: int = 0,
        flags: int = 0,
        hop_by_hop: int = 0,
        end_to_end: int = 0,
        problems: list[Problem] | None = None,
    ) -> None:
        self.command_code = command_code
        self.avps = avps
        self.application_id = application_id
        #: Command flags: R 0x80, P 0x40, E 0x20, T 0x10.
        self.flags = flags
        self.hop_by_hop = hop_by_hop
        self.end_to_end = end_to_end
        self.problems: list[Problem] = [] if problems is None else problems
        #: What validate() depends on, recorded by the decoder (see ``_scan``); None for a
        #: message built here.
        self.shape: tuple[Any, ...] | None = None
        #: The encoding, when an :class:`AnswerTemplate` made it with the message.
        self._wire: bytes | None = None

    def _members(self) -> list[Avp]:
        return self.avps

    @property
    def is_request(self) -> bool:
        """The R-bit."""
        return bool(self.flags & FLAG_REQUEST)

    @property
    def is_proxiable(self) -> bool:
        """The P-bit."""
        return bool(self.flags & FLAG_PROXIABLE)

    @property
    def is_error(self) -> bool:
        """The E-bit (an answer carrying a protocol error)."""
        return bool(self.flags & FLAG_ERROR)

    @property
    def is_retransmit(self) -> bool:
        """The T-bit (a request possibly sent before, RFC 6733 §3)."""
        return bool(self.flags & FLAG_RETRANSMIT)

    @property
    def name(self) -> str:
        """ "CCR", "DWA"... or "<code>R" / "<code>A" for other commands."""
        request = self.is_request
        return COMMAND_NAMES.get(
            (self.command_code, request), f"{self.command_code}{'R' if request else 'A'}"
        )

    @property
    def session_id(self) -> str | None:
        """The Session-Id, or None."""
        found = _first(self.avps, 263, 0)
        if found is None or not _usable(found):
            return None
        value = found.value
        return value if type(value) is str else None

    @property
    def result_code(self) -> int | None:
        """The Result-Code, or the Experimental-Result-Code, or None."""
        found = _first(self.avps, 268, 0)
        if found is None:
            found = self.find("Experimental-Result", "Experimental-Result-Code")
        if found is None or not _usable(found):
            return None
        value = found.value
        return value if type(value) is int else None

    def to_bytes(self) -> bytes:
        """The message on the wire. ``LocalProtocolError`` over the 24-bit length."""
        if self._wire is not None:
            return self._wire
        body = b"".join([a.to_bytes() for a in self.avps])
        length = HEADER_SIZE + len(body)
        if length > MAX_MESSAGE_LENGTH_FIELD:
            raise LocalProtocolError(f"message of {length} bytes is too long for Diameter")
        return (
            _HEADER.pack(
                (VERSION << 24) | length,
                (self.flags << 24) | self.command_code,
                self.application_id,
                self.hop_by_hop,
                self.end_to_end,
            )
            + body
        )

    def __repr__(self) -> str:
        return (
            f"Message({self.name}, app={self.application_id}, flags=0x{self.flags:02x}, "
            f"hbh={self.hop_by_hop}, e2e={self.end_to_end}, avps={self.avps!r}"
            + (f", problems={self.problems!r})" if self.problems else ")")
        )


def make_request(
    command_code: int,
    application_id: int,
    items: Iterable[Item],
    *,
    hop_by_hop: int,
    end_to_end: int,
    proxiable: bool = False,
    retransmit: bool = False,
) -> Message:
    """A request with the given AVPs (items as for :func:`build_avps`).

    ``proxiable`` for application messages (CCR, RAR, ASR carry PXY in their ABNF); the base
    peer messages (CER, DWR, DPR) are never proxiable (RFC 6733 §5.3.1, §5.4.1, §5.5.1).
    """
    flags = FLAG_REQUEST | (FLAG_PROXIABLE if proxiable else 0)
    if retransmit:
        flags |= FLAG_RETRANSMIT
    return Message(command_code, build_avps(items), application_id, flags, hop_by_hop, end_to_end)


@functools.lru_cache(maxsize=64)
def _identity_avps(origin_host: str, origin_realm: str) -> tuple[Avp, Avp]:
    return avp("Origin-Host", origin_host), avp("Origin-Realm", origin_realm)


@functools.lru_cache(maxsize=256)
def _result_code_avp(result_code: int) -> Avp:
    return avp("Result-Code", result_code)


def _resolve_all(keys: Sequence[AvpKey]) -> Sequence[tuple[int, int]]:
    """``_resolve`` of every key, cached for the tuples answers pass again and again."""
    if type(keys) is tuple:
        try:
            return _resolve_tuple(keys)
        except TypeError:  # unhashable: resolve below (and raise the same errors)
            pass
    return [_resolve(key) for key in keys]


@functools.lru_cache(maxsize=64)
def _resolve_tuple(keys: tuple[AvpKey, ...]) -> tuple[tuple[int, int], ...]:
    return tuple(_resolve(key) for key in keys)


def _usable(found: Avp) -> bool:
    try:
        found.value  # noqa: B018 - decoding is the check
    except InvalidAvpValue:
        return False
    return True


def _echo(found: Avp | None) -> Avp | None:
    """A request's AVP as an answer may carry it: None when its value does not decode, and
    without reserved flag bits (an answer must not repeat a 3009 fault)."""
    if found is None or not _usable(found):
        return None
    if found.flags & AVP_FLAGS_RESERVED:
        return Avp(found.code, found.flags & ~AVP_FLAGS_RESERVED, found.vendor, found.data,
                   found.definition, found.avps)  # fmt: skip
    return found


def make_answer(
    request: Message,
    items: Iterable[Item] = (),
    *,
    result_code: int | None,
    origin_host: str,
    origin_realm: str,
    copy: Sequence[AvpKey] = (),
) -> Message:
    """The answer to ``request``, as RFC 6733 §6.2 says to build it.

    Same command code, application id, Hop-by-Hop and End-to-End identifiers; the R- and T-bits
    clear, the P-bit as in the request, the E-bit set for a 3xxx ``result_code``. AVPs, in the
    order of the answers' ABNF: Session-Id (when the request has one), Result-Code (unless None,
    e.g. when an Experimental-Result is among ``items``), Origin-Host, Origin-Realm, the first
    instance of each AVP named in ``copy`` that the request holds (for a CCA:
    Auth-Application-Id, CC-Request-Type, CC-Request-Number), ``items``, then every Proxy-Info
    of the request in its order.
    """
    flags = request.flags & FLAG_PROXIABLE
    avps: list[Avp] = []
    found = _echo(_first(request.avps, 263, 0))
    if found is not None:
        avps.append(found)
    if result_code is not None:
        if is_protocol_error(result_code):
            flags |= FLAG_ERROR
        avps.append(_result_code_avp(result_code))
    avps.extend(_identity_avps(origin_host, origin_realm))
    request_avps = request.avps
    for code, vendor in _resolve_all(copy):
        for found in request_avps:
            if found.code == code and found.vendor == vendor:
                usable = _echo(found)
                if usable is not None:
                    avps.append(usable)
                break
    for item in items:
        if type(item) is Avp:
            avps.append(item)
        elif type(item) is tuple and len(item) == 2:
            avps.append(avp(item[0], item[1]))
        else:
            raise LocalProtocolError(f"an AVP item is an Avp or (name, value), not {item!r}")
    # Proxy-Info (RFC 6733 §6.2), but only well-formed ones: echoing a malformed group would
    # make our answer malformed too.
    for a in request_avps:
        if a.code == 284 and a.vendor == 0 and _well_formed(a) and (echo := _echo(a)) is not None:
            avps.append(echo)
    return Message(
        request.command_code,
        avps,
        request.application_id,
        flags,
        request.hop_by_hop,
        request.end_to_end,
    )


class AnswerTemplate:
    """Answers to clean requests from byte templates (docs/diameter.md, Speed).

    What :func:`make_answer` builds, for one origin and one ``copy`` list, and encoded with
    the answer: the Result-Code, Origin-Host and Origin-Realm AVPs of each result code are one
    pre-encoded piece, and an answer is its header (command, application, flags, Hop-by-Hop
    and End-to-End identifiers, length) and the request's own AVPs (Session-Id, the first of
    each AVP named in ``copy``, every Proxy-Info), found in one pass, patched around it with
    ``items`` (pre-built :class:`Avp` objects: a grant's MSCC, Credit-Control-Failure-
    Handling...). Only a request the decoder found clean takes this path (no problem: so
    none of its AVPs has reserved bits or an undecodable value, and every Proxy-Info is well
    formed, which :func:`make_answer` would otherwise check one by one); any other goes to
    :func:`make_answer`, and so does ``items`` holding anything but an ``Avp``. The answers
    are equal, AVP for AVP and byte for byte (``tests/test_diameter_codec.py``).
    """

    __slots__ = ("_codes", "_copy", "_fixed", "_keys", "copy", "origin_host", "origin_realm")

    def __init__(self, origin_host: str, origin_realm: str, copy: Sequence[AvpKey] = ()) -> None:
        self.origin_host = origin_host
        self.origin_realm = origin_realm
        self.copy = tuple(copy)
        resolved = self._keys = tuple(_resolve_all(self.copy))
        #: (code, vendor) -> place in the copied AVPs (the first place of a key named twice).
        self._copy: dict[tuple[int, int], int] = {}
        for i, key in enumerate(resolved):
            self._copy.setdefault(key, i)
        #: The codes the pass over a request stops at: Session-Id, Proxy-Info, the copied.
        self._codes = frozenset({_SESSION_ID_CODE, 284} | {code for code, _ in resolved})
        self._fixed: dict[int, tuple[list[Avp], bytes]] = {}

    def _piece(self, result_code: int) -> tuple[list[Avp], bytes]:
        found = self._fixed.get(result_code)
        if found is None:
            fixed = [
                _result_code_avp(result_code),
                *_identity_avps(self.origin_host, self.origin_realm),
            ]
            found = (fixed, b"".join([a.to_bytes() for a in fixed]))
            if len(self._fixed) >= 256:
                self._fixed.clear()
            self._fixed[result_code] = found
        return found

    def answer(self, request: Message, result_code: int, items: Sequence[Item] = ()) -> Message:
        """``make_answer(request, items, result_code=..., origin_host=..., origin_realm=...,
        copy=...)`` of this template, encoded already."""
        clean = not request.problems and request.shape is not None
        if clean:
            for i in items:
                if type(i) is not Avp:
                    clean = False
                    break
        if not clean:
            return make_answer(request, items, result_code=result_code,
                               origin_host=self.origin_host, origin_realm=self.origin_realm,
                               copy=self.copy)  # fmt: skip
        sid: Avp | None = None
        slots: list[Avp | None] = [None] * len(self.copy)
        proxies: list[Avp] = []
        places = self._copy
        wanted = self._codes
        for a in request.avps:
            code = a.code
            if code not in wanted:
                continue
            if code == _SESSION_ID_CODE and not a.vendor:
                if sid is None:
                    sid = a
            elif code == 284 and not a.vendor:
                proxies.append(a)
            if places:
                place = places.get((code, a.vendor))
                if place is not None and slots[place] is None:
                    slots[place] = a
        fixed, fixed_wire = self._piece(result_code)
        avps: list[Avp] = [] if sid is None else [sid]
        avps += fixed
        tail: list[Avp] = []
        for key in self._keys:
            copied = slots[places[key]]
            if copied is not None:
                tail.append(copied)
        tail += items  # type: ignore[arg-type]  # (each an Avp: checked above)
        tail += proxies
        avps += tail
        body = b"".join([a.to_bytes() for a in tail])
        sid_wire = b"" if sid is None else sid.to_bytes()
        length = HEADER_SIZE + len(sid_wire) + len(fixed_wire) + len(body)
        if length > MAX_MESSAGE_LENGTH_FIELD:
            raise LocalProtocolError(f"message of {length} bytes is too long for Diameter")
        flags = request.flags & FLAG_PROXIABLE
        if is_protocol_error(result_code):
            flags |= FLAG_ERROR
        message = Message(request.command_code, avps, request.application_id, flags,
                          request.hop_by_hop, request.end_to_end)  # fmt: skip
        message._wire = b"".join((
            _HEADER.pack((VERSION << 24) | length, (flags << 24) | request.command_code,
                         request.application_id, request.hop_by_hop, request.end_to_end),
            sid_wire,
            fixed_wire,
            body,
        ))  # fmt: skip
        return message


def error_answer(
    request: Message,
    problems: Problem | Sequence[Problem],
    *,
    origin_host: str,
    origin_realm: str,
    copy: Sequence[AvpKey] = (),
    items: Iterable[Item] = (),
) -> Message:
    """The answer to a request that has ``problems`` (the first one decides the Result-Code).

    Error-Message carries its detail; one Failed-AVP holds the offending AVP of every problem
    with that Result-Code (RFC 6733 §7.5: 5001 lists all unsupported AVPs). 3xxx codes set the
    E-bit (RFC 6733 §7.2). ``copy`` as in :func:`make_answer`: for a CCA, 5xxx answers still
    carry Auth-Application-Id, CC-Request-Type and CC-Request-Number (RFC 4006 §3.2).
    """
    if isinstance(problems, Problem):
        problems = [problems]
    if not problems:
        raise ValueError("error_answer needs at least one problem")
    first = problems[0]
    extra: list[Item] = [("Error-Message", _error_text(first.message))]
    failed = b"".join(
        p.failed_avp for p in problems if p.result_code == first.result_code and p.failed_avp
    )
    if failed:
        definition = BY_NAME["Failed-AVP"]
        extra.append(Avp(definition.code, definition.flags, 0, failed, definition))
    extra.extend(items)
    return make_answer(
        request,
        extra,
        result_code=first.result_code,
        origin_host=origin_host,
        origin_realm=origin_realm,
        copy=copy,
    )


# --- per-command validation ------------------------------------------------------------------


class _Element(NamedTuple):
    """One element of a rule set, compiled: its rule, whether it must be counted (a bound
    other than 0..unbounded), the values it may take (an enumeration the OCS acts on) and,
    for a grouped AVP with rules, its members' rule set."""

    rule: Occurs
    counted: bool
    values: frozenset[int] | None
    members: _Compiled | None


class _Compiled(NamedTuple):
    """A rule set compiled for checking: ``avp_key(code, vendor)`` -> its element, and the
    elements that must be present."""

    elements: dict[int, _Element]
    required: tuple[tuple[int, Occurs], ...]


_GROUPS: dict[str, _Compiled] = {}


def _compile(rules: Sequence[Occurs]) -> _Compiled:
    out: dict[int, _Element] = {}
    for r in rules:
        definition = BY_NAME[r.name]
        members = None
        if r.name in GROUPED_RULES:
            members = _GROUPS.get(r.name)
            if members is None:
                members = _GROUPS[r.name] = _compile(GROUPED_RULES[r.name])
        counted = r.min > 0 or r.max < UNBOUNDED
        out[definition.key] = _Element(r, counted, ENUMERATIONS.get(r.name), members)
    return _Compiled(out, tuple((key, e.rule) for key, e in out.items() if e.rule.min))


_COMMAND_RULES: Final = {command: _compile(r) for command, r in COMMAND_RULES.items()}
_ERROR_ANSWER_RULES: Final = _compile(ERROR_ANSWER_RULES)

#: (command, R and E bits, shape) of the decoded messages validate() found valid.
_VALID_SHAPES: set[tuple[int, int, tuple[Any, ...]]] = set()
_VALID_SHAPES_SIZE: Final = 4096


def _missing_avp(name: str) -> bytes:
    # RFC 6733 §7.1.5 (5005): "an example of the missing AVP ... of correct minimum length
    # and contain zeroes".
    definition = BY_NAME[name]
    return Avp(
        definition.code,
        definition.flags,
        definition.vendor,
        bytes(_FIXED_SIZE[definition.type]),
        definition,
    ).to_bytes()


def _within(parents: Sequence[Avp], failed: bytes) -> bytes:
    """``failed`` wrapped in its grouped ancestors, innermost last in ``parents`` (RFC 6733
    §7.5: the Failed-AVP "MAY contain the grouped AVP, which in turn contains the single
    offending AVP")."""
    for parent in reversed(parents):
        failed = Avp(parent.code, parent.flags, parent.vendor, failed, parent.definition).to_bytes()
    return failed


def _check_occurrences(
    avps: list[Avp], rules: _Compiled, parents: list[Avp], problems: list[Problem]
) -> None:
    """Count the AVPs ``rules`` names (5009 at the first one too many), check the values of
    the enumerated ones (5004), walk into the grouped ones that have rules, then report each
    required AVP missing (5005). AVPs the rules do not name are not looked at (``*[ AVP ]``);
    so Failed-AVP's contents, someone else's AVPs (RFC 6733 §7.5), are never counted."""
    counts: dict[int, int] = {}
    get = rules.elements.get
    for a in avps:
        definition = a.definition
        if definition is None:
            continue
        element = get(definition.key)
        if element is None:
            continue
        rule, counted, values, members = element
        if counted:
            key = definition.key
            n = counts[key] = counts.get(key, 0) + 1
            if n == rule.max + 1:
                where = f" in {parents[-1].name}" if parents else ""
                problems.append(
                    Problem(
                        DIAMETER_AVP_OCCURS_TOO_MANY_TIMES,
                        f"{rule.name} occurs more than {rule.max} "
                        f"time{'s' if rule.max > 1 else ''}{where}",
                        _within(parents, a.to_bytes()),
                    )
                )
        # Enumerated: 4 bytes (the decoder checked the size), a signed integer.
        if values is not None and int.from_bytes(a.data, "big", signed=True) not in values:
            problems.append(
                Problem(
                    DIAMETER_INVALID_AVP_VALUE,
                    f"{a.name} {a.value} is not a known value",
                    _within(parents, a.to_bytes()),
                )
            )
        if members is not None:
            parents.append(a)
            _check_occurrences(a.avps, members, parents, problems)
            parents.pop()
    for key, rule in rules.required:
        if counts.get(key, 0) < rule.min:
            where = f" in {parents[-1].name}" if parents else ""
            problems.append(
                Problem(
                    DIAMETER_MISSING_AVP,
                    f"missing {rule.name}{where}",
                    _within(parents, _missing_avp(rule.name)),
                )
            )


def validate(message: Message) -> list[Problem]:
    """Every problem of ``message``: the decoder's if it found any (the command's rules are
    then not checked: the AVPs cannot be trusted), else those of its command's rules.

    The command's rules (the dictionary's :data:`COMMAND_RULES` for CER/CEA, DWR/DWA,
    DPR/DPA, CCR/CCA, RAR/RAA and ASR/ASA, and :data:`GROUPED_RULES` for the grouped AVPs in
    them): each AVP the ABNF names present at least (5005) and at most (5009) as often as it
    says, at the top level and inside grouped AVPs alike; the values of enumerated AVPs the
    OCS acts on known (5004, :data:`ENUMERATIONS`); and a CCR's Auth-Application-Id equal to
    4 (RFC 4006 §3.1). Other commands get only the decoder's checks. An empty list means the
    message may be processed. A decoded message whose shape (``Message.shape``) was found
    valid before is valid without being walked again.
    """
    if message.problems:
        return list(message.problems)
    command = (message.command_code, message.is_request)
    rules = _COMMAND_RULES.get(command)
    if rules is None:
        return []
    if message.is_error and not message.is_request:
        rules = _ERROR_ANSWER_RULES
    # A gateway sends the same few shapes of request again and again: a shape found valid
    # once is valid again (the rules below read nothing the shape leaves out).
    shape = message.shape
    if shape is not None:
        seen = (message.command_code, message.flags & (FLAG_REQUEST | FLAG_ERROR), shape)
        if seen in _VALID_SHAPES:
            return []
    problems: list[Problem] = []
    _check_occurrences(message.avps, rules, [], problems)
    if command == (CMD_CREDIT_CONTROL, True):
        app = _first(message.avps, 258, 0)  # Auth-Application-Id: RFC 4006 §3.1 says 4
        if app is not None and app.value != APP_CREDIT_CONTROL:
            problems.append(
                Problem(
                    DIAMETER_INVALID_AVP_VALUE,
                    f"Auth-Application-Id {app.value} in a CCR (must be {APP_CREDIT_CONTROL})",
                    app.to_bytes(),
                )
            )
    if shape is not None and not problems:
        if len(_VALID_SHAPES) >= _VALID_SHAPES_SIZE:
            _VALID_SHAPES.clear()
        _VALID_SHAPES.add(seen)
    return problems


# --- identifiers -----------------------------------------------------------------------------


class Identifiers:
    """Hop-by-Hop and End-to-End identifiers for the requests one connection sends.

    RFC 6733 §3: Hop-by-Hop identifiers are unique on the connection (a counter from a random
    start); an End-to-End identifier has the low 12 bits of the current time in its top 12
    bits and a random value (here a counter from a random start) in the low 20.
    """

    __slots__ = ("_end", "_hop")

    def __init__(self, rng: random.Random | None = None) -> None:
        rng = rng or random.Random()
        self._hop = rng.getrandbits(32)
        self._end = rng.getrandbits(20)

    def hop_by_hop(self) -> int:
        """The next Hop-by-Hop identifier."""
        self._hop = (self._hop + 1) & 0xFFFFFFFF
        return self._hop

    def end_to_end(self, now: float) -> int:
        """The next End-to-End identifier; ``now`` is the wall-clock time (Unix seconds)."""
        self._end = (self._end + 1) & 0xFFFFF
        return ((int(now) & 0xFFF) << 20) | self._end


# --- stream framing --------------------------------------------------------------------------


class Framer:
    """Splits a byte stream into messages and encodes messages (sans-IO, one per connection).

    ``receive_data`` adds bytes; ``next_message`` returns the next whole message or
    :data:`NEED_DATA`. A header that cannot be trusted (version other than 1, a length under 20,
    not a multiple of 4, or over ``max_message_size``) raises :class:`FramingError` as soon as
    its first 4 bytes arrive, and again on every later call: close the connection.
    """

    __slots__ = ("_buf", "_error", "_pos", "max_message_size")

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        if (
            type(max_message_size) is not int
            or not MIN_MAX_MESSAGE_SIZE <= max_message_size <= MAX_MESSAGE_LENGTH_FIELD
        ):
            raise ValueError(
                f"max_message_size must be an int in {MIN_MAX_MESSAGE_SIZE}.."
                f"{MAX_MESSAGE_LENGTH_FIELD}"
            )
        self.max_message_size = max_message_size
        self._buf = bytearray()
        self._pos = 0
        self._error: FramingError | None = None

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes received from the peer."""
        if self._error is not None:
            return
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as messages."""
        return len(self._buf) - self._pos

    def next_message(self) -> Message | NeedData:
        """The next whole message, or :data:`NEED_DATA`. ``FramingError``: close."""
        if self._error is not None:
            raise self._error
        buf = self._buf
        pos = self._pos
        available = len(buf) - pos
        if available < 4:
            return NEED_DATA
        try:
            length = _check_header(buf, pos, self.max_message_size)
        except FramingError as exc:
            self._error = exc
            self._buf = bytearray()
            self._pos = 0
            raise
        if available < length:
            return NEED_DATA
        data = bytes(buf[pos : pos + length])
        pos += length
        if pos == len(buf):
            buf.clear()
            pos = 0
        self._pos = pos
        return _decode_body(data, length)

    def send(self, message: Message) -> bytes:
        """The bytes of ``message``. ``LocalProtocolError`` over ``max_message_size``."""
        data = message.to_bytes()
        if len(data) > self.max_message_size:
            raise LocalProtocolError(
                f"message of {len(data)} bytes is over max_message_size {self.max_message_size}"
            )
        return data
