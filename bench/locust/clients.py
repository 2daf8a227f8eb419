"""Blocking clients for gevent (Locust) over the sans-IO codecs: the native protocol and
Diameter.

A call blocks the greenlet that makes it, not the process (gevent sockets). One connection is
shared by many greenlets, as the sessions of one network element share its link: a greenlet
sends its request itself, unless another is in the middle of a send, which then takes the
queued requests along in its next ``sendall`` (no writer greenlet to switch to: that switch
per request was most of the client's CPU at low rates); one reader greenlet feeds the codec
and hands each answer to the greenlet waiting for it, matched by request id (native) or
Hop-by-Hop id (Diameter).

No asyncio here: Locust runs on gevent, and the codecs (``protocols.native.codec``,
``protocols.diameter``) do no I/O, so they drive a gevent socket as they drive an asyncio
transport. A call fails with ``TimeoutError`` when its answer does not come within
``timeout`` seconds and with ``ConnectionError`` when the connection is gone.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import gevent.socket as gsocket
from gevent.event import AsyncResult

from protocols.diameter import NEED_DATA as DIAMETER_NEED_DATA
from protocols.diameter import Framer, Item, Message, make_answer, make_request
from protocols.diameter import constants as c
from protocols.native.codec import (
    NEED_DATA,
    Balance,
    Challenge,
    ClientConnection,
    Commit,
    Debit,
    Hello,
    Ping,
    Release,
    Reply,
    Request,
    Reserve,
    hello_mac,
)
from protocols.native.constants import MAX_ID
from protocols.native.errors import ProtocolError


class _Multiplexed:
    """One TCP connection shared by greenlets: answers matched to calls by id."""

    def __init__(self, host: str, port: int, *, timeout: float, connect_timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        sock = gsocket.create_connection((host, port), timeout=connect_timeout)
        sock.settimeout(None)
        sock.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
        self.sock = sock
        self._out: list[bytes] = []
        self._sending = False
        self._pending: dict[int, AsyncResult] = {}
        self._error: BaseException | None = None
        #: monotonic time of the last byte sent or received (for a watchdog).
        self.last_activity = time.monotonic()
        self._reader = gevent.spawn(self._read_loop)

    @property
    def closed(self) -> bool:
        return self._error is not None

    # -- I/O

    def _read_loop(self) -> None:
        try:
            while data := self.sock.recv(1 << 18):
                self.last_activity = time.monotonic()
                self._received(data)
            self._fail(ConnectionError("connection closed by the server"))
        except OSError as exc:
            self._fail(ConnectionError(f"receive failed: {exc}"))
        except ProtocolError as exc:
            self._fail(ConnectionError(f"broken stream: {exc}"))

    def _received(self, data: bytes) -> None:
        raise NotImplementedError

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        pending, self._pending = self._pending, {}
        for result in pending.values():
            result.set_exception(ConnectionError(str(self._error)))
        self._out.clear()
        with contextlib.suppress(OSError):
            self.sock.close()

    # -- calls

    def _send(self, data: bytes) -> None:
        if self._error is not None:
            raise ConnectionError(str(self._error))
        self._out.append(data)
        if self._sending:
            return  # the greenlet sending now sends this too
        self._sending = True
        try:
            while self._out:
                batch = self._out[0] if len(self._out) == 1 else b"".join(self._out)
                self._out.clear()
                self.sock.sendall(batch)
            self.last_activity = time.monotonic()
        except OSError as exc:
            self._fail(ConnectionError(f"send failed: {exc}"))
            raise ConnectionError(str(self._error)) from exc
        finally:
            self._sending = False

    def _call(self, key: int, data: bytes, timeout: float | None = None) -> Any:
        result = AsyncResult()
        self._pending[key] = result
        within = self.timeout if timeout is None else timeout
        try:
            self._send(data)
            return result.get(timeout=within)
        except gevent.Timeout:
            raise TimeoutError(f"no answer within {within:g} s") from None
        finally:
            self._pending.pop(key, None)

    def _answer(self, key: int, value: object) -> bool:
        result = self._pending.pop(key, None)
        if result is None:
            return False
        result.set(value)
        return True

    def close(self) -> None:
        """Close at once (calls in flight fail)."""
        self._fail(ConnectionError("closed by the client"))
        self._reader.join(timeout=1)


class NativeConnection(_Multiplexed):
    """A native-protocol connection (docs/native-protocol.md); methods as NativeClient's."""

    def __init__(
        self, host: str, port: int, *, timeout: float = 5.0, connect_timeout: float = 5.0,
        key: tuple[str, bytes] | None = None,
    ) -> None:  # fmt: skip
        self._codec = ClientConnection()
        self._ids: Iterator[int] = itertools.cycle(range(1, MAX_ID + 1))
        self._challenge = AsyncResult()
        super().__init__(host, port, timeout=timeout, connect_timeout=connect_timeout)
        if key is not None:  # the hello handshake (docs/native-protocol.md)
            try:
                nonce = self._challenge.get(timeout=connect_timeout)
            except gevent.Timeout:
                self.close()
                raise TimeoutError("no challenge from the server") from None
            key_id, secret = key
            reply = self.call(lambda i: Hello(i, key_id, hello_mac(secret, nonce, key_id)))
            if not reply.ok:
                self.close()
                raise ConnectionError(f"hello refused: {reply.result} {reply.detail}")

    def _received(self, data: bytes) -> None:
        codec = self._codec
        codec.receive_data(data)
        while (reply := codec.next_event()) is not NEED_DATA:
            if isinstance(reply, Challenge):
                self._challenge.set(reply.nonce)
                continue
            assert isinstance(reply, Reply)
            if reply.id == 0 and not reply.ok:
                # The server could not read a frame of ours and closes (docs, "Errors").
                self._fail(ConnectionError(f"server rejected a frame: {reply.detail}"))
                return
            self._answer(reply.id, reply)

    def _next_id(self) -> int:
        while (i := next(self._ids)) in self._pending:
            pass
        return i

    def call(self, make: Callable[[int], Request]) -> Reply:
        request = make(self._next_id())
        reply: Reply = self._call(request.id, self._codec.send(request))
        return reply

    def reserve(
        self,
        session: str,
        subscriber: str,
        service: str,
        seq: int,
        units: int | None = None,
        destination: str = "",
        location: str = "",
    ) -> Reply:
        return self.call(
            lambda i: Reserve(i, session, subscriber, service, seq, units, destination, location)
        )

    def commit(
        self, session: str, seq: int, used: int, units: int | None = None, subscriber: str = ""
    ) -> Reply:
        return self.call(lambda i: Commit(i, session, seq, used, units, subscriber))

    def release(self, session: str, seq: int, used: int = 0, subscriber: str = "") -> Reply:
        return self.call(lambda i: Release(i, session, seq, used, subscriber))

    def debit(
        self,
        subscriber: str,
        service: str,
        key: str,
        units: int = 1,
        destination: str = "",
        location: str = "",
    ) -> Reply:
        return self.call(lambda i: Debit(i, subscriber, service, key, units, destination, location))

    def balance(self, subscriber: str) -> Reply:
        return self.call(lambda i: Balance(i, subscriber))

    def ping(self) -> Reply:
        return self.call(Ping)


class DiameterConnection(_Multiplexed):
    """A Diameter client peer (RFC 6733): CER/CEA first, DWR when the link has been idle for
    ``watchdog`` seconds (RFC 3539; the peer is dropped when a DWA does not come), DWA to the
    server's DWR, DPA to its DPR, and DPR on :meth:`disconnect`."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        origin_host: str,
        origin_realm: str,
        timeout: float = 5.0,
        connect_timeout: float = 5.0,
        watchdog: float = 30.0,
    ) -> None:
        self.origin_host, self.origin_realm = origin_host, origin_realm
        self._framer = Framer(1 << 20)
        self._hop = itertools.count(random.randrange(1 << 31))
        # RFC 6733 §3: End-to-End ids start with the low 12 bits of the time in the high 12.
        self._e2e = itertools.count((int(time.time()) & 0xFFF) << 20)
        self.watchdog = watchdog
        #: The server's Origin-Host and Origin-Realm (from the CEA).
        self.peer_host = self.peer_realm = ""
        super().__init__(host, port, timeout=timeout, connect_timeout=connect_timeout)
        try:
            self._capabilities()
        except BaseException:
            self.close()
            raise
        self._watchdog = gevent.spawn(self._watch)

    def base(self) -> list[Item]:
        return [("Origin-Host", self.origin_host), ("Origin-Realm", self.origin_realm)]

    def _capabilities(self) -> None:
        cer = make_request(
            c.CMD_CAPABILITIES_EXCHANGE,
            0,
            [
                *self.base(),
                ("Host-IP-Address", "127.0.0.1"),
                ("Vendor-Id", 0),
                ("Product-Name", "ocs-locust"),
                ("Supported-Vendor-Id", c.VENDOR_3GPP),
                ("Auth-Application-Id", c.APP_CREDIT_CONTROL),
            ],
            hop_by_hop=0,
            end_to_end=0,
        )
        cea = self.request(cer)
        if cea.result_code != c.DIAMETER_SUCCESS:
            raise ConnectionError(f"CEA {cea.result_code}")
        self.peer_host = cea.get_str("Origin-Host", default="")
        self.peer_realm = cea.get_str("Origin-Realm", default="")

    def _received(self, data: bytes) -> None:
        framer = self._framer
        framer.receive_data(data)
        while (m := framer.next_message()) is not DIAMETER_NEED_DATA:
            assert isinstance(m, Message)
            if not m.is_request:
                self._answer(m.hop_by_hop, m)
            elif m.command_code in (c.CMD_DEVICE_WATCHDOG, c.CMD_DISCONNECT_PEER):
                self._send(self._ok(m).to_bytes())
            else:  # RAR, ASR: not expected from this OCS; refuse politely
                self._send(self._ok(m, c.DIAMETER_COMMAND_UNSUPPORTED).to_bytes())

    def _ok(self, request: Message, code: int = c.DIAMETER_SUCCESS) -> Message:
        return make_answer(
            request, result_code=code, origin_host=self.origin_host, origin_realm=self.origin_realm
        )

    def request(self, message: Message, timeout: float | None = None) -> Message:
        """Send a request (its Hop-by-Hop and End-to-End ids set here); its answer."""
        hop = next(self._hop) & 0xFFFFFFFF
        message.hop_by_hop = hop
        message.end_to_end = next(self._e2e) & 0xFFFFFFFF
        answer: Message = self._call(hop, message.to_bytes(), timeout)
        return answer

    def _watch(self) -> None:
        while not self.closed:
            idle = time.monotonic() - self.last_activity
            if idle < self.watchdog:
                gevent.sleep(self.watchdog - idle)
                continue
            dwr = make_request(c.CMD_DEVICE_WATCHDOG, 0, self.base(), hop_by_hop=0, end_to_end=0)
            try:
                self.request(dwr, timeout=max(self.watchdog, 1.0))
            except (TimeoutError, ConnectionError) as exc:
                self._fail(ConnectionError(f"watchdog: {exc}"))
                return

    def disconnect(self, timeout: float = 2.0) -> None:
        """DPR, wait (a little) for the DPA, close."""
        if not self.closed:
            dpr = make_request(
                c.CMD_DISCONNECT_PEER,
                0,
                [*self.base(), ("Disconnect-Cause", 2)],
                hop_by_hop=0,
                end_to_end=0,
            )
            with contextlib.suppress(TimeoutError, ConnectionError):
                self.request(dpr, timeout=timeout)
        self.close()

    def close(self) -> None:
        watchdog = getattr(self, "_watchdog", None)
        if watchdog is not None:
            watchdog.kill(block=False)
        super().close()
