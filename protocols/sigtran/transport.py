"""Associations for the stack: anything with ``send(stream, data)`` that hands what arrives
to ``data_received(stream, data)`` of the other end. :class:`LoopbackPair` joins two ends in
one event loop (in-process tests of the whole stack above SCTP); :mod:`usrsctp` is SCTP."""

from __future__ import annotations

import asyncio
import socket
from typing import Any, Protocol

from protocols.sigtran.constants import SCTP_UDP_PORT


class Receiver(Protocol):
    def data_received(self, stream: int, data: bytes) -> None: ...

    def connection_lost(self) -> None: ...


class _End:
    def __init__(self, pair: LoopbackPair, side: int) -> None:
        self.pair = pair
        self.side = side
        self.receiver: Receiver | None = None

    def send(self, stream: int, data: bytes) -> None:
        other = self.pair.ends[1 - self.side]
        if self.pair.closed or other.receiver is None:
            return
        self.pair.loop.call_soon(other.receiver.data_received, stream, bytes(data))


class LoopbackPair:
    """Two association ends in this loop: what one sends the other receives, in order, on
    the next loop turn (message boundaries kept, as SCTP keeps them)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.ends = (_End(self, 0), _End(self, 1))
        self.closed = False

    def close(self) -> None:
        self.closed = True
        for end in self.ends:
            if end.receiver is not None:
                self.loop.call_soon(end.receiver.connection_lost)


# -- listeners -------------------------------------------------------------------------------

TRANSPORTS = ("sctp", "sctp-udp")


class Listener(Protocol):
    def close(self) -> None: ...


class _KernelAssociation(asyncio.Protocol):
    """A kernel SCTP association read as a stream: M3UA's own length frames it, and every
    message goes on stream 0 (a one-to-one socket without ancillary data)."""

    def __init__(self, factory: Any) -> None:
        self.factory = factory
        self.transport: asyncio.Transport | None = None
        self.receiver: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.receiver = self.factory(self)

    def send(self, stream: int, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.receiver.data_received(-1, data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.receiver is not None:
            self.receiver.connection_lost()


class _KernelListener:
    def __init__(self, server: asyncio.Server) -> None:
        self.server = server

    def close(self) -> None:
        self.server.close()


def kernel_sctp_available() -> bool:
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP)
    except OSError:
        return False
    s.close()
    return True


async def listen(
    kind: str, host: str, port: int, factory: Any, *, udp_port: int = SCTP_UDP_PORT
) -> Listener:
    """Accept associations on ``host:port`` over kernel SCTP ("sctp") or SCTP over UDP
    through libusrsctp ("sctp-udp", RFC 6951); ``factory(sender)`` gives each its receiver."""
    if kind == "sctp-udp":
        from protocols.sigtran import usrsctp

        return await usrsctp.listen(host, port, factory, udp_port=udp_port)
    if kind != "sctp":
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, not {kind!r}")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _KernelAssociation(factory), sock=sock)
    return _KernelListener(server)
