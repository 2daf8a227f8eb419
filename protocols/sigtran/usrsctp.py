"""SCTP in user space, encapsulated in UDP (RFC 6951), through Debian's ``libusrsctp2`` and
ctypes: for machines whose kernel has no SCTP (``OCS_CAMEL_TRANSPORT=sctp-udp``).

libusrsctp runs its own threads (UDP receive, timers). We use its socket API, non-blocking,
with an upcall per socket: the upcall (on a library thread) only wakes the event loop, and
the loop does the reads, accepts and writes. Every socket is bound to the address it is given
explicitly (127.0.0.1 in tests), so the association advertises no other address of the
machine. The library is initialised once per process, on one UDP port (the encapsulation
port, RFC 6951 §5.1: 9899 by default); several listeners and connections share it.

One-to-one style sockets (SOCK_STREAM): one socket per association; M3UA's messages keep
their boundaries (MSG_EOR), its PPID is 3 and its streams are SCTP streams.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import ipaddress
import itertools
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any, Final, Protocol

from protocols.sigtran.constants import M3UA_PPID, SCTP_UDP_PORT
from protocols.sigtran.errors import SigtranError

log = logging.getLogger(__name__)

AF_INET: Final = 2
SOCK_STREAM: Final = 1
IPPROTO_SCTP: Final = 132
SCTP_INITMSG: Final = 0x03
SCTP_NODELAY: Final = 0x04
SCTP_RECVRCVINFO: Final = 0x1F
SCTP_REMOTE_UDP_ENCAPS_PORT: Final = 0x24
SCTP_SENDV_SNDINFO: Final = 1
SCTP_RECVV_RCVINFO: Final = 1
SCTP_EVENT_READ: Final = 0x1
SCTP_EVENT_WRITE: Final = 0x2
SCTP_EVENT_ERROR: Final = 0x4
MSG_EOR: Final = 0x80
MSG_NOTIFICATION: Final = 0x2000
#: Streams each way we ask for (M3UA: 0 for management, the rest for DATA by SLS).
STREAMS: Final = 16
_RECV_BUFFER: Final = 65_536


class SctpUnavailable(SigtranError):
    """libusrsctp cannot be loaded (install Debian's ``libusrsctp2``)."""


class _SockaddrIn(ctypes.Structure):
    _fields_ = [("sin_family", ctypes.c_uint16), ("sin_port", ctypes.c_uint16),
                ("sin_addr", ctypes.c_uint32), ("sin_zero", ctypes.c_char * 8)]  # fmt: skip


class _UdpEncaps(ctypes.Structure):
    # struct sctp_udpencaps: a sockaddr_storage (128 octets, 8-aligned), assoc id, port.
    _fields_ = [("sue_address", ctypes.c_uint64 * 16), ("sue_assoc_id", ctypes.c_uint32),
                ("sue_port", ctypes.c_uint16)]  # fmt: skip


class _SndInfo(ctypes.Structure):
    _fields_ = [("snd_sid", ctypes.c_uint16), ("snd_flags", ctypes.c_uint16),
                ("snd_ppid", ctypes.c_uint32), ("snd_context", ctypes.c_uint32),
                ("snd_assoc_id", ctypes.c_uint32)]  # fmt: skip


class _RcvInfo(ctypes.Structure):
    _fields_ = [("rcv_sid", ctypes.c_uint16), ("rcv_ssn", ctypes.c_uint16),
                ("rcv_flags", ctypes.c_uint16), ("rcv_ppid", ctypes.c_uint32),
                ("rcv_tsn", ctypes.c_uint32), ("rcv_cumtsn", ctypes.c_uint32),
                ("rcv_context", ctypes.c_uint32), ("rcv_assoc_id", ctypes.c_uint32)]  # fmt: skip


class _InitMsg(ctypes.Structure):
    _fields_ = [("sinit_num_ostreams", ctypes.c_uint16), ("sinit_max_instreams", ctypes.c_uint16),
                ("sinit_max_attempts", ctypes.c_uint16),
                ("sinit_max_init_timeo", ctypes.c_uint16)]  # fmt: skip


_UPCALL = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)


def _sockaddr(host: str, port: int) -> _SockaddrIn:
    addr = int(ipaddress.IPv4Address(host))
    return _SockaddrIn(AF_INET, socket.htons(port), socket.htonl(addr), b"")


class _Library:
    """The process's libusrsctp, initialised once on one UDP port."""

    _lock = threading.Lock()
    _instance: _Library | None = None

    def __init__(self, udp_port: int) -> None:
        name = ctypes.util.find_library("usrsctp") or "libusrsctp.so.2"
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError as exc:
            raise SctpUnavailable(
                f"libusrsctp not found ({exc}); apt-get install libusrsctp2"
            ) from None
        lib.usrsctp_init.argtypes = [ctypes.c_uint16, ctypes.c_void_p, ctypes.c_void_p]
        lib.usrsctp_init.restype = None
        lib.usrsctp_socket.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_uint32,
            ctypes.c_void_p,
        ]
        lib.usrsctp_socket.restype = ctypes.c_void_p
        lib.usrsctp_setsockopt.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                           ctypes.c_void_p, ctypes.c_uint32]  # fmt: skip
        for fn in ("usrsctp_bind", "usrsctp_connect"):
            getattr(lib, fn).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint32]
        lib.usrsctp_listen.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.usrsctp_accept.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        lib.usrsctp_accept.restype = ctypes.c_void_p
        lib.usrsctp_sendv.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                                      ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                                      ctypes.c_uint32, ctypes.c_uint, ctypes.c_int]  # fmt: skip
        lib.usrsctp_sendv.restype = ctypes.c_ssize_t
        lib.usrsctp_recvv.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.usrsctp_recvv.restype = ctypes.c_ssize_t
        lib.usrsctp_close.argtypes = [ctypes.c_void_p]
        lib.usrsctp_close.restype = None
        lib.usrsctp_shutdown.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.usrsctp_set_non_blocking.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.usrsctp_set_upcall.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        lib.usrsctp_get_events.argtypes = [ctypes.c_void_p]
        lib.usrsctp_init(udp_port, None, None)
        self.lib = lib
        self.udp_port = udp_port
        #: Sockets by the id their upcall carries.
        self.sockets: dict[int, _Socket] = {}
        self._ids = itertools.count(1)
        self.upcall = _UPCALL(self._upcall)

    @classmethod
    def get(cls, udp_port: int = SCTP_UDP_PORT) -> _Library:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls(udp_port)
            elif cls._instance.udp_port != udp_port:
                raise SigtranError(f"libusrsctp already runs on UDP port "
                                   f"{cls._instance.udp_port}, not {udp_port}")  # fmt: skip
            return cls._instance

    def _upcall(self, _sock: int | None, arg: int | None, _flags: int) -> None:
        s = self.sockets.get(arg or 0)
        if s is not None:
            s.wake()

    def register(self, s: _Socket) -> int:
        sid = next(self._ids)
        self.sockets[sid] = s
        return sid


def _check(result: int, what: str) -> None:
    if result < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {errno.errorcode.get(e, e)}")


class _Socket:
    """One usrsctp socket driven from an event loop."""

    def __init__(self, lib: _Library, loop: asyncio.AbstractEventLoop, ptr: int | None = None):
        self.lib = lib
        self.loop = loop
        if ptr is None:
            ptr = lib.lib.usrsctp_socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP, None, None, 0, None)
            if not ptr:
                _check(-1, "usrsctp_socket")
        self.ptr: int | None = ptr
        self._scheduled = False
        self.id = lib.register(self)
        L = lib.lib
        _check(L.usrsctp_set_non_blocking(ptr, 1), "set_non_blocking")
        one = ctypes.c_int(1)
        _check(L.usrsctp_setsockopt(ptr, IPPROTO_SCTP, SCTP_NODELAY, ctypes.byref(one), 4),
               "SCTP_NODELAY")  # fmt: skip
        _check(L.usrsctp_setsockopt(ptr, IPPROTO_SCTP, SCTP_RECVRCVINFO, ctypes.byref(one), 4),
               "SCTP_RECVRCVINFO")  # fmt: skip
        init = _InitMsg(STREAMS, STREAMS, 0, 0)
        _check(L.usrsctp_setsockopt(ptr, IPPROTO_SCTP, SCTP_INITMSG, ctypes.byref(init),
                                    ctypes.sizeof(init)), "SCTP_INITMSG")  # fmt: skip
        L.usrsctp_set_upcall(
            ptr, ctypes.cast(lib.upcall, ctypes.c_void_p), ctypes.c_void_p(self.id)
        )

    def wake(self) -> None:
        """From a library thread: have the loop look at the socket."""
        if self._scheduled:
            return
        self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._ready)
        except RuntimeError:  # the loop is closed
            self._scheduled = False

    def _ready(self) -> None:
        self._scheduled = False
        if self.ptr is None:
            return
        self.ready(self.lib.lib.usrsctp_get_events(self.ptr))

    def ready(self, events: int) -> None:
        raise NotImplementedError

    def bind(self, host: str, port: int) -> None:
        addr = _sockaddr(host, port)
        _check(self.lib.lib.usrsctp_bind(self.ptr, ctypes.byref(addr), ctypes.sizeof(addr)),
               f"bind {host}:{port}")  # fmt: skip

    def close(self) -> None:
        if self.ptr is None:
            return
        ptr, self.ptr = self.ptr, None
        self.lib.sockets.pop(self.id, None)
        self.lib.lib.usrsctp_set_upcall(ptr, None, None)
        self.lib.lib.usrsctp_close(ptr)


class Receiver(Protocol):
    def data_received(self, stream: int, data: bytes) -> None: ...

    def connection_lost(self) -> None: ...


class SctpAssociation(_Socket):
    """One association: ``send(stream, data)``; what arrives goes to ``receiver``."""

    def __init__(self, lib: _Library, loop: asyncio.AbstractEventLoop, ptr: int | None = None):
        self.receiver: Receiver | None = None
        self._pending: list[tuple[int, bytes]] = []
        self._partial = bytearray()
        self._buf = ctypes.create_string_buffer(_RECV_BUFFER)
        self.connected: asyncio.Future[None] = loop.create_future()
        self.lost = False
        super().__init__(lib, loop, ptr)
        if ptr is not None:
            self.connected.set_result(None)

    def send(self, stream: int, data: bytes) -> None:
        if self.ptr is None or self.lost:
            return
        if self._pending:
            self._pending.append((stream, data))
            return
        if not self._sendv(stream, data):
            self._pending.append((stream, data))

    def _sendv(self, stream: int, data: bytes) -> bool:
        info = _SndInfo(stream, 0, socket.htonl(M3UA_PPID), 0, 0)
        n = self.lib.lib.usrsctp_sendv(self.ptr, data, len(data), None, 0, ctypes.byref(info),
                                       ctypes.sizeof(info), SCTP_SENDV_SNDINFO, 0)  # fmt: skip
        if n >= 0:
            return True
        e = ctypes.get_errno()
        if e in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS):
            return False
        log.info("SCTP send failed: %s", errno.errorcode.get(e, e))
        self._lost()
        return True

    def ready(self, events: int) -> None:
        if events & SCTP_EVENT_WRITE:
            if not self.connected.done():
                self.connected.set_result(None)
            while self._pending and self._sendv(*self._pending[0]):
                self._pending.pop(0)
        if events & (SCTP_EVENT_READ | SCTP_EVENT_ERROR):
            self._read()

    def _read(self) -> None:
        L = self.lib.lib
        info = _RcvInfo()
        while self.ptr is not None:
            infolen = ctypes.c_uint32(ctypes.sizeof(info))
            infotype = ctypes.c_uint(0)
            flags = ctypes.c_int(0)
            fromlen = ctypes.c_uint32(0)
            n = L.usrsctp_recvv(self.ptr, self._buf, _RECV_BUFFER, None, ctypes.byref(fromlen),
                                ctypes.byref(info), ctypes.byref(infolen),
                                ctypes.byref(infotype), ctypes.byref(flags))  # fmt: skip
            if n < 0:
                e = ctypes.get_errno()
                if e in (errno.EAGAIN, errno.EWOULDBLOCK):
                    return
                if not self.connected.done():
                    self.connected.set_exception(ConnectionRefusedError(e, "SCTP connect"))
                self._lost()
                return
            if n == 0:
                self._lost()
                return
            if flags.value & MSG_NOTIFICATION:
                continue
            self._partial += self._buf.raw[:n]
            if flags.value & MSG_EOR:
                data, self._partial = bytes(self._partial), bytearray()
                if self.receiver is not None:
                    self.receiver.data_received(int(info.rcv_sid), data)

    def _lost(self) -> None:
        if self.lost:
            return
        self.lost = True
        if self.receiver is not None:
            self.receiver.connection_lost()
        self.close()


class SctpListener(_Socket):
    """Accepts associations on ``host:port``; ``factory(association)`` gives each its
    receiver."""

    def __init__(
        self, lib: _Library, loop: asyncio.AbstractEventLoop,
        factory: Callable[[SctpAssociation], Receiver],
    ) -> None:  # fmt: skip
        self.factory = factory
        self.associations: set[SctpAssociation] = set()
        super().__init__(lib, loop)

    def ready(self, events: int) -> None:
        if not events & SCTP_EVENT_READ:
            return
        while self.ptr is not None:
            ptr = self.lib.lib.usrsctp_accept(self.ptr, None, None)
            if not ptr:
                return
            a = SctpAssociation(self.lib, self.loop, ptr)
            a.receiver = self.factory(a)
            self.associations.add(a)

    def close(self) -> None:
        for a in list(self.associations):
            a.close()
        self.associations.clear()
        super().close()


async def listen(
    host: str, port: int, factory: Callable[[SctpAssociation], Receiver],
    udp_port: int = SCTP_UDP_PORT,
) -> SctpListener:  # fmt: skip
    """An SCTP-over-UDP listener bound to ``host:port`` (its own address only)."""
    lib = _Library.get(udp_port)
    listener = SctpListener(lib, asyncio.get_running_loop(), factory)
    try:
        listener.bind(host, port)
        _check(lib.lib.usrsctp_listen(listener.ptr, 16), "listen")
    except OSError:
        listener.close()
        raise
    return listener


async def connect(
    host: str, port: int, receiver: Any, *, local: str = "127.0.0.1", udp_port: int = SCTP_UDP_PORT,
    remote_udp_port: int | None = None, within: float = 5.0,
) -> SctpAssociation:  # fmt: skip
    """An association to ``host:port`` (the peer's UDP encapsulation port defaults to ours)."""
    lib = _Library.get(udp_port)
    a = SctpAssociation(lib, asyncio.get_running_loop())
    a.receiver = receiver
    try:
        a.bind(local, 0)
        enc = _UdpEncaps()
        enc.sue_address[0] = AF_INET
        enc.sue_port = socket.htons(remote_udp_port or udp_port)
        _check(lib.lib.usrsctp_setsockopt(a.ptr, IPPROTO_SCTP, SCTP_REMOTE_UDP_ENCAPS_PORT,
                                          ctypes.byref(enc), ctypes.sizeof(enc)),
               "SCTP_REMOTE_UDP_ENCAPS_PORT")  # fmt: skip
        addr = _sockaddr(host, port)
        if lib.lib.usrsctp_connect(a.ptr, ctypes.byref(addr), ctypes.sizeof(addr)) < 0:
            e = ctypes.get_errno()
            if e != errno.EINPROGRESS:
                _check(-1, f"connect {host}:{port}")
        a.wake()
        await asyncio.wait_for(asyncio.shield(a.connected), within)
    except BaseException:
        a.close()
        raise
    return a
