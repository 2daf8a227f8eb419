"""asyncio server of the native charging protocol.

One :class:`asyncio.Protocol` per connection (not streams: fewer layers per request) feeds the
sans-IO :class:`~protocols.native.codec.ServerConnection` and runs the handler for each
request as it is read, without a task of its own (``protocols.lifecycle.InlineCalls``).
Replies are queued and written with one ``transport.write`` per loop turn
(docs/architecture.md, Performance, point 2).

Choices others rely on:

* ``ping`` is answered here (result ``success``) without calling the handler: it checks the
  connection and the event loop, not the store. The handler sees only charging requests.
* The handler must answer; if it raises, the request is still answered: a
  ``ConnectionError`` or ``TimeoutError`` (the store did not answer) becomes
  ``store-unavailable``; any other exception is logged with its traceback and becomes
  ``invalid-request`` with detail ``"internal error"`` (the request could not be carried out
  as sent; the client must not retry it blindly). Agents should map their own errors to
  results themselves and let only bugs reach this fallback.
* A reply whose id differs from the request's is logged and sent with the request's id.
* Back-pressure: a connection stops reading when ``max_inflight_per_connection`` of its
  requests are being handled, or when its transport asks us to pause writing (the peer is
  not reading its replies); it reads again when both clear.
* A broken frame (``ProtocolError``) is counted, answered with id 0 and ``invalid-request``,
  and the connection is closed; the handler tasks it had started finish but their replies
  are dropped.
* A stalled client is closed (:class:`~protocols.lifecycle.StallTimer`, counted in
  ``timed_out``): a frame started and not completed within ``frame_timeout`` seconds, or
  ``idle_timeout`` seconds without a byte while nothing is in flight (0 turns either off).
* ``close()``: stop accepting, stop reading on every connection, let started requests finish
  (at most ``drain_timeout`` seconds), write their replies, close the connections; what is
  still running then is cancelled and the connections are aborted. Frames read but not yet
  started are not answered (the client's call fails and it retries with the same key).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import secrets
import ssl
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Protocol, TypeAlias, cast

from protocols.lifecycle import InlineCalls, StallTimer, drain_and_close
from protocols.native.codec import (
    NEED_DATA,
    Challenge,
    ChargingRequest,
    Hello,
    InvalidRequest,
    Ping,
    Reply,
    ServerConnection,
    hello_mac,
)
from protocols.native.constants import (
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_HELLO_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_FRAME,
    DEFAULT_MAX_INFLIGHT_PER_CONNECTION,
    NONCE_SIZE,
    RESULT_INVALID_REQUEST,
    RESULT_STORE_UNAVAILABLE,
    RESULT_SUCCESS,
    RESULT_UNAUTHENTICATED,
)
from protocols.native.errors import LocalProtocolError, ProtocolError

__all__ = ["Handler", "HelloKeys", "NativeServer"]

logger = logging.getLogger(__name__)

#: Answers one charging request; must return a Reply carrying the request's id.
Handler: TypeAlias = Callable[[ChargingRequest], Awaitable[Reply]]


class HelloKeys(Protocol):
    """What the server asks of its owner to authenticate network elements (the OCS supplies
    it: this layer knows no key store)."""

    def secret(self, key: str) -> bytes | None:
        """The shared secret of key id ``key``; None if there is no such (enabled) key."""

    def refused(self, peer: object, reason: str) -> None:
        """A connection failed to authenticate (for metrics and the audit log)."""


class _ServerProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: NativeServer, loop: asyncio.AbstractEventLoop) -> None:
        self._server = server
        self._loop = loop
        self._codec = ServerConnection(server.max_frame)
        self._transport: asyncio.Transport | None = None
        self._inflight = 0
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._reading_paused = False
        self._writing_paused = False
        #: No new requests are started: closing, or after a broken frame.
        self._stopped = False
        #: The peer half-closed: answer what it sent, then close.
        self._eof = False
        #: The challenge sent, until the client answers it with a good hello.
        self._nonce: bytes | None = None
        self._hello_timer: asyncio.TimerHandle | None = None
        #: The codec holds the start of a frame (set by _process).
        self._partial = False
        #: _process is running (a request answered at once must not start it again).
        self._processing = False
        self._stall: StallTimer | None = None
        self.closed: asyncio.Future[None] = loop.create_future()

    # -- asyncio.Protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        server = self._server
        server.connections += 1
        server._protocols.add(self)
        if server._closing:
            self._stopped = True
            self._transport.abort()
            return
        self._stall = StallTimer(
            self._loop,
            idle_timeout=server.idle_timeout,
            frame_timeout=server.frame_timeout,
            busy=lambda: self._inflight > 0,
            on_stall=self._stalled,
        )
        # A client certificate the TLS layer verified authenticates the connection already.
        if server.keys is not None and not self._transport.get_extra_info("peercert"):
            self._nonce = secrets.token_bytes(NONCE_SIZE)
            self._queue(self._codec.send(Challenge(self._nonce)))
            # A connection that never says hello must not hold a slot for ever.
            self._hello_timer = self._loop.call_later(server.hello_timeout, self._no_hello)

    def _no_hello(self) -> None:
        self._hello_timer = None
        if self._nonce is not None and self._transport is not None and self._server.keys:
            peer = self._transport.get_extra_info("peername")
            self._server.keys.refused(peer, "no hello in time")
            self._server.refused += 1
            self._stopped = True
            self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._hello_timer is not None:
            self._hello_timer.cancel()
            self._hello_timer = None
        self._transport = None
        self._stopped = True
        if self._stall is not None:
            self._stall.cancel()
        self._out.clear()
        self._server._protocols.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._stopped:
            return
        self._codec.receive_data(data)
        self._process()
        if self._stall is not None:
            self._stall.received(self._partial)

    def eof_received(self) -> bool:
        # Keep the transport half-open so that the replies to what was sent still go out.
        self._eof = True
        self._process()
        return True

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._process()

    # -- request flow

    def _process(self) -> None:
        """Start every buffered request the in-flight limit allows."""
        if self._processing:
            return  # (a request answered at once, from inside the loop below: it goes on)
        self._processing = True
        try:
            self._start_requests()
        finally:
            self._processing = False

    def _start_requests(self) -> None:
        codec = self._codec
        server = self._server
        limit = server.max_inflight_per_connection
        while self._inflight < limit and not self._stopped and not self._writing_paused:
            try:
                event = codec.next_event()
            except ProtocolError as exc:
                self._reject(exc)
                return
            if event is NEED_DATA:
                self._partial = codec.buffered > 0
                break
            self._partial = False
            server.requests += 1
            if self._nonce is not None or isinstance(event, Hello):
                if not self._handshake(event):
                    return
            elif isinstance(event, InvalidRequest):
                server.invalid_requests += 1
                self._queue(
                    codec.send(Reply(event.id, RESULT_INVALID_REQUEST, detail=event.detail))
                )
            elif isinstance(event, Ping):
                self._queue(codec.send(Reply(event.id, RESULT_SUCCESS)))
            else:
                self._inflight += 1
                server._calls.start(self._loop, self._answer(event))
        self._update_reading()
        if self._inflight == 0 and (self._stopped or (self._eof and not self._writing_paused)):
            # Half-closed by the peer: every request it sent has been answered (with writing
            # paused, some may still wait in the codec's buffer; resume_writing comes back).
            self._close_transport()

    async def _answer(self, request: ChargingRequest) -> None:
        # (one coroutine around the handler's: the handler's failures handled here too)
        try:
            try:
                reply = await self._server._handler(request)
            except (ConnectionError, TimeoutError) as exc:
                logger.warning("native: %s failed, store unavailable: %r", request.verb, exc)
                self._server.handler_errors += 1
                reply = Reply(request.id, RESULT_STORE_UNAVAILABLE, detail="store unavailable")
            except Exception:
                logger.exception("native: handler failed on %r", request)
                self._server.handler_errors += 1
                reply = Reply(request.id, RESULT_INVALID_REQUEST, detail="internal error")
            else:
                if type(reply) is not Reply:
                    logger.error("native: handler returned %r for %r", reply, request)
                    self._server.handler_errors += 1
                    reply = Reply(request.id, RESULT_INVALID_REQUEST, detail="internal error")
                elif reply.id != request.id:
                    logger.error("native: handler answered id %d to request id %d",
                                 reply.id, request.id)  # fmt: skip
                    reply = dataclasses.replace(reply, id=request.id)
            try:
                data = self._codec.send(reply)
            except LocalProtocolError:
                logger.exception("native: cannot encode the reply to %s", request.verb)
                data = self._codec.send(
                    Reply(request.id, RESULT_INVALID_REQUEST, detail="internal error")
                )
            self._queue(data)
        finally:
            self._inflight -= 1
            # Only then can this answer let more be read or started, or end the connection
            # (while reading goes on, data_received starts the frames that come).
            if self._transport is not None and (self._reading_paused or self._stopped or self._eof):
                self._process()

    def _handshake(self, event: object) -> bool:
        """The first request of a challenged connection: a good hello, or the connection is
        refused (``unauthenticated``, then closed). False when it was refused."""
        keys, nonce = self._server.keys, self._nonce
        request_id = getattr(event, "id", 0)
        if nonce is None or keys is None:
            self._queue(self._codec.send(Reply(request_id, RESULT_INVALID_REQUEST,
                                               detail="already authenticated")))  # fmt: skip
            return True
        reason = "no hello"
        if isinstance(event, Hello):
            secret = keys.secret(event.key)
            good = secret is not None and hmac.compare_digest(
                hello_mac(secret, nonce, event.key), event.mac
            )
            if good:
                self._nonce = None
                if self._hello_timer is not None:
                    self._hello_timer.cancel()
                    self._hello_timer = None
                self._queue(self._codec.send(Reply(event.id, RESULT_SUCCESS)))
                return True
            reason = "unknown key" if secret is None else "wrong mac"
        peer = self._transport.get_extra_info("peername") if self._transport else None
        keys.refused(peer, reason)
        self._server.refused += 1
        detail = "send hello first" if reason == "no hello" else "authentication failed"
        self._queue(self._codec.send(Reply(request_id, RESULT_UNAUTHENTICATED, detail=detail)))
        self._stopped = True
        self._close_transport()
        return False

    def _reject(self, exc: ProtocolError) -> None:
        """A broken frame: answer it with id 0, then close the connection."""
        self._server.frames_rejected += 1
        peer = self._transport.get_extra_info("peername") if self._transport else None
        logger.info("native: broken frame from %s: %s", peer, exc.detail)
        self._queue(self._codec.send(exc.reply))
        self._stopped = True
        self._close_transport()

    def _stalled(self, reason: str) -> None:
        self._server.timed_out += 1
        peer = self._transport.get_extra_info("peername") if self._transport else None
        logger.info("native: closing the connection from %s: %s", peer, reason)
        self._stopped = True
        self._close_transport()

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None:
            return
        pause = (
            self._stopped
            or self._writing_paused
            or self._inflight >= self._server.max_inflight_per_connection
        )
        if pause != self._reading_paused:
            self._reading_paused = pause
            if pause:
                transport.pause_reading()
            else:
                transport.resume_reading()

    # -- output

    def _queue(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if not out:
            return
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    def _close_transport(self) -> None:
        """Write what is queued, then close (the transport sends its buffer first)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._flush()
        transport.close()

    # -- used by NativeServer

    def stop(self) -> None:
        """Start no new request; close once the started ones are answered."""
        self._stopped = True
        self._update_reading()
        if self._inflight == 0:
            self._close_transport()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    @property
    def reading_paused(self) -> bool:
        return self._reading_paused


class NativeServer:
    """Serves the native protocol on ``host``:``port`` (port 0: any free port, see
    :attr:`port` after :meth:`start`), answering each charging request with ``handler``.

    ``max_frame``: largest frame payload in bytes; ``max_inflight_per_connection``: requests
    of one connection handled at once before it stops reading; ``drain_timeout``: seconds
    :meth:`close` waits for started requests; ``frame_timeout`` and ``idle_timeout``: seconds
    before a stalled connection is closed (see the module docstring; 0: never). The int
    attributes ``connections``, ``requests``, ``invalid_requests``, ``frames_rejected``,
    ``timed_out`` and ``handler_errors`` count since start, for metrics.
    """

    def __init__(
        self,
        handler: Handler,
        host: str,
        port: int,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_inflight_per_connection: int = DEFAULT_MAX_INFLIGHT_PER_CONNECTION,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        reuse_port: bool = False,
        backlog: int = 1024,
        keys: HelloKeys | None = None,
        ssl: ssl.SSLContext | None = None,
        hello_timeout: float = DEFAULT_HELLO_TIMEOUT,
    ) -> None:
        if max_inflight_per_connection < 1:
            raise ValueError("max_inflight_per_connection must be at least 1")
        if frame_timeout < 0 or idle_timeout < 0:
            raise ValueError("frame_timeout and idle_timeout must not be negative")
        ServerConnection(max_frame)  # checks max_frame now rather than on first connection
        self._handler = handler
        self.host = host
        self.port = port
        self.max_frame = max_frame
        self.max_inflight_per_connection = max_inflight_per_connection
        self.drain_timeout = drain_timeout
        self.frame_timeout = frame_timeout
        self.idle_timeout = idle_timeout
        self._reuse_port = reuse_port
        self._backlog = backlog
        #: With keys, every connection must authenticate: by a TLS client certificate, or
        #: by the hello handshake. None: no authentication (a trusted network).
        self.keys = keys
        self._ssl = ssl
        #: Seconds a challenged connection has to say hello before it is closed.
        self.hello_timeout = hello_timeout
        self._server: asyncio.Server | None = None
        self._closing = False
        self._protocols: set[_ServerProtocol] = set()
        #: The requests being handled, over all connections.
        self._calls = InlineCalls(logger)
        #: Connections accepted since start.
        self.connections = 0
        #: Requests read (valid or not, pings included).
        self.requests = 0
        #: Requests answered with invalid-request because they failed validation.
        self.invalid_requests = 0
        #: Broken frames (each closed its connection).
        self.frames_rejected = 0
        #: Handler exceptions turned into replies.
        self.handler_errors = 0
        #: Connections that failed to authenticate (each was closed).
        self.refused = 0
        #: Connections closed because the client stalled (frame or idle timeout).
        self.timed_out = 0

    @property
    def open_connections(self) -> int:
        """Connections currently open."""
        return len(self._protocols)

    @property
    def inflight(self) -> int:
        """Requests being handled now, over all connections."""
        return len(self._calls)

    @property
    def paused_connections(self) -> int:
        """Connections that have stopped reading (back-pressure)."""
        return sum(1 for p in self._protocols if p.reading_paused)

    async def start(self) -> None:
        """Bind and start accepting connections."""
        if self._server is not None:
            raise RuntimeError("server already started")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ServerProtocol(self, loop),
            self.host,
            self.port,
            backlog=self._backlog,
            reuse_port=self._reuse_port or None,
            ssl=self._ssl,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info("native: listening on %s:%d", self.host, self.port)

    async def close(self) -> None:
        """Stop accepting, answer started requests (within ``drain_timeout``), close all."""
        if self._closing:
            return
        self._closing = True
        await drain_and_close(
            "native", self._server, self._protocols, self._calls, self.drain_timeout, logger
        )

    async def __aenter__(self) -> NativeServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
