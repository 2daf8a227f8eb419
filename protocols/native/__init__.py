"""The native charging protocol: length-prefixed msgpack maps over TCP.

``codec`` is sans-IO (usable from asyncio, gevent or plain sockets); ``server`` and
``client`` carry it over asyncio. See ``docs/native-protocol.md``.
"""

from __future__ import annotations

from protocols.native.client import NativeClient
from protocols.native.codec import (
    NEED_DATA,
    Balance,
    ChargingRequest,
    ClientConnection,
    Commit,
    Debit,
    InvalidRequest,
    NeedData,
    Ping,
    Release,
    Reply,
    Request,
    Reserve,
    ServerConnection,
    charge_reply,
    encode_frame,
)
from protocols.native.errors import LocalProtocolError, NativeProtocolError, ProtocolError
from protocols.native.server import Handler, NativeServer

__all__ = [
    "NEED_DATA",
    "Balance",
    "ChargingRequest",
    "ClientConnection",
    "Commit",
    "Debit",
    "Handler",
    "InvalidRequest",
    "LocalProtocolError",
    "NativeClient",
    "NativeProtocolError",
    "NativeServer",
    "NeedData",
    "Ping",
    "ProtocolError",
    "Release",
    "Reply",
    "Request",
    "Reserve",
    "ServerConnection",
    "charge_reply",
    "encode_frame",
]
