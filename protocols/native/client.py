"""asyncio client of the native charging protocol.

One connection carries any number of concurrent calls: the client allocates request ids
(1..2**32-1, wrapping, skipping ids still in use; id 0 is the server's "broken frame" reply),
batches the requests issued in one loop turn into one write, and matches replies by id.
A call fails with ``TimeoutError`` after its timeout and with ``ConnectionError`` when the
connection drops or the server reports a broken frame. A call that timed out may still have
been charged: retry it with the same session+seq (or debit key), which is idempotent.

For gevent (Locust) or plain sockets, use :class:`~protocols.native.codec.ClientConnection`
directly; it does no I/O.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from types import TracebackType
from typing import cast

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
from protocols.native.constants import DEFAULT_CALL_TIMEOUT, DEFAULT_MAX_FRAME, MAX_ID
from protocols.native.errors import ProtocolError

__all__ = ["NativeClient"]

logger = logging.getLogger(__name__)


class _ClientProtocol(asyncio.Protocol):
    def __init__(self, client: NativeClient) -> None:
        self._client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._client._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._client._data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._client._connection_lost(exc)

    def pause_writing(self) -> None:
        self._client._writable.clear()

    def resume_writing(self) -> None:
        self._client._writable.set()


def _expire(future: asyncio.Future[Reply], request: Request) -> None:
    if not future.done():
        future.set_exception(TimeoutError(f"no reply to {request.verb} id {request.id}"))


class NativeClient:
    """A connection to a native-protocol server shared by concurrent calls.

    ``timeout``: seconds each call waits for its reply (None: forever; an attribute, so it
    can be changed; for one call, wrap it in ``asyncio.timeout()``). ``max_frame`` bounds
    frames both ways. ``key`` (key id, shared secret): answer the server's challenge with a
    hello on connecting (``connect`` fails with ``ConnectionError`` if it is refused);
    ``ssl``: connect over TLS (with a client certificate loaded, if the server wants one).
    Use ``await client.connect()`` and ``await client.close()``, or ``async with
    NativeClient(host, port) as client``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float | None = DEFAULT_CALL_TIMEOUT,
        connect_timeout: float | None = DEFAULT_CALL_TIMEOUT,
        max_frame: int = DEFAULT_MAX_FRAME,
        key: tuple[str, bytes] | None = None,
        ssl: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.key = key
        self.ssl = ssl
        self._challenge: asyncio.Future[bytes] | None = None
        self.port = port
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._codec = ClientConnection(max_frame)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.Transport | None = None
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        self._last_id = 0
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._writable = asyncio.Event()
        self._writable.set()
        self._error: ConnectionError | None = None
        self._closed: asyncio.Future[None] | None = None

    @property
    def connected(self) -> bool:
        """True while the connection is open."""
        return self._transport is not None and self._error is None

    @property
    def inflight(self) -> int:
        """Calls waiting for their reply."""
        return len(self._pending)

    async def connect(self) -> None:
        """Open the connection (``ConnectionError``/``OSError``/``TimeoutError`` on failure)."""
        if self._closed is not None:
            raise RuntimeError("a NativeClient connects once")
        loop = self._loop = asyncio.get_running_loop()
        self._closed = loop.create_future()
        self._challenge = loop.create_future()
        try:
            async with asyncio.timeout(self.connect_timeout):
                await loop.create_connection(
                    lambda: _ClientProtocol(self), self.host, self.port, ssl=self.ssl
                )
        except BaseException as exc:
            self._error = ConnectionError(f"cannot connect to {self.host}:{self.port}: {exc!r}")
            self._closed.set_result(None)
            raise
        if self.key is not None:
            try:
                async with asyncio.timeout(self.connect_timeout):
                    await self._hello(self.key)
            except BaseException:
                await self.close()
                raise

    async def _hello(self, key: tuple[str, bytes]) -> None:
        assert self._challenge is not None
        nonce = await asyncio.shield(self._challenge)
        key_id, secret = key
        reply = await self._call(Hello(self._next_id(), key_id, hello_mac(secret, nonce, key_id)))
        if not reply.ok:
            raise ConnectionError(f"the server refused the hello: {reply.result} {reply.detail}")

    async def close(self) -> None:
        """Close the connection; calls still waiting fail with ``ConnectionError``."""
        transport = self._transport
        if transport is not None:
            self._flush()
            transport.close()
        if self._closed is not None:
            await self._closed

    async def __aenter__(self) -> NativeClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- calls

    async def reserve(
        self,
        session: str,
        subscriber: str,
        service: str,
        seq: int,
        units: int | None = None,
        *,
        destination: str = "",
        location: str = "",
    ) -> Reply:
        """Open a session or reserve another slice (``units`` None: the server decides)."""
        if not self._writable.is_set():
            await self._wait_writable()
        return await self._call(
            Reserve(
                self._next_id(),
                session,
                subscriber,
                service,
                seq,
                units,
                destination,
                location,
            ),
        )

    async def commit(
        self,
        session: str,
        seq: int,
        used: int,
        units: int | None = None,
        *,
        subscriber: str = "",
    ) -> Reply:
        """Report ``used`` units; ``units`` is the next slice (None: server decides, 0: none).

        ``subscriber``, when known, spares the server a lookup.
        """
        if not self._writable.is_set():
            await self._wait_writable()
        return await self._call(
            Commit(self._next_id(), session, seq, used, units, subscriber),
        )

    async def release(
        self, session: str, seq: int, used: int = 0, *, subscriber: str = ""
    ) -> Reply:
        """End a session, debiting the final ``used`` units."""
        if not self._writable.is_set():
            await self._wait_writable()
        return await self._call(Release(self._next_id(), session, seq, used, subscriber))

    async def debit(
        self,
        subscriber: str,
        service: str,
        key: str,
        units: int = 1,
        *,
        destination: str = "",
        location: str = "",
        force: bool = False,
    ) -> Reply:
        """Rate and debit ``units`` at once; ``key`` makes it idempotent."""
        if not self._writable.is_set():
            await self._wait_writable()
        return await self._call(
            Debit(self._next_id(), subscriber, service, key, units, destination, location, force),
        )

    async def balance(self, subscriber: str) -> Reply:
        """The subscriber's balance, reserved, available, credit limit, state and plan."""
        if not self._writable.is_set():
            await self._wait_writable()
        return await self._call(Balance(self._next_id(), subscriber))

    async def ping(self) -> Reply:
        """Round trip to the server (result ``success``)."""
        if not self._writable.is_set():
            await self._wait_writable()
        return await self._call(Ping(self._next_id()))

    # -- internals

    def _check_open(self) -> asyncio.AbstractEventLoop:
        if self._error is not None:
            raise ConnectionError(str(self._error))
        if self._transport is None or self._loop is None:
            raise ConnectionError("not connected")
        return self._loop

    async def _wait_writable(self) -> None:
        # The transport's buffer is over its high-water mark: the server is not reading.
        self._check_open()
        await self._writable.wait()

    def _next_id(self) -> int:
        self._check_open()
        request_id = self._last_id
        pending = self._pending
        while True:
            request_id = request_id + 1 if request_id < MAX_ID else 1
            if request_id not in pending:
                break
        self._last_id = request_id
        return request_id

    async def _call(self, request: Request) -> Reply:
        loop = self._check_open()
        data = self._codec.send(request)
        future: asyncio.Future[Reply] = loop.create_future()
        self._pending[request.id] = future
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        timeout = self.timeout
        handle = None if timeout is None else loop.call_later(timeout, _expire, future, request)
        try:
            return await future
        finally:
            if handle is not None:
                handle.cancel()
            if self._pending.get(request.id) is future:
                del self._pending[request.id]

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if not out:
            return
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    def _data_received(self, data: bytes) -> None:
        codec = self._codec
        codec.receive_data(data)
        pending = self._pending
        while True:
            try:
                reply = codec.next_event()
            except ProtocolError as exc:
                self._fail(ConnectionError(f"broken reply from the server: {exc.detail}"))
                return
            if reply is NEED_DATA:
                return
            if type(reply) is Challenge:
                if self._challenge is not None and not self._challenge.done():
                    self._challenge.set_result(reply.nonce)
                continue
            assert type(reply) is Reply
            future = pending.pop(reply.id, None)
            if future is not None:
                if not future.done():
                    future.set_result(reply)
            elif reply.id == 0 and not reply.ok:
                # The server could not read one of our frames and closes the connection.
                self._fail(ConnectionError(f"server rejected a frame: {reply.detail}"))
                return
            else:
                logger.debug("native client: reply to unknown id %d (timed out?)", reply.id)

    def _fail(self, error: ConnectionError) -> None:
        """Fail every waiting call with ``error`` and close the connection."""
        if self._error is None:
            self._error = error
        pending = list(self._pending.values())
        self._pending.clear()
        for future in pending:
            if not future.done():
                # One exception object per waiter: a shared one would collect every
                # waiter's traceback.
                future.set_exception(ConnectionError(str(error)))
        self._writable.set()  # wake writers so that they see the error
        if self._challenge is not None and not self._challenge.done():
            self._challenge.set_exception(ConnectionError(str(error)))
            self._challenge.exception()  # retrieved: nobody may be waiting for it
        if self._transport is not None:
            self._transport.close()

    def _connection_lost(self, exc: Exception | None) -> None:
        error = ConnectionError("connection lost")
        if exc is not None:
            error.__cause__ = exc
        self._fail(error)
        self._transport = None
        self._out.clear()
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
