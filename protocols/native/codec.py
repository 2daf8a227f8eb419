"""Sans-IO codec of the native charging protocol (modelled on h11).

A frame is a 4-byte big-endian unsigned length N followed by N bytes holding one msgpack map
with string keys. Requests carry ``id`` (uint32) and ``verb``; replies carry the same ``id``
and a ``result``. See ``docs/native-protocol.md``.

No I/O happens here: feed bytes with ``receive_data``, take typed events out with
``next_event`` until it returns :data:`NEED_DATA`, and turn events into bytes with ``send``.
The same classes serve asyncio (``server.py``, ``client.py``), gevent (Locust) and tests.

Two kinds of bad input are told apart:

* a well-framed map with a readable ``id`` that fails validation (unknown verb, missing field,
  wrong type, out of range) becomes an :class:`InvalidRequest` event; the server answers it
  with ``invalid-request`` and keeps the connection;
* anything else (length over ``max_frame``, bad msgpack, not a map, a key that is not a
  string or appears twice in its map, nesting deeper than ``MAX_NESTING``, no valid ``id``)
  raises
  :class:`~protocols.native.errors.ProtocolError`; the stream cannot be trusted any more, the
  server sends ``exc.reply`` (id 0) and closes. Every later ``next_event`` raises it again.

The decoder raises nothing but ``ProtocolError`` on any input (the tests fuzz it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, Final, TypeAlias, cast

import msgpack

from protocols.native.constants import (
    DEFAULT_MAX_FRAME,
    HELLO_CONTEXT,
    LENGTH_PREFIX_SIZE,
    MAC_SIZE,
    MAX_ARRAY_LEN,
    MAX_DESTINATION_LEN,
    MAX_DETAIL_LEN,
    MAX_ID,
    MAX_KEY_ID_LEN,
    MAX_KEY_LEN,
    MAX_LOCATION_LEN,
    MAX_MAP_LEN,
    MAX_NESTING,
    MAX_SEQ,
    MAX_SERVICE_LEN,
    MAX_SESSION_LEN,
    MAX_SUBSCRIBER_LEN,
    MAX_UNITS,
    MIN_MAX_FRAME,
    NONCE_SIZE,
    RESULT_HELLO,
    RESULT_INVALID_REQUEST,
    RESULT_SUCCESS,
    VERB_BALANCE,
    VERB_COMMIT,
    VERB_DEBIT,
    VERB_HELLO,
    VERB_PING,
    VERB_RELEASE,
    VERB_RESERVE,
)
from protocols.native.errors import LocalProtocolError, ProtocolError

__all__ = [
    "NEED_DATA",
    "Balance",
    "Challenge",
    "ChargingRequest",
    "ClientConnection",
    "Commit",
    "Debit",
    "Hello",
    "InvalidRequest",
    "NeedData",
    "Ping",
    "Release",
    "Reply",
    "Request",
    "Reserve",
    "ServerConnection",
    "charge_reply",
    "encode_frame",
    "hello_mac",
]


class NeedData(Enum):
    """Type of the :data:`NEED_DATA` sentinel."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by ``next_event`` when the buffer holds no complete frame.
NEED_DATA: Final = NeedData.NEED_DATA


# --- events ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reserve:
    """Open a session or ask for another slice: hold credit for up to ``units`` units.

    ``units`` None: the server decides (the service's default quota). ``session`` + ``seq``
    is the idempotency key.
    """

    verb: ClassVar[str] = VERB_RESERVE
    id: int
    session: str
    subscriber: str
    service: str
    seq: int
    units: int | None = None
    destination: str = ""
    location: str = ""


@dataclass(frozen=True, slots=True)
class Commit:
    """Report ``used`` units of a session and reserve the next slice.

    ``units`` None: the next slice is the server's default quota; 0: no next slice.
    ``subscriber`` (optional, "" = not given) tells the server whose session it is, which
    spares it a lookup; the session alone identifies it.
    """

    verb: ClassVar[str] = VERB_COMMIT
    id: int
    session: str
    seq: int
    used: int
    units: int | None = None
    subscriber: str = ""


@dataclass(frozen=True, slots=True)
class Release:
    """End a session: debit the final ``used`` units and free the rest of the hold.

    ``subscriber``: optional, as for :class:`Commit`.
    """

    verb: ClassVar[str] = VERB_RELEASE
    id: int
    session: str
    seq: int
    used: int = 0
    subscriber: str = ""


@dataclass(frozen=True, slots=True)
class Debit:
    """Rate and debit ``units`` at once (an SMS, a purchase). ``key`` makes it idempotent.

    ``force`` debits even past the credit limit (the usage already happened).
    """

    verb: ClassVar[str] = VERB_DEBIT
    id: int
    subscriber: str
    service: str
    key: str
    units: int = 1
    destination: str = ""
    location: str = ""
    force: bool = False


@dataclass(frozen=True, slots=True)
class Balance:
    """Ask for a subscriber's balance."""

    verb: ClassVar[str] = VERB_BALANCE
    id: int
    subscriber: str


@dataclass(frozen=True, slots=True)
class Ping:
    """Liveness check; answered with result ``success``."""

    verb: ClassVar[str] = VERB_PING
    id: int


@dataclass(frozen=True, slots=True)
class Hello:
    """The client's first request when the server challenged it: ``key`` names the shared
    secret, ``mac`` is :func:`hello_mac` over the server's nonce."""

    verb: ClassVar[str] = VERB_HELLO
    id: int
    key: str
    mac: bytes


@dataclass(frozen=True, slots=True)
class Challenge:
    """The server's first frame on a connection that must authenticate: a fresh nonce."""

    nonce: bytes


def hello_mac(secret: bytes, nonce: bytes, key: str) -> bytes:
    """HMAC-SHA256 of the handshake: over a fixed context, the server's nonce and the key id
    (so a MAC is good for one connection and one key only)."""
    return hmac.new(secret, HELLO_CONTEXT + nonce + key.encode(), hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class InvalidRequest:
    """A readable frame with a valid ``id`` whose request is not valid.

    The server answers ``invalid-request`` with ``detail`` and keeps the connection.
    """

    id: int
    detail: str


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to one request, matched to it by ``id``.

    Charge verbs (reserve, commit, release, debit) fill ``granted``, ``final``, ``charged``,
    ``buckets`` (units taken from unit buckets), ``balance`` and ``validity`` (seconds);
    ``balance`` fills ``balance``, ``reserved``, ``available``, ``credit_limit``, ``state`` and
    ``plan``. Money is integer micro-units. Fields at their default are left off the wire.
    """

    id: int
    result: str
    granted: int = 0
    final: bool = False
    charged: int = 0
    buckets: int = 0
    balance: int = 0
    validity: int = 0
    reserved: int = 0
    available: int = 0
    credit_limit: int = 0
    state: str = ""
    plan: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        """True when ``result`` is ``success``."""
        return self.result == RESULT_SUCCESS


def _positional_new(cls: type[Any]) -> Callable[..., Any]:
    """A constructor of the frozen slotted dataclass ``cls`` that takes every field in order
    and sets the slots through their descriptors. The events stay frozen; this only spares
    the per-field ``object.__setattr__`` of a frozen dataclass's ``__init__`` (2-3x the cost
    of setting a slot), for the events built once per request on the hot path."""
    names = [f.name for f in dataclasses.fields(cls)]
    env: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    env.update({f"_set_{n}": cls.__dict__[n].__set__ for n in names})
    body = "".join(f"    _set_{n}(o, {n})\n" for n in names)
    exec(f"def new({', '.join(names)}):\n    o = _new(_cls)\n{body}    return o\n", env)
    return cast(Callable[..., Any], env["new"])


_new_reserve: Final = _positional_new(Reserve)
_new_commit: Final = _positional_new(Commit)
_new_release: Final = _positional_new(Release)
_new_reply: Final = _positional_new(Reply)


def charge_reply(
    id: int,
    result: str,
    granted: int,
    final: bool,
    charged: int,
    buckets: int,
    balance: int,
    validity: int,
    detail: str,
) -> Reply:
    """``Reply(id, result, granted=..., ..., detail=...)`` of a charge verb, built faster
    (see :func:`_positional_new`): what a handler answers each charging request with."""
    return cast(
        Reply,
        _new_reply(id, result, granted, final, charged, buckets, balance, validity, 0, 0, 0,
                   "", "", detail),
    )  # fmt: skip


#: Requests a charging handler answers.
ChargingRequest: TypeAlias = Reserve | Commit | Release | Debit | Balance
#: Every request event.
Request: TypeAlias = Reserve | Commit | Release | Debit | Balance | Ping | Hello


# --- framing ---------------------------------------------------------------------------------

_LENGTH: Final = struct.Struct(">I")


def encode_frame(message: dict[str, Any], max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Encode one msgpack map as a length-prefixed frame (a helper for tests and tools)."""
    payload: bytes = msgpack.packb(message, use_bin_type=True)
    if len(payload) > max_frame:
        raise LocalProtocolError(f"frame of {len(payload)} bytes is over max_frame {max_frame}")
    return _LENGTH.pack(len(payload)) + payload


class _Framer:
    """Splits the byte stream into msgpack maps; shared by both roles."""

    __slots__ = ("_buf", "_error", "_limits", "_packer", "_pos", "max_frame")

    def __init__(self, max_frame: int) -> None:
        if type(max_frame) is not int or not MIN_MAX_FRAME <= max_frame <= 2**32 - 1:
            raise ValueError(f"max_frame must be an int in {MIN_MAX_FRAME}..2**32-1")
        self.max_frame = max_frame
        self._buf = bytearray()
        #: Where the next frame starts in _buf (consumed frames are cut off when data comes,
        #: not one by one: a burst of N frames costs one move of the buffer, not N).
        self._pos = 0
        self._error: ProtocolError | None = None
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=True)
        # msgpack's own guards, so that a hostile frame cannot make it allocate much more
        # than the frame itself: no string or blob longer than the frame, short containers.
        self._limits: dict[str, Any] = {
            "raw": False,
            "strict_map_key": True,
            "use_list": True,
            "max_str_len": max_frame,
            "max_bin_len": max_frame,
            "max_ext_len": max_frame,
            "max_array_len": MAX_ARRAY_LEN,
            "max_map_len": MAX_MAP_LEN,
        }

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes received from the peer to the buffer."""
        if self._error is None:
            if self._pos:
                del self._buf[: self._pos]
                self._pos = 0
            self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed by ``next_event``."""
        return len(self._buf) - self._pos

    def _fail(self, detail: str) -> ProtocolError:
        reply = Reply(0, RESULT_INVALID_REQUEST, detail=detail[:MAX_DETAIL_LEN])
        self._error = ProtocolError(reply)
        self._buf.clear()
        self._pos = 0
        return self._error

    def _next_map(self) -> dict[Any, Any] | None:
        """The next complete map, None if more data is needed; ProtocolError if broken."""
        if self._error is not None:
            raise self._error
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < LENGTH_PREFIX_SIZE:
            return None
        (size,) = _LENGTH.unpack_from(buf, pos)
        if size > self.max_frame:
            raise self._fail(f"frame length {size} is over max_frame {self.max_frame}")
        end = pos + LENGTH_PREFIX_SIZE + size
        if len(buf) < end:
            return None
        payload = buf[pos + LENGTH_PREFIX_SIZE : end]
        if end == len(buf):
            buf.clear()
            self._pos = 0
        else:
            self._pos = end
        try:
            message = msgpack.unpackb(payload, **self._limits)
        except Exception as exc:
            # msgpack raises ValueError, ExtraData, FormatError, StackError, UnicodeDecodeError
            # and others; all mean the same to us. Chain for whoever logs it.
            raise self._fail(f"bad msgpack: {type(exc).__name__}") from exc
        if type(message) is not dict:
            raise self._fail(f"payload is a {type(message).__name__}, not a map")
        # msgpack keeps the last of repeated keys and takes bin keys: neither is allowed (the
        # first would be silently dropped). The map's header says how many entries it has.
        if len(message) != _map_size(payload):
            raise self._fail("a key appears twice in the map")
        for key, value in message.items():
            if type(key) is not str or type(value) is dict or type(value) is list:
                # Rare (requests are flat maps of scalars): check every nested map too.
                problem = _strict_problem(payload)
                if problem is not None:
                    raise self._fail(problem)
                break
        return message

    def _message_id(self, message: dict[Any, Any]) -> int:
        message_id = message.get("id")
        if type(message_id) is not int or not 0 <= message_id <= MAX_ID:
            raise self._fail("missing or invalid id (must be an integer 0..2**32-1)")
        return message_id

    def _frame(self, message: dict[str, Any]) -> bytes:
        try:
            payload = cast(bytes, self._packer.pack(message))
        except (TypeError, ValueError, OverflowError) as exc:
            self._packer.reset()
            raise LocalProtocolError(f"cannot encode message: {exc}") from exc
        if len(payload) > self.max_frame:
            raise LocalProtocolError(
                f"frame of {len(payload)} bytes is over max_frame {self.max_frame}"
            )
        return _LENGTH.pack(len(payload)) + payload


def _map_size(payload: bytes | bytearray) -> int:
    """The entry count in the header of the msgpack map that ``payload`` starts with."""
    first = payload[0]
    if first <= 0x8F:  # fixmap
        return first & 0x0F
    if first == 0xDE:  # map 16
        return int.from_bytes(payload[1:3], "big")
    return int.from_bytes(payload[1:5], "big")  # map 32


class _Bad(ValueError):
    pass


def _pairs(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Bad("a key appears twice in a map")
    if any(type(k) is not str for k in out):
        raise _Bad("a map key is not a string")
    return out


def _strict_problem(payload: bytes | bytearray) -> str | None:
    """What is wrong with a payload holding maps or arrays, or with a key that is not a
    string: every map's keys strings, each once; nesting at most ``MAX_NESTING`` deep."""
    try:
        message = msgpack.unpackb(payload, raw=False, object_pairs_hook=_pairs)
    except _Bad as exc:
        return str(exc)
    except Exception as exc:
        return f"bad msgpack: {type(exc).__name__}"
    todo: list[tuple[Any, int]] = [(message, 1)]
    while todo:
        item, level = todo.pop()
        if level > MAX_NESTING:
            return f"maps and arrays nested deeper than {MAX_NESTING}"
        if type(item) is dict:
            todo.extend((v, level + 1) for v in item.values())
        elif type(item) is list:
            todo.extend((v, level + 1) for v in item)
    return None


# --- request validation ----------------------------------------------------------------------


class _Invalid(Exception):
    """A field failed validation; becomes an InvalidRequest event."""


def _str(message: dict[Any, Any], name: str, max_len: int, min_len: int = 1) -> str | None:
    value = message.get(name)
    if value is None:
        return None
    if type(value) is not str:
        raise _Invalid(f"field {name!r} must be a string")
    if not min_len <= len(value) <= max_len:
        raise _Invalid(f"field {name!r} must be {min_len}..{max_len} characters")
    return value


def _required_str(message: dict[Any, Any], name: str, max_len: int) -> str:
    value = _str(message, name, max_len)
    if value is None:
        raise _Invalid(f"missing field {name!r}")
    return value


def _int(message: dict[Any, Any], name: str, low: int, high: int) -> int | None:
    value = message.get(name)
    if value is None:
        return None
    # type() rather than isinstance(): bool is an int subclass and is not a count.
    if type(value) is not int:
        raise _Invalid(f"field {name!r} must be an integer")
    if not low <= value <= high:
        raise _Invalid(f"field {name!r} must be in {low}..{high}")
    return value


def _required_int(message: dict[Any, Any], name: str, low: int, high: int) -> int:
    value = _int(message, name, low, high)
    if value is None:
        raise _Invalid(f"missing field {name!r}")
    return value


def _bool(message: dict[Any, Any], name: str) -> bool:
    value = message.get(name)
    if value is None:
        return False
    if type(value) is not bool:
        raise _Invalid(f"field {name!r} must be a boolean")
    return value


def _parse_reserve(request_id: int, m: dict[Any, Any]) -> Reserve:
    return _new_reserve(  # type: ignore[no-any-return]
        request_id,
        _required_str(m, "session", MAX_SESSION_LEN),
        _required_str(m, "subscriber", MAX_SUBSCRIBER_LEN),
        _required_str(m, "service", MAX_SERVICE_LEN),
        _required_int(m, "seq", 0, MAX_SEQ),
        _int(m, "units", 0, MAX_UNITS),
        _str(m, "destination", MAX_DESTINATION_LEN, 0) or "",
        _str(m, "location", MAX_LOCATION_LEN, 0) or "",
    )


def _parse_commit(request_id: int, m: dict[Any, Any]) -> Commit:
    return _new_commit(  # type: ignore[no-any-return]
        request_id,
        _required_str(m, "session", MAX_SESSION_LEN),
        _required_int(m, "seq", 0, MAX_SEQ),
        _required_int(m, "used", 0, MAX_UNITS),
        _int(m, "units", 0, MAX_UNITS),
        _str(m, "subscriber", MAX_SUBSCRIBER_LEN, 0) or "",
    )


def _parse_release(request_id: int, m: dict[Any, Any]) -> Release:
    used = _int(m, "used", 0, MAX_UNITS)
    return _new_release(  # type: ignore[no-any-return]
        request_id,
        _required_str(m, "session", MAX_SESSION_LEN),
        _required_int(m, "seq", 0, MAX_SEQ),
        0 if used is None else used,
        _str(m, "subscriber", MAX_SUBSCRIBER_LEN, 0) or "",
    )


def _parse_debit(request_id: int, m: dict[Any, Any]) -> Debit:
    units = _int(m, "units", 1, MAX_UNITS)
    return Debit(
        request_id,
        _required_str(m, "subscriber", MAX_SUBSCRIBER_LEN),
        _required_str(m, "service", MAX_SERVICE_LEN),
        _required_str(m, "key", MAX_KEY_LEN),
        1 if units is None else units,
        _str(m, "destination", MAX_DESTINATION_LEN, 0) or "",
        _str(m, "location", MAX_LOCATION_LEN, 0) or "",
        _bool(m, "force"),
    )


def _parse_balance(request_id: int, m: dict[Any, Any]) -> Balance:
    return Balance(request_id, _required_str(m, "subscriber", MAX_SUBSCRIBER_LEN))


def _parse_ping(request_id: int, m: dict[Any, Any]) -> Ping:
    return Ping(request_id)


def _parse_hello(request_id: int, m: dict[Any, Any]) -> Hello:
    mac = m.get("mac")
    if type(mac) is not bytes or len(mac) != MAC_SIZE:
        raise _Invalid(f"field 'mac' must be {MAC_SIZE} bytes")
    return Hello(request_id, _required_str(m, "key", MAX_KEY_ID_LEN), mac)


_PARSERS: Final[dict[str, Any]] = {
    VERB_RESERVE: _parse_reserve,
    VERB_COMMIT: _parse_commit,
    VERB_RELEASE: _parse_release,
    VERB_DEBIT: _parse_debit,
    VERB_BALANCE: _parse_balance,
    VERB_PING: _parse_ping,
    VERB_HELLO: _parse_hello,
}


def _encode_request(request: Request) -> dict[str, Any]:
    # Optional fields at their default are left off the wire; the decoder restores them.
    if type(request) is Reserve:
        m: dict[str, Any] = {
            "id": request.id,
            "verb": VERB_RESERVE,
            "session": request.session,
            "subscriber": request.subscriber,
            "service": request.service,
            "seq": request.seq,
        }
        if request.units is not None:
            m["units"] = request.units
        if request.destination:
            m["destination"] = request.destination
        if request.location:
            m["location"] = request.location
        return m
    if type(request) is Commit:
        m = {
            "id": request.id,
            "verb": VERB_COMMIT,
            "session": request.session,
            "seq": request.seq,
            "used": request.used,
        }
        if request.units is not None:
            m["units"] = request.units
        if request.subscriber:
            m["subscriber"] = request.subscriber
        return m
    if type(request) is Release:
        m = {
            "id": request.id,
            "verb": VERB_RELEASE,
            "session": request.session,
            "seq": request.seq,
            "used": request.used,
        }
        if request.subscriber:
            m["subscriber"] = request.subscriber
        return m
    if type(request) is Debit:
        m = {
            "id": request.id,
            "verb": VERB_DEBIT,
            "subscriber": request.subscriber,
            "service": request.service,
            "key": request.key,
            "units": request.units,
        }
        if request.destination:
            m["destination"] = request.destination
        if request.location:
            m["location"] = request.location
        if request.force:
            m["force"] = True
        return m
    if type(request) is Balance:
        return {"id": request.id, "verb": VERB_BALANCE, "subscriber": request.subscriber}
    if type(request) is Ping:
        return {"id": request.id, "verb": VERB_PING}
    if type(request) is Hello:
        return {"id": request.id, "verb": VERB_HELLO, "key": request.key, "mac": request.mac}
    raise LocalProtocolError(f"not a request event: {request!r}")


# --- replies ---------------------------------------------------------------------------------

_REPLY_INTS: Final = (
    "granted",
    "charged",
    "buckets",
    "balance",
    "validity",
    "reserved",
    "available",
    "credit_limit",
)
_REPLY_STRS: Final = ("state", "plan", "detail")


def _encode_reply(reply: Reply) -> dict[str, Any]:
    m: dict[str, Any] = {"id": reply.id, "result": reply.result}
    if reply.granted:
        m["granted"] = reply.granted
    if reply.final:
        m["final"] = True
    if reply.charged:
        m["charged"] = reply.charged
    if reply.buckets:
        m["buckets"] = reply.buckets
    if reply.balance:
        m["balance"] = reply.balance
    if reply.validity:
        m["validity"] = reply.validity
    if reply.reserved:
        m["reserved"] = reply.reserved
    if reply.available:
        m["available"] = reply.available
    if reply.credit_limit:
        m["credit_limit"] = reply.credit_limit
    if reply.state:
        m["state"] = reply.state
    if reply.plan:
        m["plan"] = reply.plan
    if reply.detail:
        m["detail"] = reply.detail
    return m


# --- connections -----------------------------------------------------------------------------


class ServerConnection(_Framer):
    """The server's side of one connection: reads requests, writes replies.

    ``max_frame`` bounds the payload of one frame in bytes (both directions).
    """

    __slots__ = ()

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        super().__init__(max_frame)

    def next_event(self) -> Request | InvalidRequest | NeedData:
        """The next request, :data:`NEED_DATA`, or ``ProtocolError`` for a broken frame."""
        message = self._next_map()
        if message is None:
            return NEED_DATA
        request_id = self._message_id(message)
        verb = message.get("verb")
        if type(verb) is not str:
            if verb is None:
                return InvalidRequest(request_id, "missing field 'verb'")
            return InvalidRequest(request_id, "field 'verb' must be a string")
        parse = _PARSERS.get(verb)
        if parse is None:
            return InvalidRequest(request_id, f"unknown verb {verb[:64]!r}")
        try:
            request: Request = parse(request_id, message)
        except _Invalid as exc:
            return InvalidRequest(request_id, str(exc))
        return request

    def send(self, reply: Reply | Challenge) -> bytes:
        """The bytes of one reply frame. ``LocalProtocolError`` if it cannot be sent."""
        if type(reply) is Challenge:
            if len(reply.nonce) != NONCE_SIZE:
                raise LocalProtocolError(f"a challenge's nonce is {NONCE_SIZE} bytes")
            return self._frame({"id": 0, "result": RESULT_HELLO, "nonce": reply.nonce})
        if type(reply) is not Reply:
            raise LocalProtocolError(f"a server sends Reply events, not {reply!r}")
        return self._frame(_encode_reply(reply))


class ClientConnection(_Framer):
    """The client's side of one connection: writes requests, reads replies."""

    __slots__ = ()

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        super().__init__(max_frame)

    def next_event(self) -> Reply | Challenge | NeedData:
        """The next reply, the server's :class:`Challenge`, :data:`NEED_DATA`, or
        ``ProtocolError`` if the server is broken.

        A reply with id 0 and a non-success result is the server's answer to a frame it could
        not read; the server closes the connection after it.
        """
        message = self._next_map()
        if message is None:
            return NEED_DATA
        reply_id = self._message_id(message)
        result = message.get("result")
        if type(result) is not str or not result:
            raise self._fail("reply without a result")
        if reply_id == 0 and result == RESULT_HELLO:
            nonce = message.get("nonce")
            if type(nonce) is not bytes or len(nonce) != NONCE_SIZE:
                raise self._fail(f"a challenge's nonce must be {NONCE_SIZE} bytes")
            return Challenge(nonce)
        fields: dict[str, Any] = {}
        for name in _REPLY_INTS:
            value = message.get(name)
            if value is not None:
                if type(value) is not int:
                    raise self._fail(f"reply field {name!r} must be an integer")
                fields[name] = value
        for name in _REPLY_STRS:
            value = message.get(name)
            if value is not None:
                if type(value) is not str:
                    raise self._fail(f"reply field {name!r} must be a string")
                fields[name] = value
        final = message.get("final")
        if final is not None:
            if type(final) is not bool:
                raise self._fail("reply field 'final' must be a boolean")
            fields["final"] = final
        return Reply(reply_id, result, **fields)

    def send(self, request: Request) -> bytes:
        """The bytes of one request frame. ``LocalProtocolError`` if it cannot be sent.

        Fields are not validated here (the server does that); only what msgpack and
        ``max_frame`` cannot carry is refused.
        """
        return self._frame(_encode_request(request))
