"""The outbox as a journal on disk: export every bucket's outbox stream to files, then trim
what was exported (and is older than what Redis should keep) so the streams do not grow
without bound.

Files: ``<dir>/date=YYYY-MM-DD/outbox-b<NN>.jsonl``, one JSON object per event, ``{"b":
<bucket>, "id": "<stream id>", ...fields}``, appended in stream order (the day is the
entry's, UTC); an id is unique within its bucket. The export of a bucket is at least once: a
crash after a write and before the cursor moved writes those events again on the next run,
with the same ``b`` and ``id``, so readers keep the first of each. The cursor (the last id
exported, per bucket) is in Redis, with the streams.

Trimming never drops an entry that a consumer group of the stream (billing's ``billing``, the
provisioning worker's, any other) has not yet been given, or was given and has not
acknowledged: the stream is trimmed to the oldest of the export's cursor, the retention
cutoff, and each group's first pending entry or, with none pending, the entry after its
last-delivered id (issue 17; #11's "the exporter may trim events billing has not read").
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from ocs.constants import BUCKET_COUNT, KEY_PREFIX
from ocs.store import keys as K
from ocs.store.cluster import AdminRedis, admin_client
from ocs.store.events import expand
from ocs.store.notify import redis_call

#: Where the last exported id of each bucket is kept (a hash: bucket -> stream id).
CURSOR_KEY: Final = f"{KEY_PREFIX}:journal:cursor"
BATCH: Final = 5_000


@dataclass(slots=True)
class ExportStats:
    exported: int = 0
    trimmed: int = 0
    files: int = 0


def _id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _after(entry_id: str) -> str:
    ms, seq = _id(entry_id)
    return f"{ms}-{seq + 1}"


def _day(entry_id: str) -> str:
    ms = int(entry_id.split("-", 1)[0])
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def _write(directory: Path, bucket: int, entries: list[tuple[str, dict[str, str]]]) -> int:
    """Append the entries to their day's file, durably; the number of files written."""
    by_day: dict[str, list[str]] = {}
    for entry_id, fields in entries:
        event = {"b": bucket, "id": entry_id, **expand(fields)}
        line = json.dumps(event, separators=(",", ":"), sort_keys=True)
        by_day.setdefault(_day(entry_id), []).append(line)
    for day, lines in by_day.items():
        folder = directory / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"outbox-b{bucket:02d}.jsonl", "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
            f.flush()
            os.fsync(f.fileno())
    return len(by_day)


class Journal:
    """Exports the outbox streams of the Redis at ``url`` into ``directory``."""

    def __init__(self, url: str, directory: str | Path) -> None:
        self.redis: AdminRedis = admin_client(url, decode_responses=True)
        self.directory = Path(directory)

    async def close(self) -> None:
        await self.redis.aclose()

    async def _do(self, coro: Any) -> Any:
        return await redis_call(coro)

    async def export(self, *, keep_ms: int, now_ms: int) -> ExportStats:
        """Export every event not exported yet, then trim each stream of the events that are
        exported and older than ``now_ms - keep_ms``."""
        stats = ExportStats()
        cursors: dict[str, str] = await self._do(self.redis.hgetall(CURSOR_KEY))
        for bucket in range(BUCKET_COUNT):
            key = K.outbox_key(bucket)
            last = cursors.get(str(bucket), "0-0")
            while True:
                batch = await self._do(self.redis.xrange(key, f"({last}", "+", count=BATCH))
                if not batch:
                    break
                stats.files += await asyncio.to_thread(_write, self.directory, bucket, batch)
                last = batch[-1][0]
                await self._do(self.redis.hset(CURSOR_KEY, str(bucket), last))
                stats.exported += len(batch)
            if last != "0-0":
                # Keep what is younger than keep_ms (the events API reads it) and everything
                # after the cursor (not exported: it may have come since the last read).
                ms, seq = _id(last)
                cutoff = max(now_ms - keep_ms, 0)
                minid = f"{cutoff}-0" if cutoff <= ms else f"{ms}-{seq + 1}"
                for floor in await self._group_floors(key):
                    if _id(floor) < _id(minid):
                        minid = floor
                trimmed = await self._do(self.redis.xtrim(key, minid=minid, approximate=False))
                stats.trimmed += int(trimmed)
        return stats

    async def _group_floors(self, key: str) -> list[str]:
        """For each consumer group of the stream, the oldest id it still needs: its first
        pending entry (delivered, not acknowledged), else the one after its last-delivered
        id. Read after the export, so a group that reads meanwhile only moves forward."""
        floors = []
        for group in await self._do(self.redis.xinfo_groups(key)):
            name, last = group["name"], group["last-delivered-id"]
            floor = _after(last)
            if int(group.get("pending", 0)):
                summary = await self._do(self.redis.xpending(key, name))
                if summary.get("min"):
                    floor = min(floor, summary["min"], key=_id)
            floors.append(floor)
        return floors
