"""Associations for the stack: anything with ``send(stream, data)`` that hands what arrives
to ``data_received(stream, data)`` of the other end. :class:`LoopbackPair` joins two ends in
one event loop (in-process tests of the whole stack above SCTP); :mod:`usrsctp` is SCTP."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from typing import Any, Final, Protocol

from protocols.sigtran.constants import M3UA_PPID, SCTP_UDP_PORT

log = logging.getLogger(__name__)


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


#: The SCTP_SNDRCV ancillary message (Linux <linux/sctp.h>, RFC 6458 §5.3.2): level
#: IPPROTO_SCTP, type 1, a struct sctp_sndrcvinfo { u16 stream, ssn, flags; u32 ppid,
#: context, timetolive, tsn, cumtsn; s32 assoc_id } in native layout (32 octets, two of
#: padding after flags), the PPID in network order.
SCTP_SNDRCV: Final = 1
_SNDRCVINFO: Final = struct.Struct("@HHHIIIIIi")
#: How soon a send the kernel had no room for is tried again (seconds).
_RETRY: Final = 0.005


def sndrcv_cmsg(stream: int, ppid: int = M3UA_PPID) -> tuple[int, int, bytes]:
    """The ancillary data that sends one message on SCTP stream ``stream`` with payload
    protocol identifier ``ppid`` (M3UA's is 3, RFC 4666 §1.4.7), for ``socket.sendmsg``."""
    info = _SNDRCVINFO.pack(stream, 0, 0, socket.htonl(ppid), 0, 0, 0, 0, 0)
    return (socket.IPPROTO_SCTP, SCTP_SNDRCV, info)


class _KernelAssociation(asyncio.Protocol):
    """A kernel SCTP association, read as a stream (M3UA's own length frames it) and
    written with ``sendmsg``: each message one SCTP user message on the stream M3UA picked,
    with PPID 3, in an SCTP_SNDRCV ancillary message (a stream transport's ``write`` would
    send PPID 0 on stream 0, which an SG may drop). The sends go on a duplicate of the
    transport's descriptor (asyncio's transport has no ``sendmsg``); what the kernel has no
    room for waits and is tried again shortly, in order."""

    def __init__(self, factory: Any) -> None:
        self.factory = factory
        self.transport: asyncio.Transport | None = None
        self.receiver: Any = None
        self.sock: Any = None
        self._pending: list[tuple[int, bytes]] = []
        self._retry: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        raw = transport.get_extra_info("socket")
        if raw is not None:
            self.sock = socket.socket(fileno=os.dup(raw.fileno()))
        self.receiver = self.factory(self)

    def send(self, stream: int, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self.sock is None:  # (no socket to send on: the stream, as a last resort)
            self.transport.write(data)
            return
        self._pending.append((stream, data))
        if self._retry is None:
            self._drain()

    def _drain(self) -> None:
        self._retry = None
        while self._pending:
            stream, data = self._pending[0]
            try:
                self.sock.sendmsg([data], [sndrcv_cmsg(stream)], socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                loop = asyncio.get_running_loop()
                self._retry = loop.call_later(_RETRY, self._drain)
                return
            except OSError as exc:
                log.info("SCTP send failed: %s", exc)
                self._pending.clear()
                if self.transport is not None:
                    self.transport.close()
                return
            self._pending.pop(0)

    def data_received(self, data: bytes) -> None:
        self.receiver.data_received(-1, data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._pending.clear()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
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
