"""The context-manager half of a long-lived resource (docs/architecture.md, Conventions:
every long-lived resource has one owner and one async context manager): a class says how it
opens and closes, and these mixins make ``with`` / ``async with`` of it."""

from __future__ import annotations

import asyncio
from typing import Self


class AsyncConnection:
    """``async with client:`` awaits ``connect()`` on entry and ``close()`` on exit, however
    the block ends."""

    __slots__ = ()

    async def connect(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class ManagedProcess:
    """A server process: ``with server:`` calls ``start()`` and ``stop()``; ``async with``
    awaits ``start_async()`` (by default ``start()`` in a thread) and runs the blocking
    ``stop()`` in a thread, so the event loop goes on meanwhile."""

    __slots__ = ()

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    async def start_async(self) -> None:
        await asyncio.to_thread(self.start)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await self.start_async()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.stop)
