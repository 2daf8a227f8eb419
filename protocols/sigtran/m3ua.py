"""M3UA (RFC 4666), sans-IO: bytes in, events out, bytes to send; no sockets, no clock.

One :class:`Asp` is one end of one SCTP association carrying M3UA. The OCS is the server
end (it acknowledges ASP Up and ASP Active and answers heartbeats, as an IPSP or SGP does);
the MSC simulator is the client end (it brings the ASP up, then active). DATA flows only while
the ASP is active (RFC 4666 §4.3.4.2). Whatever cannot be read is answered with an ERR whose
Error Code says why (§3.8.1) and changes no state.

SCTP keeps message boundaries, but a kernel SCTP socket read through a stream (and a test
feeding bytes) may not: :meth:`Asp.receive_data` frames by the header's length either way.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from protocols.sigtran.constants import (
    AS_ACTIVE,
    ASPAC,
    ASPAC_ACK,
    ASPDN,
    ASPDN_ACK,
    ASPIA,
    ASPIA_ACK,
    ASPUP,
    ASPUP_ACK,
    BEAT,
    BEAT_ACK,
    DATA,
    DAUD,
    DAVA,
    ERR,
    M3UA_HEADER,
    M3UA_MAX_MESSAGE,
    M3UA_VERSION,
    MESSAGE_NAMES,
    NTFY,
    SI_SCCP,
    STATUS_AS_STATE_CHANGE,
    TRAFFIC_OVERRIDE,
    ErrorCode,
    MsgClass,
    Tag,
)
from protocols.sigtran.errors import M3uaError

_HEADER: Final = struct.Struct("!BBBBI")
_PARAM: Final = struct.Struct("!HH")
_PROTOCOL_DATA: Final = struct.Struct("!IIBBBB")


@dataclass(frozen=True, slots=True)
class M3uaMessage:
    """One M3UA message: its class, type and parameters (tag, value) in order."""

    msg_class: int
    msg_type: int
    params: tuple[tuple[int, bytes], ...] = ()

    @property
    def kind(self) -> tuple[int, int]:
        return (self.msg_class, self.msg_type)

    @property
    def name(self) -> str:
        return MESSAGE_NAMES.get(self.kind, f"{self.msg_class}/{self.msg_type}")

    def get(self, tag: int) -> bytes | None:
        for t, v in self.params:
            if t == tag:
                return v
        return None

    def get_u32(self, tag: int) -> int | None:
        v = self.get(tag)
        if v is None:
            return None
        if len(v) < 4:
            raise M3uaError(ErrorCode.PARAMETER_FIELD_ERROR, f"parameter {tag:#06x} too short")
        return int.from_bytes(v[:4], "big")


@dataclass(frozen=True, slots=True)
class ProtocolData:
    """The Protocol Data parameter of DATA (RFC 4666 §3.3.1): the MTP3 routing label and the
    user's message (here an SCCP message, SI 3)."""

    opc: int
    dpc: int
    data: bytes
    si: int = SI_SCCP
    ni: int = 0
    mp: int = 0
    sls: int = 0

    def encode(self) -> bytes:
        head = _PROTOCOL_DATA.pack(self.opc, self.dpc, self.si, self.ni, self.mp, self.sls)
        return head + self.data

    @classmethod
    def decode(cls, value: bytes) -> ProtocolData:
        if len(value) < _PROTOCOL_DATA.size:
            raise M3uaError(ErrorCode.PARAMETER_FIELD_ERROR, "Protocol Data shorter than 12")
        opc, dpc, si, ni, mp, sls = _PROTOCOL_DATA.unpack_from(value)
        return cls(opc, dpc, value[_PROTOCOL_DATA.size :], si, ni, mp, sls)


def encode(msg: M3uaMessage) -> bytes:
    """The bytes of a message (parameters padded to four octets, RFC 4666 §3.2)."""
    body = bytearray()
    for tag, value in msg.params:
        body += _PARAM.pack(tag, 4 + len(value)) + value
        body += b"\0" * (-len(value) % 4)
    return _HEADER.pack(M3UA_VERSION, 0, msg.msg_class, msg.msg_type, 8 + len(body)) + body


def decode(data: bytes) -> M3uaMessage:
    """One whole message; M3uaError says what is wrong (and so which ERR answers it)."""
    if len(data) < M3UA_HEADER:
        raise M3uaError(ErrorCode.PROTOCOL_ERROR, "shorter than the common header")
    version, _, cls, typ, length = _HEADER.unpack_from(data)
    if version != M3UA_VERSION:
        raise M3uaError(ErrorCode.INVALID_VERSION, f"version {version}", data[:M3UA_HEADER])
    if length != len(data) or length % 4:
        raise M3uaError(ErrorCode.PARAMETER_FIELD_ERROR, f"length {length} of {len(data)}")
    if cls not in MsgClass.__members__.values() or cls == MsgClass.RKM:
        raise M3uaError(ErrorCode.UNSUPPORTED_MESSAGE_CLASS, f"class {cls}", data[:40])
    if (cls, typ) not in MESSAGE_NAMES:
        raise M3uaError(ErrorCode.UNSUPPORTED_MESSAGE_TYPE, f"type {cls}/{typ}", data[:40])
    params = []
    pos = M3UA_HEADER
    while pos < length:
        if pos + 4 > length:
            raise M3uaError(ErrorCode.PARAMETER_FIELD_ERROR, "truncated parameter", data[:40])
        tag, plen = _PARAM.unpack_from(data, pos)
        if plen < 4 or pos + plen > length:
            raise M3uaError(ErrorCode.PARAMETER_FIELD_ERROR, f"parameter {tag:#06x} length "
                            f"{plen}", data[:40])  # fmt: skip
        params.append((tag, bytes(data[pos + 4 : pos + plen])))
        pos += plen + (-plen % 4)
    return M3uaMessage(cls, typ, tuple(params))


def _data(chunk: bytes) -> ProtocolData | None:
    """The Protocol Data of a well-formed DATA message whose only checks are its own (no
    routing context or network appearance to compare), or None: then :func:`decode` and
    the state machine read it, and say what is wrong with it."""
    length = len(chunk)
    if chunk[0] != M3UA_VERSION or int.from_bytes(chunk[4:8], "big") != length or length % 4:
        return None
    pos = M3UA_HEADER
    value = None
    while pos < length:
        if pos + 4 > length:
            return None
        tag, plen = _PARAM.unpack_from(chunk, pos)
        if plen < 4 or pos + plen > length:
            return None
        if tag == Tag.PROTOCOL_DATA:
            value = chunk[pos + 4 : pos + plen]
        elif tag in (Tag.ROUTING_CONTEXT, Tag.NETWORK_APPEARANCE) and plen < 8:
            return None
        pos += plen + (-plen % 4)
    if value is None or len(value) < _PROTOCOL_DATA.size:
        return None
    opc, dpc, si, ni, mp, sls = _PROTOCOL_DATA.unpack_from(value)
    return ProtocolData(opc, dpc, value[_PROTOCOL_DATA.size :], si, ni, mp, sls)


def u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def error_message(err: M3uaError, routing_context: int | None = None) -> M3uaMessage:
    params: list[tuple[int, bytes]] = [(Tag.ERROR_CODE, u32(err.code))]
    if routing_context is not None:
        params.append((Tag.ROUTING_CONTEXT, u32(routing_context)))
    if err.diagnostic:
        params.append((Tag.DIAGNOSTIC_INFO, err.diagnostic))
    return M3uaMessage(*ERR, tuple(params))


# -- the ASP state machine ------------------------------------------------------------------


class AspState(Enum):
    DOWN = "ASP-DOWN"
    INACTIVE = "ASP-INACTIVE"
    ACTIVE = "ASP-ACTIVE"


@dataclass(frozen=True, slots=True)
class Transfer:
    """A DATA message's payload arrived (the ASP is active)."""

    data: ProtocolData
    stream: int = 0


@dataclass(frozen=True, slots=True)
class StateChanged:
    state: AspState


@dataclass(frozen=True, slots=True)
class Notified:
    """The peer sent NTFY or ERR (for the log; no state changes)."""

    message: M3uaMessage


@dataclass(frozen=True, slots=True)
class Rejected:
    """We answered a message with ERR."""

    error: M3uaError


Event = Transfer | StateChanged | Notified | Rejected

#: The server end's transitions: (state, message) -> (new state, answer). One table (h11's
#: _state.py): anything not here in the ASPSM/ASPTM classes is an Unexpected Message.
_SERVER: Final[dict[tuple[AspState, tuple[int, int]], tuple[AspState, tuple[int, int]]]] = {
    (AspState.DOWN, ASPUP): (AspState.INACTIVE, ASPUP_ACK),
    (AspState.INACTIVE, ASPUP): (AspState.INACTIVE, ASPUP_ACK),
    (AspState.ACTIVE, ASPUP): (AspState.INACTIVE, ASPUP_ACK),
    (AspState.INACTIVE, ASPAC): (AspState.ACTIVE, ASPAC_ACK),
    (AspState.ACTIVE, ASPAC): (AspState.ACTIVE, ASPAC_ACK),
    (AspState.ACTIVE, ASPIA): (AspState.INACTIVE, ASPIA_ACK),
    (AspState.INACTIVE, ASPIA): (AspState.INACTIVE, ASPIA_ACK),
    (AspState.DOWN, ASPDN): (AspState.DOWN, ASPDN_ACK),
    (AspState.INACTIVE, ASPDN): (AspState.DOWN, ASPDN_ACK),
    (AspState.ACTIVE, ASPDN): (AspState.DOWN, ASPDN_ACK),
}
#: The client end's: acknowledgements move it on.
_CLIENT: Final[dict[tuple[AspState, tuple[int, int]], AspState]] = {
    (AspState.DOWN, ASPUP_ACK): AspState.INACTIVE,
    (AspState.INACTIVE, ASPAC_ACK): AspState.ACTIVE,
    (AspState.ACTIVE, ASPIA_ACK): AspState.INACTIVE,
    (AspState.INACTIVE, ASPDN_ACK): AspState.DOWN,
    (AspState.ACTIVE, ASPDN_ACK): AspState.DOWN,
}


@dataclass
class Asp:
    """One end of an M3UA association.

    ``server``: answer ASPUP/ASPAC (the OCS); else bring the ASP up and active (a simulator).
    ``routing_context``: the AS's Routing Context, sent in ASPAC and DATA, and checked in them
    when given; ``network_appearance`` likewise. ``max_message`` bounds one message.
    """

    server: bool = True
    routing_context: int | None = None
    network_appearance: int | None = None
    max_message: int = M3UA_MAX_MESSAGE
    state: AspState = AspState.DOWN
    _buffer: bytearray = field(default_factory=bytearray)
    _events: list[Event] = field(default_factory=list)
    #: (stream, bytes) to send, in order.
    _out: list[tuple[int, bytes]] = field(default_factory=list)
    #: The routing context and network appearance parameters of DATA, encoded once.
    _context_bytes: bytes | None = None

    # -- sans-IO surface --------------------------------------------------------------------

    def receive_data(self, data: bytes, stream: int = 0) -> None:
        """Bytes from the association on SCTP stream ``stream``: one whole message, as SCTP
        delivers them; or, with ``stream`` -1 (a transport read as a byte stream), any part
        of one or more messages, framed by the header's length."""
        if stream >= 0:
            self._receive(bytes(data), stream)
            return
        self._buffer += data
        while len(self._buffer) >= M3UA_HEADER:
            length = int.from_bytes(self._buffer[4:8], "big")
            if (
                self._buffer[0] != M3UA_VERSION
                or length < M3UA_HEADER
                or (length > self.max_message)
            ):
                # Framing is lost: answer once and drop what is buffered (RFC 4666 §3.8.1).
                chunk, self._buffer = bytes(self._buffer), bytearray()
                self.reject(self._framing_error(chunk))
                return
            if len(self._buffer) < length:
                return
            chunk = bytes(self._buffer[:length])
            del self._buffer[:length]
            self._receive(chunk, stream)

    def next_event(self) -> Event | None:
        """The next event, or None (need more data)."""
        return self._events.pop(0) if self._events else None

    def events(self) -> list[Event]:
        out, self._events = self._events, []
        return out

    def data_to_send(self) -> list[tuple[int, bytes]]:
        """(SCTP stream, message) pairs to send, in order; management on stream 0."""
        out, self._out = self._out, []
        return out

    # -- what the user sends ----------------------------------------------------------------

    def start(self) -> None:
        """Client: bring the ASP up (then active, when ASPUP_ACK arrives)."""
        self._send(M3uaMessage(*ASPUP))

    def send_data(self, pd: ProtocolData, stream: int = 1) -> None:
        """DATA on ``stream`` (RFC 4666 §1.4.7: not stream 0; the SLS picks it)."""
        if self.state is not AspState.ACTIVE:
            raise M3uaError(ErrorCode.UNEXPECTED_MESSAGE, f"DATA while {self.state.value}")
        # What encode(M3uaMessage(*DATA, (*context, (PROTOCOL_DATA, value)))) writes, without
        # the message object: the bulk of the traffic.
        value = pd.encode()
        n = len(value)
        context = self._context_bytes
        if context is None:
            context = self._context_bytes = encode(M3uaMessage(*DATA, self._context()))[8:]
        self._out.append((stream, b"".join((
            _HEADER.pack(M3UA_VERSION, 0, DATA[0], DATA[1], 12 + len(context) + n + (-n % 4)),
            context, _PARAM.pack(Tag.PROTOCOL_DATA, 4 + n), value, b"\0" * (-n % 4)))))  # fmt: skip

    def heartbeat(self, payload: bytes = b"") -> None:
        self._send(M3uaMessage(*BEAT, ((Tag.HEARTBEAT_DATA, payload),) if payload else ()))

    def stop(self) -> None:
        """Client: take the ASP down."""
        self._send(M3uaMessage(*ASPDN))

    # -- internals --------------------------------------------------------------------------

    def _context(self) -> tuple[tuple[int, bytes], ...]:
        out: list[tuple[int, bytes]] = []
        if self.network_appearance is not None:
            out.append((Tag.NETWORK_APPEARANCE, u32(self.network_appearance)))
        if self.routing_context is not None:
            out.append((Tag.ROUTING_CONTEXT, u32(self.routing_context)))
        return tuple(out)

    def _send(self, msg: M3uaMessage, stream: int = 0) -> None:
        self._out.append((stream, encode(msg)))

    def _framing_error(self, chunk: bytes) -> M3uaError:
        if chunk[0] != M3UA_VERSION:
            return M3uaError(ErrorCode.INVALID_VERSION, f"version {chunk[0]}", chunk[:M3UA_HEADER])
        return M3uaError(ErrorCode.PARAMETER_FIELD_ERROR, "message length", chunk[:M3UA_HEADER])

    def reject(self, err: M3uaError) -> None:
        self._send(error_message(err, self.routing_context))
        self._events.append(Rejected(err))

    def _receive(self, chunk: bytes, stream: int) -> None:
        if (
            chunk[2:4] == b"\x01\x01"  # DATA, the bulk of the traffic: read it directly
            and self.state is AspState.ACTIVE
            and (stream != 0 or not self.server)
            and self.routing_context is None
            and self.network_appearance is None
        ):
            pd = _data(chunk)
            if pd is not None:
                self._events.append(Transfer(pd, stream))
                return
        try:
            msg = decode(chunk)
            self._dispatch(msg, stream)
        except M3uaError as err:
            self.reject(err)

    def _check_context(self, msg: M3uaMessage) -> None:
        rc = msg.get_u32(Tag.ROUTING_CONTEXT)
        if self.routing_context is not None and rc is not None and rc != self.routing_context:
            raise M3uaError(ErrorCode.INVALID_ROUTING_CONTEXT, f"routing context {rc}",
                            u32(rc))  # fmt: skip
        na = msg.get_u32(Tag.NETWORK_APPEARANCE)
        if (
            self.network_appearance is not None
            and na is not None
            and (na != self.network_appearance)
        ):
            raise M3uaError(ErrorCode.INVALID_NETWORK_APPEARANCE, f"network appearance {na}")

    def _dispatch(self, msg: M3uaMessage, stream: int) -> None:
        kind = msg.kind
        if kind == BEAT:
            # RFC 4666 §3.5.5: the Heartbeat Data comes back unchanged, in any state.
            self._send(M3uaMessage(*BEAT_ACK, msg.params))
            return
        if kind in (NTFY, ERR, BEAT_ACK):
            self._events.append(Notified(msg))
            return
        if kind == DATA:
            if self.state is not AspState.ACTIVE:
                raise M3uaError(ErrorCode.UNEXPECTED_MESSAGE, f"DATA while {self.state.value}")
            if stream == 0 and self.server:
                # (-1: a transport without streams, such as kernel SCTP read as a stream)
                raise M3uaError(ErrorCode.INVALID_STREAM_IDENTIFIER, "DATA on stream 0")
            self._check_context(msg)
            value = msg.get(Tag.PROTOCOL_DATA)
            if value is None:
                raise M3uaError(ErrorCode.MISSING_PARAMETER, "DATA without Protocol Data")
            self._events.append(Transfer(ProtocolData.decode(value), stream))
            return
        if kind == DAUD:
            # Destination audit: every destination we serve is available (we are the end).
            self._send(M3uaMessage(*DAVA, tuple(p for p in msg.params if p[0] in (
                Tag.ROUTING_CONTEXT, Tag.AFFECTED_POINT_CODE))))  # fmt: skip
            return
        if self.server:
            self._server_transition(msg)
        else:
            self._client_transition(msg)

    def _server_transition(self, msg: M3uaMessage) -> None:
        found = _SERVER.get((self.state, msg.kind))
        if found is None:
            raise M3uaError(ErrorCode.UNEXPECTED_MESSAGE, f"{msg.name} while {self.state.value}")
        new, answer = found
        params: tuple[tuple[int, bytes], ...] = ()
        if msg.kind == ASPAC:
            self._check_context(msg)
            mode = msg.get_u32(Tag.TRAFFIC_MODE)
            if mode is not None and mode not in (1, 2, 3):
                raise M3uaError(ErrorCode.UNSUPPORTED_TRAFFIC_MODE, f"traffic mode {mode}")
            params = tuple(p for p in msg.params if p[0] in (Tag.TRAFFIC_MODE,
                                                              Tag.ROUTING_CONTEXT))  # fmt: skip
        elif msg.kind in (ASPUP, ASPDN):
            asp_id = msg.get(Tag.ASP_IDENTIFIER)
            params = ((Tag.ASP_IDENTIFIER, asp_id),) if asp_id is not None else ()
        self._send(M3uaMessage(*answer, params))
        if new is not self.state:
            self.state = new
            self._events.append(StateChanged(new))
            if new is AspState.ACTIVE:
                status = (STATUS_AS_STATE_CHANGE << 16 | AS_ACTIVE).to_bytes(4, "big")
                self._send(M3uaMessage(*NTFY, ((Tag.STATUS, status), *self._context())))

    def _client_transition(self, msg: M3uaMessage) -> None:
        new = _CLIENT.get((self.state, msg.kind))
        if new is None:
            raise M3uaError(ErrorCode.UNEXPECTED_MESSAGE, f"{msg.name} while {self.state.value}")
        self.state = new
        self._events.append(StateChanged(new))
        if new is AspState.INACTIVE and msg.kind == ASPUP_ACK:
            self._send(M3uaMessage(*ASPAC, (
                (Tag.TRAFFIC_MODE, u32(TRAFFIC_OVERRIDE)), *self._context())))  # fmt: skip


def messages(data: Iterable[tuple[int, bytes]]) -> list[M3uaMessage]:
    """Decode what an :class:`Asp` sends (for tests and simulators)."""
    return [decode(b) for _, b in data]
