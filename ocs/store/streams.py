"""Following many streams without a consumer group: every bucket's outbox and notification
streams, read by each process for itself (the dashboard's live feed, ocs/ui/live.py).

On one Redis the streams are read with one blocking ``XREAD`` over all of them. On a Redis
Cluster that is refused: a command may name the keys of one *slot* only (cluster spec, "Key
distribution model"), and the 64 buckets' streams are in 64 slots, so even the streams one
master serves cannot share a command (``CROSSSLOT``). A blocking read per stream would hold
one connection per stream and per process. The reader therefore waits the caller's block
time, then sends one non-blocking ``XREAD`` per stream, all in the same loop turn, through
the cluster client (:class:`ocs.store.cluster.ClusterRedis`): they leave as one write per
master (its auto-pipelining), the masters are read concurrently, and the client follows the
slots where they move (MOVED and ASK during a reshard; a lost master makes its streams fail
this read, refreshes the slot map, and the next read goes to the promoted replica). A stream
whose read failed keeps its position and is read again next time; a stream that returned a
full ``count`` is read again at once.

For a caller that publishes at a fixed tick (the live feed), a read per tick is as fresh as a
blocking one. It uses its own connections (the thin client of :mod:`ocs.store.redis_client`,
one per master), never the charging path's: a large reply must not wait in front of a
charging request's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Final

from ocs.constants import BUCKET_COUNT
from ocs.lifecycle import AsyncConnection
from ocs.store import keys as K
from ocs.store.cluster import ClusterRedis, HotRedis, hot_client
from ocs.store.errors import StoreUnavailable
from ocs.store.events import expand
from ocs.store.notify import Notification
from ocs.store.redis_client import Arg, RedisClientError

__all__ = ["READ_MARGIN", "StreamReader"]

log = logging.getLogger("ocs.store.streams")

#: Seconds a blocking read may take beyond its block time before it counts as lost.
READ_MARGIN: Final = 5.0
#: On a cluster: reads in a row while some stream still returns a full count (a backlog).
BACKLOG_ROUNDS: Final = 10


class StreamReader(AsyncConnection):
    """Follows ``streams`` from where they are when :meth:`connect` returns (or from
    ``positions``); each :meth:`read` returns what was added since the last and moves on."""

    def __init__(self, url: str, streams: Sequence[str]) -> None:
        self.client: HotRedis = hot_client(url, decode=True)
        self.cluster = isinstance(self.client, ClusterRedis)
        #: stream -> the id of the last entry read (``0-0``: from the start).
        self.positions: dict[str, str] = dict.fromkeys(streams, "0-0")
        #: Streams whose last read failed (they are read again next time).
        self.failed: set[str] = set()

    @classmethod
    def every_bucket(cls, url: str) -> StreamReader:
        """A reader of every bucket's outbox stream (every balance change) and notification
        stream (barring, thresholds)."""
        buckets = range(BUCKET_COUNT)
        return cls(url, [*map(K.outbox_key, buckets), *map(K.notify_key, buckets)])

    async def connect(self) -> None:
        """Connect and take every stream's last id (a missing stream: from its start)."""
        try:
            await self.client.connect()
            names = list(self.positions)
            last = await asyncio.gather(
                *(self.client.execute("XREVRANGE", s, "+", "-", "COUNT", 1) for s in names)
            )
        except RedisClientError as exc:
            await self.client.close()
            raise StoreUnavailable(f"redis: {exc}") from exc
        for name, entries in zip(names, last, strict=True):
            self.positions[name] = entries[0][0] if entries else "0-0"

    async def close(self) -> None:
        await self.client.close()

    async def read(self, block_ms: int, *, count: int = 1000) -> list[Notification]:
        """The entries added after the positions, oldest first per stream; waits up to
        ``block_ms`` (on a cluster: waits ``block_ms``, then reads) when there are none.

        Raises:
            StoreUnavailable: no stream could be read (on a cluster: a master's streams
                alone failing are logged and read again next time).
        """
        if not self.cluster:
            args: list[Arg] = ["XREAD", "COUNT", count, "BLOCK", block_ms, "STREAMS"]
            args += [*self.positions, *self.positions.values()]
            try:
                reply = await self.client.execute(*args, timeout=block_ms / 1000 + READ_MARGIN)
            except RedisClientError as exc:
                raise StoreUnavailable(f"redis: {exc}") from exc
            return self._take(reply or [])
        await asyncio.sleep(block_ms / 1000)
        out: list[Notification] = []
        for _ in range(BACKLOG_ROUNDS):
            entries, full = await self._read_each(count)
            out += entries
            if not full:
                break
        return out

    async def _read_each(self, count: int) -> tuple[list[Notification], bool]:
        names = list(self.positions)
        # Issued in one loop turn: one write per master (ClusterRedis), masters concurrently.
        replies = await asyncio.gather(
            *(self.client.execute("XREAD", "COUNT", count, "STREAMS", s, self.positions[s])
              for s in names),
            return_exceptions=True,
        )  # fmt: skip
        failed: dict[str, BaseException] = {}
        entries: list[Notification] = []
        full = False
        for name, reply in zip(names, replies, strict=True):
            if isinstance(reply, RedisClientError):
                failed[name] = reply
                continue
            if isinstance(reply, BaseException):
                raise reply
            got = self._take(reply or [])
            entries += got
            full = full or len(got) >= count
        if failed and len(failed) == len(names):
            self.failed = set(failed)
            first = next(iter(failed.values()))
            raise StoreUnavailable(f"redis: {first}") from first
        if failed.keys() != self.failed:
            if failed:
                first = next(iter(failed.values()))
                log.warning("%d of %d streams not read (read again next time): %s",
                            len(failed), len(names), first)  # fmt: skip
            else:
                log.info("every stream read again")
        self.failed = set(failed)
        return entries, full

    def _take(self, reply: list[Any]) -> list[Notification]:
        out = []
        for stream, items in reply:
            for entry_id, flat in items:
                fields = dict(zip(flat[::2], flat[1::2], strict=True)) if flat else {}
                out.append(Notification(stream, entry_id, expand(fields)))
                self.positions[stream] = entry_id
        return out
