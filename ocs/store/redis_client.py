"""A thin auto-pipelining asyncio Redis client for the hot path.

docs/architecture.md (Performance) records the Redis client as the dominant cost of a request:
awaiting redis-py once per request costs ~100-130 us of client CPU per call, while a client
that writes every command issued during one event-loop turn as one write and parses replies
with hiredis costs ~12-15 us. This module is that client, kept deliberately small:

* ONE connection (an :class:`asyncio.Protocol`); commands are encoded as they are issued,
  buffered, and flushed by a single ``loop.call_soon`` callback, so the commands of one loop
  turn leave in one ``write``;
* replies are parsed by :class:`hiredis.Reader` and matched first-in first-out to futures
  (Redis answers the commands of one connection in order);
* the connection is (re)opened lazily by the next call after it was lost; while Redis is down
  calls fail at once with :class:`RedisUnavailable`;
* each call has a deadline; when one passes, the connection is dropped (the replies still due
  on it can no longer be trusted to line up) and the next call reconnects;
* TCP (``redis://``), TLS (``rediss://``, certificates checked against the system's CAs or
  ``ssl_ca_certs``) and Unix sockets (``unix:///path/redis.sock``), with the URL forms and
  query parameters redis-py reads, so one URL serves both clients.

Because every caller shares the connection, commands that hold it (BLPOP, SUBSCRIBE, MULTI
spread over several awaits) must not be sent through it; use redis-py for those, off the hot
path. RESP2 is spoken: bulk strings come back as bytes (or str with ``decode``), integers as
int, nil as None, Lua tables as lists, error replies nested in arrays as :class:`ReplyError`
values.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import math
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Protocol, TypeAlias, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

from ocs.lifecycle import AsyncConnection
from ocs.tasks import SingleFlight

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "Arg",
    "ClientClosed",
    "CommandTimeout",
    "ConnectionLost",
    "Function",
    "LibraryLoader",
    "NotReplicated",
    "PipelinedRedis",
    "RedisClientError",
    "RedisUnavailable",
    "ReplyError",
    "Script",
]

#: One command argument; ints are sent as decimal strings (bool is refused by the encoder).
Arg: TypeAlias = str | bytes | int

#: Seconds a call waits for its reply before the connection is declared broken.
DEFAULT_TIMEOUT: Final = 5.0
#: Seconds allowed to open a connection (and AUTH/SELECT on it); kept short so that callers
#: fail fast while Redis is unreachable instead of queueing behind a hanging connect.
DEFAULT_CONNECT_TIMEOUT: Final = 1.0
#: Timers may fire a little early (uvloop has millisecond resolution): a deadline this close
#: counts as passed, so the watchdog does not spin re-arming itself.
_TIMER_SLACK: Final = 0.001


# -- errors ------------------------------------------------------------------------------------


class RedisClientError(Exception):
    """Base class of the errors of this client."""


class ReplyError(RedisClientError):
    """Redis answered with an error reply (``-ERR ...``, ``-NOSCRIPT ...``)."""

    @property
    def message(self) -> str:
        """The error text as Redis sent it, e.g. ``"NOSCRIPT No matching script..."``."""
        return str(self.args[0]) if self.args else ""


class ConnectionLost(RedisClientError):
    """No reply can come: the connection broke while the command was in flight.

    The command may or may not have been executed by Redis.
    """


class RedisUnavailable(ConnectionLost):
    """No connection could be opened; the command was not sent."""


class CommandTimeout(ConnectionLost, TimeoutError):
    """No reply within the call's timeout; the connection was dropped (it may have run)."""


class NotReplicated(RedisClientError):
    """A script ran, but fewer replicas than required acknowledged it in time (``WAIT``).

    The change is on the master and may be lost if it fails now: the caller treats the
    request as not done, and a retry with the same request key replays the stored answer and
    waits again.
    """


class ClientClosed(RedisClientError):
    """The client was closed with :meth:`PipelinedRedis.close`."""


class _Default(enum.Enum):
    TIMEOUT = enum.auto()


#: Marker for "the client's default timeout" (``None`` means no timeout at all).
_DEFAULT_TIMEOUT: Final = _Default.TIMEOUT
Timeout: TypeAlias = float | _Default | None

#: Encodes one command as RESP (C code in hiredis). Its bundled stub wrongly types the argument
#: as a one-element tuple, hence the cast.
_pack = cast(Callable[[tuple[Arg, ...]], bytes], hiredis.pack_command)

# hiredis returns this object when the buffer holds no complete reply; a private object
# cannot be confused with any reply value.
_NEED_DATA: Final = object()


def _decode(reply: Any) -> Any:
    """Bulk and status strings as str (UTF-8), recursively through arrays."""
    if type(reply) is bytes:
        return reply.decode()
    if type(reply) is list:
        return [_decode(item) for item in reply]
    return reply


# -- the connection ------------------------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One TCP connection: buffers commands, writes once per loop turn, matches replies FIFO."""

    def __init__(self, client: PipelinedRedis, loop: asyncio.AbstractEventLoop) -> None:
        self._client = client
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        #: Futures awaiting a reply, oldest first, with their deadlines (loop time).
        self.pending: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._reader = hiredis.Reader(replyError=ReplyError, notEnoughData=_NEED_DATA)
        self._watchdog: asyncio.TimerHandle | None = None
        self._watchdog_at = math.inf
        #: The WAIT that follows this loop turn's commands (durability "replica"), if any.
        self._wait: tuple[asyncio.Future[Any], bytes, float] | None = None
        #: Resolved by connection_lost(): close() waits on it so the transport is gone.
        self.lost: asyncio.Future[None] = loop.create_future()
        #: Stands, already done, for the future of every command whose reply nobody awaits
        #: (``send(..., answered=False)``): its reply is dropped as a cancelled caller's is.
        self._unanswered: asyncio.Future[Any] = loop.create_future()
        self._unanswered.set_result(None)

    # Protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport does not subclass asyncio.Transport, so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        pending = self.pending
        reader.feed(data)
        try:
            while (reply := reader.gets()) is not _NEED_DATA:
                fut = pending.popleft()[0]
                # A caller that was cancelled left its future behind: drop its reply.
                if fut.done():
                    continue
                if type(reply) is ReplyError:
                    fut.set_exception(reply)
                else:
                    fut.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:
            # Garbage, or a reply nobody asked for: nothing after it can be matched.
            message = f"protocol error from Redis: {exc!r}"
            self._drop(lambda _deadline: ConnectionLost(message))

    def eof_received(self) -> bool | None:
        return None  # let the transport close; connection_lost() fails what is pending

    def connection_lost(self, exc: Exception | None) -> None:
        self._detach()
        reason = f": {exc}" if exc is not None else ""
        self._fail_pending(lambda _deadline: ConnectionLost(f"connection to Redis lost{reason}"))
        if not self.lost.done():
            self.lost.set_result(None)

    # Sending

    def send(self, packed: bytes, deadline: float, *, answered: bool = True) -> asyncio.Future[Any]:
        """Queue one encoded command; the returned future gets its reply (``answered``
        False: nobody waits for it, the reply is dropped and no future is made per command)."""
        if self.closed:
            # Dropped between the caller's check and now (e.g. right after connecting).
            raise ConnectionLost("connection to Redis lost")
        fut: asyncio.Future[Any] = self.loop.create_future() if answered else self._unanswered
        self.pending.append((fut, deadline))
        self._out.append(packed)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            # Runs after every callback already queued for this turn, so all the commands
            # issued meanwhile go out together.
            self.loop.call_soon(self._flush)
        if deadline < self._watchdog_at:
            self._arm_watchdog(deadline)
        return fut

    def wait_after(self, packed_wait: bytes, deadline: float) -> asyncio.Future[Any]:
        """The reply of one WAIT sent after every command of this loop turn's write.

        One WAIT per write covers all the scripts before it on this connection (Redis counts
        the replicas that acknowledged the connection's last write), so durability costs one
        command per write, not one per request. Await it through ``asyncio.shield``: the
        future is shared.
        """
        wait = self._wait
        if wait is None:
            fut: asyncio.Future[Any] = self.loop.create_future()
            fut.add_done_callback(_drop_result)
            self._wait = wait = (fut, packed_wait, deadline)
        return wait[0]

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.closed or not self._out:
            return
        if self._wait is not None:
            fut, packed_wait, deadline = self._wait
            self._wait = None
            self.pending.append((fut, deadline))
            self._out.append(packed_wait)
        assert self.transport is not None
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        self._out.clear()
        self.transport.write(data)
        self._client.writes += 1

    # Timeouts: one timer per connection, armed for the earliest deadline pending, instead of
    # one timer per call.

    def _arm_watchdog(self, when: float) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog_at = when
        self._watchdog = self.loop.call_at(when, self._check_deadlines)

    def _check_deadlines(self) -> None:
        self._watchdog = None
        self._watchdog_at = math.inf
        if self.closed or not self.pending:
            return
        now = self.loop.time() + _TIMER_SLACK
        earliest = min(deadline for _fut, deadline in self.pending)
        if earliest > now:
            self._arm_watchdog(earliest)
            return

        def error(deadline: float) -> ConnectionLost:
            if deadline <= now:
                return CommandTimeout("no reply from Redis in time; connection dropped")
            return ConnectionLost("connection dropped after another command timed out")

        self._drop(error)

    # Closing

    def _detach(self) -> None:
        self.closed = True
        self._out.clear()
        if self._wait is not None:
            fut = self._wait[0]
            self._wait = None
            if not fut.done():
                fut.set_exception(ConnectionLost("connection to Redis lost before WAIT"))
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._watchdog_at = math.inf
        self._client._connection_gone(self)

    def abandon(self) -> None:
        """Abort a connection whose set-up failed (nobody else knows of it)."""
        self._detach()
        while self.pending:
            self.pending.popleft()[0].cancel()
        if self.transport is not None:
            self.transport.abort()

    def _fail_pending(self, make_error: Callable[[float], ConnectionLost]) -> None:
        pending = self.pending
        while pending:
            fut, deadline = pending.popleft()
            if not fut.done():
                # One exception object per future: a shared one would collect tracebacks.
                fut.set_exception(make_error(deadline))

    def _drop(self, make_error: Callable[[float], ConnectionLost]) -> None:
        """Abandon the connection now: fail what is pending, abort the transport."""
        self._detach()
        self._fail_pending(make_error)
        if self.transport is not None:
            self.transport.abort()  # connection_lost() follows and resolves `lost`

    async def aclose(self, drain_timeout: float | None) -> None:
        """Send what is buffered, wait (bounded) for replies in flight, then close."""
        if not self.closed:
            self._flush()
            waiting = [fut for fut, _deadline in self.pending if not fut.done()]
            if waiting:
                await asyncio.wait(waiting, timeout=drain_timeout)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        elif self.transport is None and not self.lost.done():
            self.lost.set_result(None)
        await asyncio.shield(self.lost)


# -- the client --------------------------------------------------------------------------------


class PipelinedRedis(AsyncConnection):
    """An auto-pipelining Redis client over one connection.

    Args:
        host: Redis host.
        port: Redis port.
        db: database selected on connect.
        username: ACL user name (Redis 6+), or None for the default user.
        password: password sent with AUTH on connect, or None.
        decode: return bulk strings as str instead of bytes (each call may override).
        timeout: default seconds a call waits for its reply; None waits forever.
        connect_timeout: seconds allowed to open a connection.
        wait_replicas: durability "replica" (docs/operations.md): every script call is
            acknowledged only once this many replicas have it (``WAIT``, one per write);
            0 (default) does not wait.
        wait_timeout_ms: how long WAIT waits for them; past it the call raises
            :class:`NotReplicated`.
        ssl: TLS for the connection (``rediss://``), or None for plain TCP.
        unix_path: a Unix socket to connect to instead of ``host`` and ``port``.

    Use it as ``async with PipelinedRedis.from_url(url) as redis: ...`` or call
    :meth:`connect` and :meth:`close` yourself. It must be used from one event loop.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 6379,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        decode: bool = False,
        timeout: float | None = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 0,
        ssl: ssl.SSLContext | None = None,
        unix_path: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl = ssl
        self.unix_path = unix_path
        self.db = db
        self.username = username
        self.password = password
        self.decode = decode
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self._wait_packed = _pack(("WAIT", wait_replicas, wait_timeout_ms))
        #: Number of socket writes so far (all connections): a test and benchmark figure.
        self.writes = 0
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> PipelinedRedis:
        """Build a client from ``redis://[[user]:password@]host[:port][/db]``,
        ``rediss://...`` (TLS; query ``ssl_ca_certs=FILE``, ``ssl_certfile=FILE`` and
        ``ssl_keyfile=FILE`` for a client certificate, ``ssl_cert_reqs=none`` to skip the
        check) or ``unix://[[user]:password@]/path/to/socket[?db=N]``; ValueError names
        what is wrong.

        Keyword arguments are passed on to the constructor (``decode``, ``timeout``...).
        """
        kwargs.update(parse_url(url))
        return cls(**kwargs)

    def __repr__(self) -> str:
        state = "connected" if self.connected else "closed" if self._closed else "idle"
        return f"<PipelinedRedis {self.where}/{self.db} {state}>"

    @property
    def connected(self) -> bool:
        """True while a connection is open."""
        return self._conn is not None and not self._conn.closed

    # Lifecycle

    async def connect(self) -> None:
        """Open the connection now (otherwise the first call does).

        Raises:
            RedisUnavailable: Redis cannot be reached (or refused AUTH/SELECT).
        """
        self._closed = False
        await self._connection()

    async def close(self) -> None:
        """Wait (up to the default timeout) for replies in flight, then close the connection.

        Calls made afterwards raise :class:`ClientClosed` until :meth:`connect` is called.
        """
        self._closed = True
        task = self._connecting
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        conn, self._conn = self._conn, None  # calls from now on get ClientClosed
        if conn is not None:
            await conn.aclose(self.timeout)

    # Commands

    async def execute(
        self,
        *args: Arg,
        decode: bool | None = None,
        timeout: Timeout = _DEFAULT_TIMEOUT,  # noqa: ASYNC109 (one watchdog per connection)
    ) -> Any:
        """Run one command, e.g. ``await redis.execute("HGET", key, "balance")``.

        Args:
            args: the command and its arguments.
            decode: return strings as str; None uses the client's setting.
            timeout: seconds to wait for the reply; None waits forever; by default the
                client's ``timeout``.

        Raises:
            ReplyError: Redis answered with an error.
            ConnectionLost: the connection broke (:class:`RedisUnavailable`: it could not be
                opened; :class:`CommandTimeout`: no reply in time).
            ClientClosed: the client was closed.
        """
        return await self._call(_pack(args), decode, timeout)

    async def evalsha(
        self,
        sha: str,
        keys: Sequence[str | bytes],
        args: Sequence[Arg],
        *,
        decode: bool | None = None,
        timeout: Timeout = _DEFAULT_TIMEOUT,  # noqa: ASYNC109 (one watchdog per connection)
    ) -> Any:
        """``EVALSHA sha len(keys) *keys *args`` (see :meth:`execute` for the options)."""
        packed = _pack(("EVALSHA", sha, len(keys), *keys, *args))
        return await self._call(packed, decode, timeout)

    def send_nowait(self, *args: Arg) -> bool:
        """Queue a command whose answer nobody waits for (a hint, such as an index entry).

        It goes out in the current loop turn's write, with the commands awaited beside it, and
        adds no round trip. Its reply or error is consumed and dropped. Returns False, sending
        nothing, when no connection is open at the moment.
        """
        conn = self._conn
        if conn is None or conn.closed:
            return False
        deadline = math.inf if self.timeout is None else conn.loop.time() + self.timeout
        conn.send(_pack(args), deadline, answered=False)
        return True

    def set_wait(self, replicas: int, timeout_ms: int) -> None:
        """Acknowledge script calls only once ``replicas`` replicas have them (0: do not
        wait); see the ``wait_replicas`` argument."""
        self.wait_replicas = replicas
        self.wait_timeout_ms = timeout_ms
        self._wait_packed = _pack(("WAIT", replicas, timeout_ms))

    def register_script(self, source: str) -> Script:
        """Wrap a Lua script so that it is called by SHA1 and loaded on NOSCRIPT."""
        return Script(self, source)

    # Internals

    async def _call(
        self,
        packed: bytes,
        decode: bool | None,
        timeout: Timeout,  # noqa: ASYNC109 (one watchdog per connection)
        route: str | bytes | None = None,
        *,
        durable: bool = False,
    ) -> Any:
        # ``route`` (the first key) matters to the cluster client only; ``durable``: a
        # mutation, acknowledged after WAIT when wait_replicas is set.
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connection()
        seconds = self.timeout if timeout is _DEFAULT_TIMEOUT else timeout
        deadline = math.inf if seconds is None else conn.loop.time() + seconds
        fut = conn.send(packed, deadline)
        if durable and self.wait_replicas:
            # Queued in the same loop turn as the script: the WAIT follows it in one write.
            waited = conn.wait_after(self._wait_packed, deadline)
            reply = await fut
            acked = await asyncio.shield(waited)
            if acked < self.wait_replicas:
                raise NotReplicated(
                    f"{acked} of {self.wait_replicas} replicas acknowledged the write within "
                    f"{self.wait_timeout_ms} ms"
                )
        else:
            reply = await fut
        if decode or (decode is None and self.decode):
            return _decode(reply)
        return reply

    def _submit(
        self, packed: bytes, route: str | bytes | None = None
    ) -> asyncio.Future[Any] | None:
        """The reply's future of a mutation sent at once with the client's defaults (its
        timeout, raw replies), or None where :meth:`_call` has more to do (no connection
        open yet, a WAIT to follow, replies to decode): a script call then awaits one
        future, not two coroutines more (docs/native-protocol.md, Speed)."""
        conn = self._conn
        if conn is None or conn.closed or self.wait_replicas or self.decode:
            return None
        seconds = self.timeout
        return conn.send(packed, math.inf if seconds is None else conn.loop.time() + seconds)

    async def _connection(self) -> _Connection:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        if self._closed:
            raise ClientClosed("the Redis client is closed")
        # Callers arriving while a connect is under way share it: one attempt at a time.
        task = self._connecting
        if task is None:
            task = asyncio.get_running_loop().create_task(self._open())
            self._connecting = task
            task.add_done_callback(self._connect_done)
        # shield: one caller being cancelled must not abort the connect the others await.
        return await asyncio.shield(task)

    def _connect_done(self, task: asyncio.Task[_Connection]) -> None:
        if self._connecting is task:
            self._connecting = None
        if not task.cancelled():
            task.exception()  # retrieved here, so no "never retrieved" noise if all gave up

    @property
    def where(self) -> str:
        """Where the client connects, for messages: ``host:port`` or the socket's path."""
        if self.unix_path is not None:
            return f"unix:{self.unix_path}"
        return f"{self.host}:{self.port}" + (" (TLS)" if self.ssl is not None else "")

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        where = self.where
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.unix_path is not None:
                    _transport, conn = await loop.create_unix_connection(
                        lambda: _Connection(self, loop), self.unix_path
                    )
                else:
                    _transport, conn = await loop.create_connection(
                        lambda: _Connection(self, loop), self.host, self.port, ssl=self.ssl,
                        server_hostname=self.host if self.ssl is not None else None,
                    )  # fmt: skip
                await self._handshake(conn)
        except BaseException as exc:
            if conn is not None:
                conn.abandon()  # never leave a half-set-up transport behind
            if isinstance(exc, TimeoutError):
                raise RedisUnavailable(
                    f"no connection to Redis at {where} within {self.connect_timeout} s"
                ) from exc
            if isinstance(exc, OSError | RedisClientError):
                raise RedisUnavailable(f"cannot connect to Redis at {where}: {exc}") from exc
            raise
        self._conn = conn
        return conn

    async def _handshake(self, conn: _Connection) -> None:
        # Sent together in one write; replies checked in order. The surrounding
        # asyncio.timeout bounds them, hence no per-command deadline.
        futs = []
        if self.password is not None:
            auth: tuple[str, ...] = ("AUTH", self.password)
            if self.username:
                auth = ("AUTH", self.username, self.password)
            futs.append(conn.send(_pack(auth), math.inf))
        if self.db:
            futs.append(conn.send(_pack(("SELECT", self.db)), math.inf))
        for fut in futs:
            await fut

    def _connection_gone(self, conn: _Connection) -> None:
        if self._conn is conn:
            self._conn = None


_CERT_REQS: Final = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL,
                     "required": ssl.CERT_REQUIRED}  # fmt: skip


def parse_url(url: str) -> dict[str, Any]:
    """The connection arguments of :class:`PipelinedRedis` that a Redis URL says (see
    :meth:`PipelinedRedis.from_url`); ValueError names what is wrong. (The TLS context is
    built here, so a missing CA file is found when the settings are checked.)"""
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    out: dict[str, Any] = {
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password is not None else None,
    }
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError(f"no socket path in Redis URL {url!r} (unix:///path/redis.sock)")
        out["unix_path"] = unquote(parts.path)
        db_text = query.get("db", "")
    elif parts.scheme in ("redis", "rediss"):
        out["host"] = parts.hostname or "127.0.0.1"
        try:
            out["port"] = parts.port or 6379
        except ValueError:
            raise ValueError(f"bad port in Redis URL {url!r}") from None
        db_text = parts.path.strip("/") or query.get("db", "")
        if parts.scheme == "rediss":
            out["ssl"] = _tls_context(query, url)
    else:
        raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r} in {url!r} "
                         "(redis://, rediss:// or unix://)")  # fmt: skip
    try:
        out["db"] = int(db_text) if db_text else 0
    except ValueError:
        raise ValueError(f"bad database number {db_text!r} in Redis URL {url!r}") from None
    return out


def _tls_context(query: dict[str, str], url: str) -> ssl.SSLContext:
    reqs = query.get("ssl_cert_reqs", "required").lower()
    if reqs not in _CERT_REQS:
        raise ValueError(f"ssl_cert_reqs must be none, optional or required in {url!r}")
    try:
        ctx = ssl.create_default_context(cafile=query.get("ssl_ca_certs"))
        if "ssl_certfile" in query:
            ctx.load_cert_chain(query["ssl_certfile"], query.get("ssl_keyfile"))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"TLS settings of Redis URL {url!r}: {exc}") from None
    if _CERT_REQS[reqs] == ssl.CERT_NONE:
        ctx.check_hostname = False
    ctx.verify_mode = _CERT_REQS[reqs]
    return ctx


def _drop_result(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


class ScriptHost(Protocol):
    """What a :class:`Script` needs of its client (:class:`PipelinedRedis` or the cluster's)."""

    def _submit(
        self, packed: bytes, route: str | bytes | None = None
    ) -> asyncio.Future[Any] | None: ...

    async def _call(
        self,
        packed: bytes,
        decode: bool | None,
        timeout: Timeout,  # noqa: ASYNC109
        route: str | bytes | None = None,
        *,
        durable: bool = False,
    ) -> Any: ...

    async def execute(
        self,
        *args: Arg,
        decode: bool | None = None,
        timeout: Timeout = ...,  # noqa: ASYNC109
    ) -> Any: ...


class _ServerCode:
    """What :class:`Script` and :class:`Function` share: the call (``command target numkeys
    keys... args...``) to the master of the first key's slot, and one load, shared by the
    calls then in flight, when Redis answers that it does not know the code (``missing``)."""

    client: ScriptHost
    _command: str
    _target: str
    _missing: str
    load: Callable[[], Awaitable[None]]

    async def __call__(
        self,
        keys: Sequence[str | bytes] = (),
        args: Sequence[Arg] = (),
        *,
        decode: bool | None = None,
        timeout: Timeout = _DEFAULT_TIMEOUT,  # noqa: ASYNC109 (one watchdog per connection)
    ) -> Any:
        """Run the code (see :meth:`PipelinedRedis.execute` for options and errors).

        It is sent to the master of its first key; if Redis answers that it does not know the
        code (an error containing ``missing``), the code is loaded and the call retried once.
        """
        packed = _pack((self._command, self._target, len(keys), *keys, *args))
        client = self.client
        route = keys[0] if keys else None
        try:
            fut = None
            if decode is None and timeout is _DEFAULT_TIMEOUT:
                fut = client._submit(packed, route)
            if fut is not None:
                return await fut
            return await client._call(packed, decode, timeout, route, durable=True)
        except ReplyError as exc:
            if self._missing not in exc.message:
                raise
        await self.load()
        return await client._call(packed, decode, timeout, route, durable=True)


class Script(_ServerCode):
    """A Lua script called by SHA1 (computed locally), loaded with SCRIPT LOAD on NOSCRIPT.

    After Redis restarts (its script cache is empty) every call in flight gets NOSCRIPT; they
    share one SCRIPT LOAD and each retries once. On a cluster the call goes to the master of
    the first key's slot and SCRIPT LOAD to every master (a promoted replica may not have it).
    A script call is a mutation: with ``wait_replicas`` set it is acknowledged after WAIT.
    """

    def __init__(self, client: ScriptHost, source: str) -> None:
        self.client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self.load = SingleFlight(self._load)
        self._command, self._target, self._missing = "EVALSHA", self.sha, "NOSCRIPT"

    def __repr__(self) -> str:
        return f"<Script sha={self.sha}>"

    async def _load(self) -> None:
        sha = await self.client.execute("SCRIPT", "LOAD", self.source, decode=True)
        if sha != self.sha:
            raise RedisClientError(f"Redis computed SHA1 {sha} for a script we hash to {self.sha}")


class Function(_ServerCode):
    """A function of a Redis Functions library (Redis 7.0+), called with FCALL; the library
    is loaded again (``FUNCTION LOAD REPLACE``) when Redis does not know the function.

    The counterpart of :class:`Script` for a library loaded once (see ocs/store/functions.py):
    Redis keeps functions in its data (AOF, RDB, replicas), so "not found" is rare (a FUNCTION
    FLUSH, a new server); the calls then in flight share one load and each retries once. On a
    cluster FUNCTION LOAD goes to every master.
    """

    def __init__(self, client: ScriptHost, name: str, library: str, loader: LibraryLoader) -> None:
        self.client = client
        self.name = name
        self.library = library
        self.load = loader.load  # (the library's: one load for all its functions)
        self._command, self._target, self._missing = "FCALL", name, "Function not found"

    def __repr__(self) -> str:
        return f"<Function {self.name}>"


class LibraryLoader:
    """Loads one Functions library (``FUNCTION LOAD REPLACE``); concurrent callers share one
    load."""

    def __init__(self, client: ScriptHost, code: str) -> None:
        self.client = client
        self.code = code
        self.load = SingleFlight(self._load)

    async def _load(self) -> None:
        await self.client.execute("FUNCTION", "LOAD", "REPLACE", self.code)
