"""What the dashboard's live feed costs to read the 128 outbox and notification streams
(ocs/store/streams.py), per read (one a tick, i.e. a second, per OCS process).

Variants, interleaved over rounds on private servers (medians):

* ``redis-py one XREAD``: the reader before (redis-py, one blocking ``XREAD`` over all, one
  Redis only);
* ``reader, one Redis``: :class:`StreamReader` on one Redis (one ``XREAD`` on the thin client);
* ``reader, cluster``: :class:`StreamReader` on a 3-master cluster (one ``XREAD`` per stream,
  one write per master).

Each read follows ``--events`` new entries spread over the buckets (0: idle streams). Figures:
the client's CPU (process time) and Redis's CPU (``INFO cpu``, all masters) per read, and
socket writes per read. ``python -m bench.live_reader [--reads N] [--rounds N] [--events N]``;
appends a section to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio

from ocs.constants import BUCKET_COUNT
from ocs.redis_server import EmbeddedCluster, EmbeddedRedis
from ocs.store import keys as K
from ocs.store.cluster import admin_client
from ocs.store.streams import StreamReader

RESULTS = Path(__file__).parent / "RESULTS.md"


class _Server:
    """One admin connection to a server (one Redis or every master): its CPU, new entries."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client: Any = admin_client(url, decode_responses=True)

    async def cpu(self) -> float:
        """used_cpu_sys + used_cpu_user summed over every master (seconds)."""
        c = self.client
        if hasattr(c, "get_primaries"):
            await c.initialize()
            infos = [await c.info("cpu", target_nodes=n) for n in c.get_primaries()]
        else:
            infos = [await c.info("cpu")]
        return sum(float(i["used_cpu_sys"]) + float(i["used_cpu_user"]) for i in infos)

    async def add_events(self, n: int) -> None:
        for i in range(n):
            b = i % BUCKET_COUNT
            await self.client.xadd(K.outbox_key(b), {"t": "commit", "sub": f"4917{i:07d}"})

    async def close(self) -> None:
        await self.client.aclose()


async def _measure(server: _Server, reads: int, events: int,
                   read: Callable[[], Awaitable[Any]], writes: Callable[[], int],
                   ) -> tuple[float, float, float]:  # fmt: skip
    """(client CPU us, Redis CPU us, writes) per read."""
    cpu = redis_cpu = 0.0
    w = 0
    for _ in range(reads):
        if events:
            await server.add_events(events)
        r0, w0, t0 = await server.cpu(), writes(), time.process_time()
        await read()
        cpu += time.process_time() - t0
        w += writes() - w0
        redis_cpu += await server.cpu() - r0
    return cpu / reads * 1e6, redis_cpu / reads * 1e6, w / reads


async def _nothing(server: _Server, reads: int, events: int) -> tuple[float, float, float]:
    """The measurement alone (INFO before and after; the baseline to subtract)."""

    async def read() -> None:
        return None

    return await _measure(server, reads, events, read, lambda: 0)


async def _redis_py(server: _Server, reads: int, events: int) -> tuple[float, float, float]:
    client = redis.asyncio.Redis.from_url(server.url, decode_responses=True)
    try:
        ids: dict[Any, Any] = {K.outbox_key(b): "0-0" for b in range(BUCKET_COUNT)}
        ids |= {K.notify_key(b): "0-0" for b in range(BUCKET_COUNT)}
        for name in list(ids):
            last = await client.xrevrange(name, "+", "-", count=1)
            ids[name] = last[0][0] if last else "0-0"

        async def read() -> None:
            reply = await client.xread(ids, count=1000, block=1)
            for stream, entries in reply or []:
                for entry_id, _fields in entries:
                    ids[stream] = entry_id

        return await _measure(server, reads, events, read, lambda: 0)
    finally:
        await client.aclose()


async def _reader(server: _Server, reads: int, events: int) -> tuple[float, float, float]:
    async with StreamReader.every_bucket(server.url) as r:
        return await _measure(server, reads, events, lambda: r.read(1), lambda: r.client.writes)


async def main(reads: int, rounds: int, events: int) -> str:
    with tempfile.TemporaryDirectory() as d:
        single = EmbeddedRedis(Path(d) / "one", port=0)
        cluster = EmbeddedCluster(Path(d) / "c", replicas=0)
        single.start()
        cluster.start()
        one, many = _Server(single.url), _Server(cluster.url)
        try:
            variants: dict[str, Callable[[], Awaitable[tuple[float, float, float]]]] = {
                "(measurement alone), one Redis": lambda: _nothing(one, reads, events),
                "redis-py one XREAD, one Redis": lambda: _redis_py(one, reads, events),
                "reader, one Redis": lambda: _reader(one, reads, events),
                "(measurement alone), cluster": lambda: _nothing(many, reads, events),
                "reader, cluster of 3 masters": lambda: _reader(many, reads, events),
            }
            results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in variants}
            for _ in range(rounds):
                for name, run in variants.items():
                    results[name].append(await run())
        finally:
            await one.close()
            await many.close()
            cluster.stop()
            single.stop()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    rows = [
        f"| {name} | {statistics.median(r[0] for r in rs):,.0f} | "
        f"{statistics.median(r[1] for r in rs):,.0f} | {statistics.median(r[2] for r in rs):.1f} |"
        for name, rs in results.items()
    ]
    return "\n".join([
        f"## Dashboard live reader: {when} UTC", "",
        f"`python -m bench.live_reader --reads {reads} --rounds {rounds} --events {events}` "
        f"(bench/live_reader.py): one read of the 128 outbox and notification streams after "
        f"{events} new entries; medians of {rounds} interleaved rounds of {reads} reads.", "",
        "| variant | client CPU us/read | Redis CPU us/read | writes/read |",
        "|---|---:|---:|---:|", *rows, "",
    ])  # fmt: skip


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reads", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--events", type=int, default=0)
    p.add_argument("--no-append", action="store_true", help="print only")
    a = p.parse_args()
    text = asyncio.run(main(a.reads, a.rounds, a.events))
    print(text)
    if not a.no_append:
        with RESULTS.open("a", encoding="utf-8") as f:
            f.write("\n" + text)
