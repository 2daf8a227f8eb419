"""asyncio transport of the Diameter base protocol (RFC 6733): peers, watchdogs, pipelining.

One :class:`asyncio.Protocol` per TCP (or TLS) connection drives a sans-IO :class:`Framer` and
a :class:`PeerMachine` (CER/CEA, DWR/DWA with the RFC 3539 watchdog, DPR/DPA). Application
requests the machine delivers are checked (``validate``) and handed to ``handler(message,
peer)`` at once, each running on without a task of its own (``InlineCalls``), so that
requests pipelined on one connection are served concurrently and answered as they complete.
Output is queued and written with one ``transport.write`` per loop turn. Nothing here knows
credit control or imports ``ocs``.

Choices others rely on:

* A request the decoder or ``validate`` finds fault with is answered here with
  ``error_answer`` (5001 with Failed-AVP for an unknown M-bit AVP, 5004, 5005, 5009, 5014...),
  copying the AVPs named in ``answer_copy``; the handler never sees it.
* A request for an application we did not advertise is answered 3007
  (DIAMETER_APPLICATION_UNSUPPORTED), and one of the base application (0) other than
  CER/DWR/DPR with 3001 (RFC 6733 §7.1.3). With ``realm_check``, a request whose
  Destination-Realm is not ours is answered 3003 (DIAMETER_REALM_NOT_SERVED) and one naming
  another Destination-Host 3002 (DIAMETER_UNABLE_TO_DELIVER).
* The handler must answer; if it raises, the request is answered 5012
  (DIAMETER_UNABLE_TO_COMPLY) and the exception logged.
* A stream that cannot be read (``FramingError``: bad version, bad length, over
  ``max_message``) is answered when its header was a request, then that connection alone is
  closed (the connection also closes after a 5011 or 5015 answer: the stream cannot be
  trusted past that header); the handler tasks it had started finish but their answers are
  dropped.
* Stalled peers: one that never sends CER is closed after ``cer_timeout`` seconds (RFC 6733
  §5.6.1's Wait-CER timer); one that starts a message and does not finish it within
  ``frame_timeout`` seconds is closed (counted in ``timed_out``); an open peer that goes silent
  is the watchdog's (RFC 3539: DWR, then close when no DWA comes).
* Back-pressure: a connection stops reading when ``max_inflight_per_connection`` of its
  requests are being handled or when its transport asks us to pause writing.
* ``close()``: stop accepting, send DPR (Disconnect-Cause REBOOTING) to every open peer,
  wait for the DPAs and for the requests in flight (at most ``drain_timeout`` seconds in
  all), write their answers, close; what is still running then is cancelled and the
  connections aborted.
* :meth:`DiameterServer.send_request` sends a request we originate (RAR, ASR) to a peer by
  its Origin-Host and returns the answer (the peer machine delivers answers to us).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from ssl import SSLContext
from types import TracebackType
from typing import Final, TypeAlias, cast

from protocols.diameter.codec import (
    NEED_DATA,
    AvpKey,
    Framer,
    Message,
    error_answer,
    validate,
)
from protocols.diameter.constants import (
    APP_DIAMETER_COMMON_MESSAGES,
    APP_RELAY,
    DEFAULT_CER_TIMEOUT,
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_WATCHDOG_INTERVAL,
    DIAMETER_APPLICATION_UNSUPPORTED,
    DIAMETER_COMMAND_UNSUPPORTED,
    DIAMETER_REALM_NOT_SERVED,
    DIAMETER_UNABLE_TO_COMPLY,
    DIAMETER_UNABLE_TO_DELIVER,
    DIAMETER_UNKNOWN_PEER,
)
from protocols.diameter.errors import FramingError, LocalProtocolError, Problem
from protocols.diameter.peer import (
    Action,
    Close,
    Deliver,
    LocalIdentity,
    Opened,
    PeerMachine,
    RemotePeer,
    Send,
    SetTimer,
)
from protocols.lifecycle import InlineCalls, StallTimer, drain_and_close

__all__ = [
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_MAX_INFLIGHT_PER_CONNECTION",
    "DEFAULT_REQUEST_TIMEOUT",
    "DiameterServer",
    "Handler",
    "PeerUnavailable",
]

logger = logging.getLogger(__name__)

#: Requests of one connection handled at once before it stops reading.
DEFAULT_MAX_INFLIGHT_PER_CONNECTION: Final = 256
#: Seconds ``close`` waits for DPAs and in-flight requests.
DEFAULT_DRAIN_TIMEOUT: Final = 5.0
#: Seconds ``send_request`` waits for the answer (RFC 4006's Tx is of the same order).
DEFAULT_REQUEST_TIMEOUT: Final = 10.0

#: Answers one application request; the peer is the one that sent it (open, CER done).
Handler: TypeAlias = Callable[[Message, RemotePeer], Awaitable[Message]]


class PeerUnavailable(ConnectionError):
    """No open connection to that peer, or it closed before answering."""


class _PeerProtocol(asyncio.Protocol):
    """One peer connection (we are the responder)."""

    def __init__(self, server: DiameterServer, loop: asyncio.AbstractEventLoop) -> None:
        self._server = server
        self._loop = loop
        self._framer = Framer(server.max_message)
        self.machine = PeerMachine(
            server.identity,
            watchdog_interval=server.watchdog_interval,
            allowed_peers=server.allowed_peers,
            allowed_realms=server.allowed_realms,
            cer_timeout=server.cer_timeout,
        )
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._inflight = 0
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._reading_paused = False
        self._writing_paused = False
        #: The machine asked to close: read nothing more, close once in-flight requests end.
        self._closing = False
        #: Our requests (RAR, ASR) waiting for answers, by Hop-by-Hop identifier.
        self._pending: dict[int, asyncio.Future[Message]] = {}
        #: The framer holds the start of a message (set by _read).
        self._partial = False
        #: _read is running (a request answered at once must not start it again).
        self._reading = False
        self._stall: StallTimer | None = None
        self.remote: RemotePeer | None = None
        self.closed: asyncio.Future[None] = loop.create_future()

    # -- asyncio.Protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        server = self._server
        server.connections += 1
        server._protocols.add(self)
        if server._closing:
            self._transport.abort()
            return
        if server.admit is not None:
            admit, address = server.admit, transport.get_extra_info("peername")
            self.machine.admit = lambda peer: admit(peer, address)
        if server.frame_timeout:
            # Idle connections are the watchdog's (RFC 3539) and the CER timer's.
            self._stall = StallTimer(
                self._loop,
                idle_timeout=0,
                frame_timeout=server.frame_timeout,
                busy=lambda: self._inflight > 0,
                on_stall=self._stalled,
            )
        self._run(self.machine.start(self._loop.time()))

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._closing = True
        self._out.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._stall is not None:
            self._stall.cancel()
        self.machine.connection_lost(self._loop.time())
        server = self._server
        server._protocols.discard(self)
        if self.remote is not None and server._peers.get(self.remote.origin_host) is self:
            del server._peers[self.remote.origin_host]
        for future in self._pending.values():
            if not future.done():
                future.set_exception(PeerUnavailable("the peer closed the connection"))
        self._pending.clear()
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._framer.receive_data(data)
        self._read()
        if self._stall is not None:
            self._stall.received(self._partial)

    def eof_received(self) -> bool:
        # The peer half-closed: answer what it sent (the transport stays open for writing),
        # then close.
        self._closing = True
        self._close_when_idle()
        return True

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._read()

    # -- input

    def _read(self) -> None:
        if self._reading:
            return  # (a request answered at once, from inside the loop below: it goes on)
        self._reading = True
        try:
            self._read_messages()
        finally:
            self._reading = False

    def _read_messages(self) -> None:
        framer = self._framer
        server = self._server
        limit = server.max_inflight_per_connection
        while not self._closing and not self._writing_paused and self._inflight < limit:
            try:
                message = framer.next_message()
            except FramingError as exc:
                self._framing_error(exc)
                return
            if message is NEED_DATA:
                self._partial = framer.buffered > 0
                break
            self._partial = False
            server.messages_received += 1
            self._run(self.machine.receive(message, self._loop.time()))
        self._update_reading()

    def _framing_error(self, exc: FramingError) -> None:
        server = self._server
        server.framing_errors += 1
        peer = self._transport.get_extra_info("peername") if self._transport else None
        logger.info("diameter: unreadable stream from %s: %s", peer, exc.detail)
        if exc.request is not None:
            self._send(self._error(exc.request, [exc.problem]))
        self._closing = True
        self._close_transport()

    def _stalled(self, reason: str) -> None:
        self._server.timed_out += 1
        logger.info("diameter: closing the connection from %s: %s", self._name, reason)
        self._closing = True
        self._close_transport()

    def _run(self, actions: list[Action]) -> None:
        for action in actions:
            if type(action) is Send:
                refused = self._server.on_refused
                if (
                    refused is not None
                    and self.remote is None  # only a CEA can refuse a peer
                    and action.message.result_code == DIAMETER_UNKNOWN_PEER
                ):
                    # A CER from a peer not on the allow-lists (RFC 6733 §5.3, 3010).
                    peer = self._transport.get_extra_info("peername") if self._transport else None
                    refused(peer, "unknown peer")
                self._send(action.message)
            elif type(action) is Deliver:
                self._deliver(action.message)
            elif type(action) is SetTimer:
                self._set_timer(action.deadline)
            elif type(action) is Opened:
                self._opened(action.peer)
            elif type(action) is Close:
                logger.info("diameter: closing connection to %s: %s", self._name, action.reason)
                self._closing = True
                self._close_when_idle()

    @property
    def _name(self) -> str:
        if self.remote is not None:
            return self.remote.origin_host
        peer = self._transport.get_extra_info("peername") if self._transport else None
        return str(peer)

    def _opened(self, peer: RemotePeer) -> None:
        self.remote = peer
        server = self._server
        server.peers_opened += 1
        old = server._peers.get(peer.origin_host)
        if old is not None and old is not self:
            logger.warning("diameter: %s connected again; the new connection wins",
                           peer.origin_host)  # fmt: skip
        server._peers[peer.origin_host] = self
        logger.info("diameter: peer %s (%s) open", peer.origin_host, peer.product_name)

    def _deliver(self, message: Message) -> None:
        server = self._server
        if not message.is_request:
            future = self._pending.pop(message.hop_by_hop, None)
            if future is None:
                server.unexpected_answers += 1
                logger.info("diameter: unexpected %s from %s", message.name, self._name)
            elif not future.done():
                future.set_result(message)
            return
        server.requests += 1
        problems = validate(message) or server._route_problems(message)
        if problems:
            server.rejected_requests += 1
            self._send(self._error(message, problems))
            return
        remote = self.remote
        assert remote is not None  # the machine delivers only once the peer is open
        self._inflight += 1
        # (no task per request: docs/diameter.md, Speed)
        server._calls.start(self._loop, self._answer(message, remote))

    async def _answer(self, request: Message, remote: RemotePeer) -> None:
        server = self._server
        try:
            try:
                answer = await server._handler(request, remote)
            except Exception as exc:
                if isinstance(exc, ConnectionError | TimeoutError):
                    logger.warning("diameter: %s failed: %r", request.name, exc)
                else:
                    logger.exception("diameter: handler failed on %r", request)
                server.handler_errors += 1
                answer = self._error(
                    request, [Problem(DIAMETER_UNABLE_TO_COMPLY, "internal error")]
                )
            self._send(answer)
        finally:
            self._inflight -= 1
            if self._transport is not None:
                if self._closing:
                    self._close_when_idle()
                else:
                    self._read()

    def _error(self, request: Message, problems: Sequence[Problem]) -> Message:
        identity = self._server.identity
        return error_answer(
            request,
            problems,
            origin_host=identity.origin_host,
            origin_realm=identity.origin_realm,
            copy=self._server.answer_copy,
        )

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None:
            return
        pause = (
            self._closing
            or self._writing_paused
            or self._inflight >= self._server.max_inflight_per_connection
        )
        if pause != self._reading_paused:
            self._reading_paused = pause
            if pause:
                transport.pause_reading()
            else:
                transport.resume_reading()

    # -- timer

    def _set_timer(self, deadline: float) -> None:
        timer = self._timer
        if timer is not None:
            if timer.when() <= deadline:
                # Every request pushes the watchdog back: the timer armed for an earlier
                # deadline stays, and re-arms itself for the machine's deadline when it fires
                # (``_timer_fired``), instead of one cancel and one new timer per message.
                return
            timer.cancel()
        self._timer = self._loop.call_at(deadline, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        if self._transport is None:
            return
        deadline = self.machine.deadline
        now = self._loop.time()
        if deadline is not None and now < deadline:
            # The loop may run a timer a clock tick early; the machine ignores early calls.
            self._timer = self._loop.call_at(deadline, self._timer_fired)
            return
        self._run(self.machine.timer_expired(now))

    # -- output

    def _send(self, message: Message) -> None:
        try:
            data = self._framer.send(message)
        except LocalProtocolError:
            logger.exception("diameter: cannot encode %s for %s", message.name, self._name)
            if not message.is_request:
                data = self._framer.send(
                    self._error(message, [Problem(DIAMETER_UNABLE_TO_COMPLY, "internal error")])
                )
            else:
                return
        self._queue(data)
        self._server.messages_sent += 1

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

    def _close_when_idle(self) -> None:
        self._update_reading()
        if self._inflight == 0:
            self._close_transport()

    def _close_transport(self) -> None:
        """Write what is queued, then close (the transport sends its buffer first)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._flush()
        transport.close()

    # -- used by DiameterServer

    def stop(self) -> None:
        """Graceful shutdown: DPR to an open peer (then the machine closes on the DPA or its
        timeout), otherwise close once the requests in flight are answered."""
        if self._transport is None:
            return
        if self.machine.is_open:
            self._run(self.machine.stop(self._loop.time()))
        else:
            self._closing = True
            self._close_when_idle()

    def request(self, message: Message) -> asyncio.Future[Message]:
        """Send a request we originate; the future gets its answer."""
        if self._transport is None or self._closing or not self.machine.is_open:
            raise PeerUnavailable("the connection to the peer is closing")
        ids = self.machine.ids
        message.hop_by_hop = ids.hop_by_hop()
        message.end_to_end = ids.end_to_end(time.time())
        future: asyncio.Future[Message] = self._loop.create_future()
        self._pending[message.hop_by_hop] = future
        self._send(message)
        return future

    def forget(self, hop_by_hop: int) -> None:
        self._pending.pop(hop_by_hop, None)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    @property
    def reading_paused(self) -> bool:
        return self._reading_paused


class DiameterServer:
    """Serves Diameter on ``host``:``port`` (port 0: any free port, see :attr:`port` after
    :meth:`start`) as ``identity``, answering application requests with ``handler``.

    ``max_message``: largest message in bytes (larger closes the connection);
    ``watchdog_interval``: Tw in seconds (RFC 3539, at least 6); ``allowed_peers``:
    Origin-Hosts allowed to connect, ``allowed_realms``: Origin-Realms (None: any; others
    get 3010, DIAMETER_UNKNOWN_PEER, in the CEA); ``admit``: called with each CER's peer
    and the connection's peername, returns None to admit it or the reason for a 3010; ``ssl``: a
    server-side TLS context (TLS from the first byte, RFC 6733 §13); ``realm_check``: answer
    requests for another Destination-Realm with 3003; ``answer_copy``: AVPs copied from a
    request into the error answers built here (for credit control: Auth-Application-Id,
    CC-Request-Type, CC-Request-Number, RFC 4006 §3.2); ``cer_timeout``, ``frame_timeout``:
    seconds before a stalled connection is closed (see the module docstring; a frame timeout
    of 0: never). The int attributes count since start, for metrics.
    """

    def __init__(
        self,
        identity: LocalIdentity,
        handler: Handler,
        host: str,
        port: int,
        *,
        max_message: int = DEFAULT_MAX_MESSAGE_SIZE,
        watchdog_interval: float = DEFAULT_WATCHDOG_INTERVAL,
        allowed_peers: frozenset[str] | None = None,
        allowed_realms: frozenset[str] | None = None,
        ssl: SSLContext | None = None,
        max_inflight_per_connection: int = DEFAULT_MAX_INFLIGHT_PER_CONNECTION,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        realm_check: bool = False,
        answer_copy: Sequence[AvpKey] = (),
        cer_timeout: float = DEFAULT_CER_TIMEOUT,
        frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
        reuse_port: bool = False,
        backlog: int = 1024,
        on_refused: Callable[[object, str], None] | None = None,
        admit: Callable[[RemotePeer, object], str | None] | None = None,
    ) -> None:
        if max_inflight_per_connection < 1:
            raise ValueError("max_inflight_per_connection must be at least 1")
        Framer(max_message)  # checks max_message now rather than on the first connection
        # ... and the watchdog interval (ValueError naming RFC 3539's minimum).
        PeerMachine(identity, watchdog_interval=watchdog_interval, cer_timeout=cer_timeout)
        if frame_timeout < 0:
            raise ValueError("frame_timeout must not be negative")
        self.identity = identity
        self._handler = handler
        self.host = host
        self.port = port
        self.max_message = max_message
        self.watchdog_interval = watchdog_interval
        self.allowed_peers = allowed_peers or None
        self.allowed_realms = allowed_realms or None
        #: Decides each CER's peer with the connection's address (peername): None admits it,
        #: a reason refuses it with 3010 (ocs.auth.diameter).
        self.admit = admit
        #: Told of every peer refused at the capabilities exchange (metrics, audit).
        self.on_refused = on_refused
        self.ssl = ssl
        self.max_inflight_per_connection = max_inflight_per_connection
        self.drain_timeout = drain_timeout
        self.realm_check = realm_check
        self.answer_copy = tuple(answer_copy)
        self.cer_timeout = cer_timeout
        self.frame_timeout = frame_timeout
        self._reuse_port = reuse_port
        self._backlog = backlog
        self._apps = frozenset(identity.auth_application_ids) | frozenset(
            identity.acct_application_ids
        )
        self._server: asyncio.Server | None = None
        self._closing = False
        self._protocols: set[_PeerProtocol] = set()
        self._peers: dict[str, _PeerProtocol] = {}
        #: The requests being handled, over all connections.
        self._calls = InlineCalls(logger)
        #: Connections accepted since start.
        self.connections = 0
        #: Capabilities exchanges that succeeded.
        self.peers_opened = 0
        #: Messages read and written (every command).
        self.messages_received = 0
        self.messages_sent = 0
        #: Application requests received (answered by the handler or with an error here).
        self.requests = 0
        #: Application requests answered here with an error (bad AVPs, wrong application...).
        self.rejected_requests = 0
        #: Streams that could not be read (each closed its connection).
        self.framing_errors = 0
        #: Handler exceptions turned into 5012 answers.
        self.handler_errors = 0
        #: Answers that matched no request of ours.
        self.unexpected_answers = 0
        #: Connections closed because a message stayed incomplete (``frame_timeout``).
        self.timed_out = 0

    # -- state

    @property
    def open_connections(self) -> int:
        """Connections open now (capabilities exchanged or not)."""
        return len(self._protocols)

    @property
    def open_peers(self) -> list[str]:
        """Origin-Hosts of the peers open now."""
        return sorted(h for h, p in self._peers.items() if p.machine.is_open)

    @property
    def peer_states(self) -> dict[str, int]:
        """Connections open now by the state of their peer machine ("OPEN", "WAIT_CER"...)."""
        states: dict[str, int] = {}
        for p in self._protocols:
            name = p.machine.state.value
            states[name] = states.get(name, 0) + 1
        return states

    @property
    def inflight(self) -> int:
        """Application requests being handled now, over all connections."""
        return len(self._calls)

    @property
    def paused_connections(self) -> int:
        """Connections that have stopped reading (back-pressure)."""
        return sum(1 for p in self._protocols if p.reading_paused)

    def _route_problems(self, message: Message) -> list[Problem]:
        app = message.application_id
        if app == APP_DIAMETER_COMMON_MESSAGES:
            return [Problem(DIAMETER_COMMAND_UNSUPPORTED, f"{message.name} is not supported")]
        if app not in self._apps and APP_RELAY not in self._apps:
            return [Problem(DIAMETER_APPLICATION_UNSUPPORTED, f"application {app} not served")]
        if self.realm_check:
            realm = message.get_str("Destination-Realm")
            if realm is not None and realm.lower() != self.identity.origin_realm.lower():
                return [Problem(DIAMETER_REALM_NOT_SERVED, f"realm {realm!r} is not served")]
            host = message.get_str("Destination-Host")
            if host is not None and host.lower() != self.identity.origin_host.lower():
                return [Problem(DIAMETER_UNABLE_TO_DELIVER, f"host {host!r} is not this one")]
        return []

    # -- lifecycle

    async def start(self) -> None:
        """Bind and start accepting connections."""
        if self._server is not None:
            raise RuntimeError("server already started")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _PeerProtocol(self, loop),
            self.host,
            self.port,
            ssl=self.ssl,
            backlog=self._backlog,
            reuse_port=self._reuse_port or None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info("diameter: listening on %s:%d as %s", self.host, self.port,
                    self.identity.origin_host)  # fmt: skip

    async def close(self) -> None:
        """Stop accepting, DPR to every peer, drain (within ``drain_timeout``), close all."""
        if self._closing:
            return
        self._closing = True
        await drain_and_close(
            "diameter", self._server, self._protocols, self._calls, self.drain_timeout, logger
        )

    async def __aenter__(self) -> DiameterServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- requests we originate

    async def send_request(
        self, peer_origin_host: str, message: Message, *, within: float = DEFAULT_REQUEST_TIMEOUT
    ) -> Message:
        """Send ``message`` (a request: RAR, ASR) to the open peer ``peer_origin_host`` and
        return its answer. Its Hop-by-Hop and End-to-End identifiers are set here.
        :class:`PeerUnavailable` when there is no such open peer or it goes away first;
        ``TimeoutError`` after ``within`` seconds."""
        if not message.is_request:
            raise ValueError("send_request sends requests")
        protocol = self._peers.get(peer_origin_host)
        if protocol is None or self._closing:
            raise PeerUnavailable(f"no open connection to {peer_origin_host!r}")
        future = protocol.request(message)
        try:
            return await asyncio.wait_for(future, within)
        finally:
            protocol.forget(message.hop_by_hop)
