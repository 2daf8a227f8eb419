"""SCTP in user space, encapsulated in UDP (RFC 6951), through Debian's ``libusrsctp2`` and
ctypes: for machines whose kernel has no SCTP (``OCS_CAMEL_TRANSPORT=sctp-udp``).

libusrsctp runs its own threads (UDP receive, timers). We use its socket API, non-blocking,
with an upcall per socket: the upcall (on a library thread) only wakes the event loop, and
the loop does the reads, accepts and writes. The upcall is C, not Python: libc's ``fputc``
writing one octet to a pipe the loop reads (:class:`_Waker`). A Python upcall (a ctypes
callback) had to take the GIL on the library's receive thread while that thread held the
association's locks, so every packet in waited for the loop to let go of the GIL and every
send from the loop waited for the receive thread (profiled: ~15% of the samples of a busy
gsmSCF were that thread waiting for the GIL, docs/camel.md Speed).

Every socket is bound to the address it is given explicitly (127.0.0.1 in tests), so the
association advertises no other address of the machine. The library is initialised once
per process, on one UDP port (the encapsulation port, RFC 6951 §5.1: 9899 by default);
several listeners and connections share it.

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
import os
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


_SNDINFO_SIZE: Final = ctypes.sizeof(_SndInfo)
_UPCALL = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)
#: setvbuf's mode for an unbuffered stream (glibc's <stdio.h>).
_IONBF: Final = 2


def _sockaddr(host: str, port: int) -> _SockaddrIn:
    addr = int(ipaddress.IPv4Address(host))
    return _SockaddrIn(AF_INET, socket.htons(port), socket.htonl(addr), b"")


class _Waker:
    """A pipe that wakes one event loop for the usrsctp sockets it serves.

    The upcall of each socket is libc's ``fputc(int c, FILE *stream)``, called by the
    library as ``upcall(struct socket *so, void *arg, int flags)`` with ``arg`` this pipe's
    unbuffered, non-blocking write end as a ``FILE *``: it writes one octet (the low octet
    of ``so``, which nobody reads) and touches nothing of Python, so it needs no GIL (the
    third argument, in a register of the System V ABI, is ignored). When the pipe is full
    the write fails, which is fine: the loop has octets to read already. On each wake the
    loop drains the pipe and asks every socket it serves what it is ready for. A waker
    outlives its sockets (a late upcall may still write to it): when its loop has no more
    sockets it goes back to the library's pool, never closed.
    """

    def __init__(self, lib: _Library) -> None:
        self.lib = lib
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        os.set_blocking(self.w, False)
        libc = lib.libc
        self.file = libc.fdopen(self.w, b"w")
        if not self.file:
            raise OSError(ctypes.get_errno(), "fdopen of the wake pipe")
        libc.setvbuf(self.file, None, _IONBF, 0)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.sockets: set[_Socket] = set()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        loop.add_reader(self.r, self._woken)

    def detach(self) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.remove_reader(self.r)
        self.loop = None

    def _woken(self) -> None:
        try:
            while len(os.read(self.r, 4096)) == 4096:
                pass
        except BlockingIOError:
            pass
        self.lib.libc.clearerr(self.file)  # (a write that found the pipe full set it)
        for s in list(self.sockets):
            s._ready()


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
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.fdopen.argtypes = [ctypes.c_int, ctypes.c_char_p]
        libc.fdopen.restype = ctypes.c_void_p
        libc.setvbuf.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
        libc.clearerr.argtypes = [ctypes.c_void_p]
        libc.clearerr.restype = None
        self.libc = libc
        #: The C upcall (docs above): libc's fputc.
        self.fputc = ctypes.cast(libc.fputc, ctypes.c_void_p)
        lib.usrsctp_init(udp_port, None, None)
        self.lib = lib
        self.udp_port = udp_port
        #: Sockets by the id their upcall carries (the Python upcall, see ``python_upcall``).
        self.sockets: dict[int, _Socket] = {}
        self._ids = itertools.count(1)
        self.upcall = _UPCALL(self._upcall)
        #: A ctypes callback as the upcall instead of the C one (for measuring the difference
        #: in bench/camel.py; set before the sockets are made).
        self.python_upcall = False
        self._wakers: dict[asyncio.AbstractEventLoop, _Waker] = {}
        self._pool: list[_Waker] = []

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

    def waker(self, s: _Socket) -> _Waker:
        """The waker of ``s``'s loop (taken from the pool, or new, for a loop's first)."""
        w = self._wakers.get(s.loop)
        if w is None:
            w = self._pool.pop() if self._pool else _Waker(self)
            w.attach(s.loop)
            self._wakers[s.loop] = w
        w.sockets.add(s)
        return w

    def unwake(self, s: _Socket) -> None:
        w = self._wakers.get(s.loop)
        if w is None:
            return
        w.sockets.discard(s)
        if not w.sockets:
            del self._wakers[s.loop]
            w.detach()
            self._pool.append(w)


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
        if lib.python_upcall:
            L.usrsctp_set_upcall(
                ptr, ctypes.cast(lib.upcall, ctypes.c_void_p), ctypes.c_void_p(self.id)
            )
        else:
            L.usrsctp_set_upcall(ptr, lib.fputc, ctypes.c_void_p(lib.waker(self).file))
        # What arrived before the upcall was set (an accepted association's first messages)
        # woke nobody: look once.
        loop.call_soon(self._ready)

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
        self.lib.unwake(self)


class Receiver(Protocol):
    def data_received(self, stream: int, data: bytes) -> None: ...

    def connection_lost(self) -> None: ...


class SctpAssociation(_Socket):
    """One association: ``send(stream, data)``; what arrives goes to ``receiver``.

    What is sent in one loop turn goes out together at its end (``_flush``): with several
    messages, Nagle is switched on for all but the last (SCTP_NODELAY off), so the stack
    queues them, and off again for the last, whose send then puts out everything queued
    bundled into as few packets as the path MTU allows (RFC 4960 §6.10) -- one SCTP user
    message per M3UA message still (RFC 4666 §1.4.7), but not one UDP packet, one ``sendmsg``
    and one SACK'd packet at the peer per message. A single message goes at once as before.
    """

    #: Bundle the messages of a loop turn (off: one packet per message, for measuring).
    bundle = True

    def __init__(self, lib: _Library, loop: asyncio.AbstractEventLoop, ptr: int | None = None):
        self.receiver: Receiver | None = None
        self._pending: list[tuple[int, bytes]] = []
        self._flushing = False
        self._partial = bytearray()
        self._buf = ctypes.create_string_buffer(_RECV_BUFFER)
        self._info = _SndInfo(0, 0, socket.htonl(M3UA_PPID), 0, 0)
        self._info_ref = ctypes.byref(self._info)
        self._rcv = _RcvInfo()
        self._rcv_len = ctypes.c_uint32(0)
        self._rcv_type = ctypes.c_uint(0)
        self._rcv_flags = ctypes.c_int(0)
        self._from_len = ctypes.c_uint32(0)
        self._recv_args = (self._buf, _RECV_BUFFER, None, ctypes.byref(self._from_len),
                           ctypes.byref(self._rcv), ctypes.byref(self._rcv_len),
                           ctypes.byref(self._rcv_type), ctypes.byref(self._rcv_flags))  # fmt: skip
        self.connected: asyncio.Future[None] = loop.create_future()
        self.lost = False
        super().__init__(lib, loop, ptr)
        if ptr is not None:
            self.connected.set_result(None)

    def send(self, stream: int, data: bytes) -> None:
        if self.ptr is None or self.lost:
            return
        self._pending.append((stream, data))
        if not self._flushing:
            self._flushing = True
            self.loop.call_soon(self._flush)

    def _nodelay(self, on: bool) -> None:
        if self.ptr is None:  # (lost in the middle of a flush)
            return
        v = ctypes.c_int(1 if on else 0)
        self.lib.lib.usrsctp_setsockopt(self.ptr, IPPROTO_SCTP, SCTP_NODELAY, ctypes.byref(v), 4)

    def _flush(self) -> None:
        self._flushing = False
        pending = self._pending
        if not pending or self.ptr is None or self.lost:
            return
        last = len(pending) - 1
        bundled = self.bundle and last > 0
        if bundled:
            self._nodelay(False)
        sent = 0
        try:
            for i, (stream, data) in enumerate(pending):
                if bundled and i == last:
                    self._nodelay(True)
                    bundled = False
                if not self._sendv(stream, data):
                    break
                sent += 1
        finally:
            if bundled:
                self._nodelay(True)
        del pending[:sent]

    def _sendv(self, stream: int, data: bytes) -> bool:
        """One message; False when the stack has no room for it now (EAGAIN: it waits in
        ``_pending`` for the next SCTP_EVENT_WRITE)."""
        if self.ptr is None or self.lost:
            return True
        self._info.snd_sid = stream
        n = self.lib.lib.usrsctp_sendv(self.ptr, data, len(data), None, 0, self._info_ref,
                                       _SNDINFO_SIZE, SCTP_SENDV_SNDINFO, 0)  # fmt: skip
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
            if self._pending and not self._flushing:
                self._flush()
        if events & (SCTP_EVENT_READ | SCTP_EVENT_ERROR):
            self._read()

    def _read(self) -> None:
        recvv = self.lib.lib.usrsctp_recvv
        args = self._recv_args
        rcv, rcv_len, flags = self._rcv, self._rcv_len, self._rcv_flags
        size = ctypes.sizeof(rcv)
        while self.ptr is not None:
            rcv_len.value = size
            self._rcv_type.value = 0
            flags.value = 0
            self._from_len.value = 0
            n = recvv(self.ptr, *args)
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
            if flags.value & MSG_EOR and not self._partial:
                data = ctypes.string_at(self._buf, n)
            else:
                self._partial += ctypes.string_at(self._buf, n)
                if not flags.value & MSG_EOR:
                    continue
                data, self._partial = bytes(self._partial), bytearray()
            if self.receiver is not None:
                self.receiver.data_received(int(rcv.rcv_sid), data)

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
