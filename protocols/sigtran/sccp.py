"""SCCP connectionless messages (ITU-T Q.713): UDT, XUDT and their service messages UDTS and
XUDTS, with called/calling party addresses routed on a global title or on a subsystem
number. Sans-IO: values <-> bytes; :class:`SccpError` carries the return cause a UDTS would
give. Segmented XUDTs are not reassembled (CAP messages fit one UDT)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from protocols.sigtran.constants import (
    CLASS0_RETURN,
    GTI_FULL,
    NAI_INTERNATIONAL,
    NP_E164,
    RC_ERROR_IN_MESSAGE_TRANSPORT,
    RC_UNQUALIFIED,
    SccpType,
)
from protocols.sigtran.errors import SccpError

_BCD: Final = "0123456789abcdef"
#: Q.713 §4.14: hop counter of a new XUDT.
HOP_COUNTER: Final = 15
#: Addresses read and written, by their octets and by value: a gsmSCF hears from a few MSCs
#: only, so the same few addresses come in every message (emptied when it reaches its size).
_ADDRESS_CACHE: Final = 4096
_decoded: dict[bytes, SccpAddress] = {}
_encoded: dict[SccpAddress, bytes] = {}
_KINDS: Final = {int(k): k for k in SccpType}


def bcd_encode(digits: str) -> bytes:
    """Digits as BCD, low nibble first, filler 0 (Q.713 §3.4.2.3.1)."""
    nibbles = [_BCD.index(d) for d in digits.lower()]
    if len(nibbles) % 2:
        nibbles.append(0)
    return bytes(nibbles[i] | nibbles[i + 1] << 4 for i in range(0, len(nibbles), 2))


def bcd_decode(data: bytes, odd: bool) -> str:
    out = []
    for b in data:
        out.append(_BCD[b & 0x0F])
        out.append(_BCD[b >> 4])
    if odd and out:
        out.pop()
    return "".join(out)


@dataclass(frozen=True, slots=True)
class SccpAddress:
    """A called or calling party address (Q.713 §3.4). ``route_on_gt``: routing indicator 0
    (translate the global title); else route on the point code and SSN."""

    ssn: int | None = None
    pc: int | None = None
    gt: str = ""
    route_on_gt: bool = False
    tt: int = 0
    np: int = NP_E164
    nai: int = NAI_INTERNATIONAL
    gti: int = GTI_FULL

    def encode(self) -> bytes:
        out = _encoded.get(self)
        if out is None:
            if len(_encoded) >= _ADDRESS_CACHE:
                _encoded.clear()
            out = _encoded[self] = self._encode()
        return out

    def _encode(self) -> bytes:
        gti = self.gti if self.gt else 0
        ai = (0 if self.route_on_gt else 0x40) | gti << 2
        out = bytearray([ai])
        if self.pc is not None:
            out[0] |= 0x01
            out += (self.pc & 0x3FFF).to_bytes(2, "little")
        if self.ssn is not None:
            out[0] |= 0x02
            out.append(self.ssn & 0xFF)
        if gti:
            odd = len(self.gt) % 2
            if gti == 1:
                out.append((0x80 if odd else 0) | (self.nai & 0x7F))
            elif gti == 2:
                out.append(self.tt)
            elif gti == 3:
                out += bytes([self.tt, self.np << 4 | (1 if odd else 2)])
            else:
                out += bytes([self.tt, self.np << 4 | (1 if odd else 2), self.nai & 0x7F])
            out += bcd_encode(self.gt)
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> SccpAddress:
        found = _decoded.get(data)
        if found is None:
            found = cls._decode(data)  # (what cannot be read raises, and is not kept)
            if len(_decoded) >= _ADDRESS_CACHE:
                _decoded.clear()
            _decoded[data] = found
        return found

    @classmethod
    def _decode(cls, data: bytes) -> SccpAddress:
        if not data:
            raise SccpError(RC_UNQUALIFIED, "empty address")
        ai = data[0]
        pos = 1
        pc = ssn = None
        if ai & 0x01:
            if len(data) < pos + 2:
                raise SccpError(RC_UNQUALIFIED, "address too short for a point code")
            pc = int.from_bytes(data[pos : pos + 2], "little") & 0x3FFF
            pos += 2
        if ai & 0x02:
            if len(data) < pos + 1:
                raise SccpError(RC_UNQUALIFIED, "address too short for a subsystem number")
            ssn = data[pos]
            pos += 1
        gti = (ai >> 2) & 0x0F
        tt, np, nai, odd = 0, NP_E164, NAI_INTERNATIONAL, False
        rest = data[pos:]
        if gti == 0:
            digits = ""
        elif gti in (1, 2, 3, 4):
            head = {1: 1, 2: 1, 3: 2, 4: 3}[gti]
            if len(rest) < head:
                raise SccpError(RC_UNQUALIFIED, f"global title (indicator {gti}) too short")
            if gti == 1:
                odd, nai = bool(rest[0] & 0x80), rest[0] & 0x7F
            else:
                tt = rest[0]
                if gti == 2:
                    odd = False
                else:
                    np, es = rest[1] >> 4, rest[1] & 0x0F
                    if es not in (1, 2):
                        raise SccpError(RC_UNQUALIFIED, f"global title encoding scheme {es}")
                    odd = es == 1
                    if gti == 4:
                        nai = rest[2] & 0x7F
            digits = bcd_decode(rest[head:], odd)
        else:
            raise SccpError(RC_UNQUALIFIED, f"global title indicator {gti}")
        if ssn is None and gti == 0:
            raise SccpError(RC_UNQUALIFIED, "address with neither subsystem nor global title")
        return cls(ssn, pc, digits, not ai & 0x40, tt, np, nai, gti or GTI_FULL)


@dataclass(frozen=True, slots=True)
class Unitdata:
    """A UDT or XUDT (data), or a UDTS or XUDTS (data returned with ``return_cause``)."""

    called: SccpAddress
    calling: SccpAddress
    data: bytes
    kind: SccpType = SccpType.UDT
    protocol_class: int = CLASS0_RETURN
    return_cause: int = 0
    hop_counter: int = HOP_COUNTER

    @property
    def return_on_error(self) -> bool:
        return bool(self.protocol_class & 0x80) and self.kind in (SccpType.UDT, SccpType.XUDT)

    def service_message(self, cause: int) -> Unitdata:
        """The UDTS (XUDTS) returning this message to its caller (Q.714 §4.2)."""
        kind = SccpType.UDTS if self.kind is SccpType.UDT else SccpType.XUDTS
        return Unitdata(self.calling, self.called, self.data, kind, 0, cause, self.hop_counter)


def encode(u: Unitdata) -> bytes:
    called, calling, data = u.called.encode(), u.calling.encode(), u.data
    kind = u.kind
    if len(data) > 255 or len(called) > 255 or len(calling) > 255:
        raise SccpError(RC_ERROR_IN_MESSAGE_TRANSPORT, "a part longer than 255 octets")
    # Each pointer counts from its own octet to its part's length octet (Q.713 §2.3).
    p1 = 3 if kind in (SccpType.UDT, SccpType.UDTS) else 4
    p2 = p1 + len(called)
    p3 = p2 + len(calling)
    if kind is SccpType.UDT or kind is SccpType.UDTS:
        second = u.protocol_class if kind is SccpType.UDT else u.return_cause
        head = bytes((kind, second, p1, p2, p3))
    else:
        second = u.protocol_class if kind is SccpType.XUDT else u.return_cause
        head = bytes((kind, second, u.hop_counter, p1, p2, p3, 0))  # (no optional part)
    return b"".join((head, bytes((len(called),)), called, bytes((len(calling),)), calling,
                     bytes((len(data),)), data))  # fmt: skip


def decode(data: bytes) -> Unitdata:
    if type(data) is not bytes:
        data = bytes(data)
    n = len(data)
    if n < 2:
        raise SccpError(RC_UNQUALIFIED, "message shorter than two octets")
    kind = _KINDS.get(data[0])
    if kind is None:
        raise SccpError(RC_UNQUALIFIED, f"message type {data[0]:#04x} not supported")
    long_form = kind is SccpType.XUDT or kind is SccpType.XUDTS
    ptr_start = 3 if long_form else 2
    if n < ptr_start + 3:
        raise SccpError(RC_UNQUALIFIED, "message too short for its pointers")
    parts = []
    for i in range(3):
        at = ptr_start + i
        ptr = data[at]
        if ptr == 0:
            raise SccpError(RC_UNQUALIFIED, f"pointer {i + 1} is zero")
        start = at + ptr
        if start >= n or start + 1 + data[start] > n:
            raise SccpError(RC_UNQUALIFIED, f"part {i + 1} runs past the message")
        parts.append(data[start + 1 : start + 1 + data[start]])
    called, calling = SccpAddress.decode(parts[0]), SccpAddress.decode(parts[1])
    second = data[1]
    hop = data[2] if long_form else HOP_COUNTER
    if kind is SccpType.UDTS or kind is SccpType.XUDTS:
        return Unitdata(called, calling, parts[2], kind, 0, second, hop)
    if second & 0x0F > 1:
        raise SccpError(RC_UNQUALIFIED, f"protocol class {second & 0x0F} is not connectionless")
    return Unitdata(called, calling, parts[2], kind, second, 0, hop)
