"""What every listener in protocols/ shares: the graceful shutdown (docs/architecture.md,
Conventions: stop accepting, drain, close)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
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
    tasks: Collection[asyncio.Task[Any]],
    drain_timeout: float,
    logger: logging.Logger,
) -> None:
    """Stop accepting, let every connection wind down and every started request finish
    within ``drain_timeout`` seconds, then cancel and abort what is left and wait for it."""
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
