"""Associations for the stack: anything with ``send(stream, data)`` that hands what arrives
to ``data_received(stream, data)`` of the other end. :class:`LoopbackPair` joins two ends in
one event loop (in-process tests of the whole stack above SCTP); :mod:`usrsctp` is SCTP."""

from __future__ import annotations

import asyncio
from typing import Protocol


class Receiver(Protocol):
    def data_received(self, stream: int, data: bytes) -> None: ...

    def connection_lost(self) -> None: ...


class _End:
    def __init__(self, pair: LoopbackPair, side: int) -> None:
        self.pair = pair
        self.side = side
        self.receiver: Receiver | None = None

    def send(self, stream: int, data: bytes) -> None:
        other = self.pair.ends[1 - self.side]
        if self.pair.closed or other.receiver is None:
            return
        self.pair.loop.call_soon(other.receiver.data_received, stream, bytes(data))


class LoopbackPair:
    """Two association ends in this loop: what one sends the other receives, in order, on
    the next loop turn (message boundaries kept, as SCTP keeps them)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.ends = (_End(self, 0), _End(self, 1))
        self.closed = False

    def close(self) -> None:
        self.closed = True
        for end in self.ends:
            if end.receiver is not None:
                self.loop.call_soon(end.receiver.connection_lost)
