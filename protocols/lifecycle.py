"""What every listener in protocols/ shares: the graceful shutdown (docs/architecture.md,
Conventions: stop accepting, drain, close)."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Collection, Coroutine, Iterator
from typing import Any, Protocol


class Connection(Protocol):
    """A server-side connection that can be asked to wind down."""

    #: Resolved once the connection is closed.
    closed: asyncio.Future[None]

    def stop(self) -> None:
        """Stop reading; finish what was started; then close (a protocol may say goodbye:
        Diameter sends DPR)."""

    def abort(self) -> None:
        """Close at once."""


async def drain_and_close(
    name: str,
    server: asyncio.AbstractServer | None,
    connections: Collection[Connection],
    tasks: Collection[asyncio.Future[Any]],
    drain_timeout: float,
    logger: logging.Logger,
) -> None:
    """Stop accepting, let every connection wind down and every started request finish
    within ``drain_timeout`` seconds, then cancel and abort what is left and wait for it.
    ``tasks``: the requests' tasks, or futures that stand for them (done when the request
    ends; cancelling one cancels its request)."""
    if server is not None:
        server.close()
    conns = list(connections)
    for conn in conns:
        conn.stop()
    waiting: set[asyncio.Future[Any]] = {c.closed for c in conns}
    waiting.update(tasks)
    if waiting:
        _, pending = await asyncio.wait(waiting, timeout=drain_timeout)
        if pending:
            logger.warning(
                "%s: %d requests and %d connections unfinished after %.1fs, aborting",
                name, len(tasks), len(connections), drain_timeout,
            )  # fmt: skip
            for task in list(tasks):
                task.cancel()
            for conn in list(connections):
                conn.abort()
            await asyncio.gather(*tasks, *(c.closed for c in conns), return_exceptions=True)
    if server is not None:
        await server.wait_closed()
    logger.info("%s: closed", name)


class StallTimer:
    """Closes a connection whose client stalls, with one timer per connection.

    Two limits, in seconds (0 turns one off): ``frame_timeout``, how long the start of a frame
    may wait for the rest of it (a client that sends half a header and stops); and
    ``idle_timeout``, how long a connection with nothing in flight may stay silent. The owner
    reports what it sees with :meth:`received` after each read (cheap: it only stores the time;
    the timer re-arms itself when it fires early), and says through ``busy`` whether requests
    are in flight (an idle connection waiting for our answers is not stalled). ``on_stall``
    gets the reason and must close the connection.
    """

    __slots__ = (
        "_busy",
        "_handle",
        "_last",
        "_loop",
        "_on_stall",
        "_partial_since",
        "frame_timeout",
        "idle_timeout",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        idle_timeout: float,
        frame_timeout: float,
        busy: Callable[[], bool],
        on_stall: Callable[[str], None],
    ) -> None:
        if idle_timeout < 0 or frame_timeout < 0:
            raise ValueError("timeouts must not be negative")
        self._loop = loop
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        self._busy = busy
        self._on_stall = on_stall
        self._last = loop.time()
        self._partial_since: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._arm()

    def received(self, partial: bool) -> None:
        """Bytes came in; ``partial``: a frame is started but not complete."""
        now = self._loop.time()
        self._last = now
        if not partial:
            self._partial_since = None
        elif self._partial_since is None:
            self._partial_since = now
            # The frame's deadline may come before the one the timer is set for.
            handle = self._handle
            if self.frame_timeout and (handle is None or handle.when() > now + self.frame_timeout):
                self.cancel()
                self._arm()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _deadline(self) -> float | None:
        deadlines = []
        if self.frame_timeout and self._partial_since is not None:
            deadlines.append(self._partial_since + self.frame_timeout)
        if self.idle_timeout:
            deadlines.append(self._last + self.idle_timeout)
        return min(deadlines) if deadlines else None

    def _arm(self) -> None:
        deadline = self._deadline()
        if deadline is not None:
            self._handle = self._loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._handle = None
        now = self._loop.time()
        since = self._partial_since
        if self.frame_timeout and since is not None and now >= since + self.frame_timeout:
            self._on_stall(f"a frame started {now - since:.1f} s ago is still incomplete")
            return
        if self.idle_timeout and now >= self._last + self.idle_timeout and not self._busy():
            self._on_stall(f"silent for {now - self._last:.1f} s with nothing in flight")
            return
        if self.idle_timeout and now >= self._last + self.idle_timeout:
            self._last = now  # busy: wait a whole idle period after the last answer too
        self._arm()


class _InlineCall:
    """Runs one request's coroutine without an ``asyncio.Task`` (docs/native-protocol.md,
    Speed: a task per request cost ~1.5 µs of the server's CPU, its first step one more loop
    turn). Made by :meth:`InlineCalls.start`.

    The first step runs at once, from ``data_received``; each later step runs when the
    future the coroutine waits on is done, as a Task would run it: in the call's own copy of
    the context, a bare ``yield`` (``asyncio.sleep(0)``) resumed on the next loop turn, and
    :meth:`cancel` cancelling that future (or throwing ``CancelledError`` into the next
    step). What a Task offers beyond that is not here: ``asyncio.current_task()`` is None
    inside a handler, so a handler must not use ``asyncio.timeout`` (``wait_for`` and
    ``shield`` are fine). The coroutine is the server's ``_answer``, which answers whatever
    the handler does; an exception escaping it anyway is logged.
    """

    __slots__ = (
        "_calls", "_context", "_coro", "_logger", "_loop", "_must_cancel", "_waiter", "_waiting",
    )  # fmt: skip

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, None],
        calls: set[_InlineCall],
        logger: logging.Logger,
    ) -> None:
        self._loop = loop
        self._logger = logger
        self._coro = coro
        self._calls = calls
        self._context = contextvars.copy_context()
        self._must_cancel = False
        #: The future the coroutine waits on now.
        self._waiting: asyncio.Future[Any] | None = None
        #: Resolved when the call ends (made only when someone waits: the server's close).
        self._waiter: asyncio.Future[None] | None = None
        calls.add(self)
        self._context.run(self._step)

    def _step(self, _done: asyncio.Future[Any] | None = None) -> None:
        # (also the done callback of the future waited on, ``_done``: no wrapper call)
        self._waiting = None
        try:
            if self._must_cancel:
                self._must_cancel = False
                future = self._coro.throw(asyncio.CancelledError())
            else:
                future = self._coro.send(None)
        except (StopIteration, asyncio.CancelledError):
            self._end()
            return
        except BaseException:
            self._end()
            self._logger.exception("a request's coroutine failed")
            return
        if future is None:  # a bare yield: go round the loop once
            self._loop.call_soon(self._step, context=self._context)
        elif getattr(future, "_asyncio_future_blocking", False):
            future._asyncio_future_blocking = False
            self._waiting = future
            future.add_done_callback(self._step, context=self._context)
            if self._must_cancel and future.cancel():
                self._must_cancel = False
        else:
            self._must_cancel = False
            self._coro.close()
            self._end()
            self._logger.error("a request's coroutine yielded %r", future)

    def _end(self) -> None:
        self._calls.discard(self)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def cancel(self) -> None:
        """Cancel the coroutine (it gets ``CancelledError`` where it waits)."""
        waiting = self._waiting
        if waiting is not None and not waiting.done():
            waiting.cancel()
        else:
            self._must_cancel = True

    def waiter(self) -> asyncio.Future[None]:
        """A future done when the call ends; cancelling it cancels the call (so the
        shutdown's ``drain_and_close`` can treat calls as tasks)."""
        if self._waiter is None:
            self._waiter = self._loop.create_future()
            self._waiter.add_done_callback(self._waiter_done)
        return self._waiter

    def _waiter_done(self, waiter: asyncio.Future[None]) -> None:
        if waiter.cancelled() and self in self._calls:
            self.cancel()


class InlineCalls:
    """The requests a server runs inline (:class:`_InlineCall`), as a collection of futures
    that :func:`drain_and_close` can treat as the requests' tasks: each is done when its
    request ends, and cancelling it cancels the request. The view is live, as a set of tasks
    would be: requests started while closing are in it too."""

    def __init__(self, logger: logging.Logger) -> None:
        self._calls: set[_InlineCall] = set()
        self._logger = logger

    def start(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` now, up to its first wait, and on from there without a task."""
        _InlineCall(loop, coro, self._calls, self._logger)

    def __len__(self) -> int:
        return len(self._calls)

    def __iter__(self) -> Iterator[asyncio.Future[None]]:
        return iter([call.waiter() for call in self._calls])

    def __contains__(self, item: object) -> bool:
        return any(call._waiter is item for call in self._calls)
