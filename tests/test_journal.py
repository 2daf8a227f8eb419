"""The outbox exported to files and trimmed (ocs/store/journal.py, ``ocs outbox export``),
against the test session's Redis."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import redis.asyncio
from test_engine import T0, add

from ocs.store import keys as K
from ocs.store.journal import Journal
from ocs.store.store import Store

HOUR = 3_600_000


def exported(directory: Path) -> list[dict[str, object]]:
    out = []
    for f in sorted(directory.rglob("*.jsonl")):
        out += [json.loads(line) for line in f.read_text().splitlines()]
    return out


async def stream_len(raw: redis.asyncio.Redis) -> int:
    return sum([await raw.xlen(K.outbox_key(b)) for b in range(64)])


async def test_export_then_trim(
    store: Store,
    raw_redis: redis.asyncio.Redis,
    redis_url: str,
    tmp_path: Path,
) -> None:
    subs = [f"4917300000{i:02d}" for i in range(30)]
    for m in subs:
        await add(store, m, 1_000_000)
        await store.credit(m, kind="topup", amount=500_000, reference="t1", now=T0)
    before = await stream_len(raw_redis)
    assert before == 60
    journal = Journal(redis_url, tmp_path / "journal")
    try:
        # Everything is written once; nothing is trimmed while it is younger than keep.
        now = int(T0) + HOUR  # (the entries' ids are from the wall clock: "now" is ahead)
        stats = await journal.export(keep_ms=10**12, now_ms=now)
        assert (stats.exported, stats.trimmed) == (60, 0)
        events = exported(tmp_path / "journal")
        assert len(events) == 60 == len({(e["b"], e["id"]) for e in events})
        assert sorted((e["sub"], e["t"]) for e in events) == sorted(
            [(m, "create") for m in subs] + [(m, "topup") for m in subs]
        )
        assert all(
            p.parent.name.startswith("date=") for p in (tmp_path / "journal").rglob("*.jsonl")
        )
        # Again: nothing new to write.
        stats = await journal.export(keep_ms=10**12, now_ms=now)
        assert stats.exported == 0 and len(exported(tmp_path / "journal")) == 60
        # New events after the export, then a trim of everything old: the exported ones go,
        # the new (not yet exported) ones stay until they are exported.
        await store.credit(subs[0], kind="topup", amount=1, reference="t2", now=T0)
        cursor_before = await raw_redis.hgetall("ocs:journal:cursor")
        stats = await journal.export(keep_ms=0, now_ms=2**41)
        assert stats.exported == 1 and stats.trimmed == 61
        assert await stream_len(raw_redis) == 0
        assert len(exported(tmp_path / "journal")) == 61
        assert cursor_before != await raw_redis.hgetall("ocs:journal:cursor")
    finally:
        await journal.close()


async def test_trim_never_drops_what_was_not_exported(
    store: Store,
    raw_redis: redis.asyncio.Redis,
    redis_url: str,
    tmp_path: Path,
) -> None:
    await add(store, "491730000100", 1_000_000)
    journal = Journal(redis_url, tmp_path / "j")
    try:
        await journal.export(keep_ms=0, now_ms=2**41)
        assert await stream_len(raw_redis) == 0
        # An event written in the same millisecond as the last exported one, after the export
        # read: a trim by time alone would drop it.
        key = K.outbox_key(K.bucket_of("491730000100"))
        cursor = await raw_redis.hget("ocs:journal:cursor", str(K.bucket_of("491730000100")))
        ms, seq = cursor.decode().split("-")
        await raw_redis.xadd(key, {"t": "late", "sub": "491730000100"}, id=f"{ms}-{int(seq) + 1}")
        await journal.export(keep_ms=0, now_ms=int(ms))  # trims by cursor here
        assert [e["t"] for e in exported(tmp_path / "j")] == ["create", "late"]
    finally:
        await journal.close()


async def test_cli_exports_once(redis_url: str, store: Store, tmp_path: Path) -> None:
    await add(store, "491730000200", 1_000_000)
    r = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "ocs.cli", "outbox", "export", "--redis-url", redis_url,
         "--dir", str(tmp_path / "out"), "--once"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "exported 1 events" in r.stdout
    assert [e["t"] for e in exported(tmp_path / "out")] == ["create"]


async def test_trim_keeps_what_a_consumer_group_has_not_read_or_acknowledged(
    store: Store,
    raw_redis: redis.asyncio.Redis,
    redis_url: str,
    tmp_path: Path,
) -> None:
    sub = "491730000300"
    await add(store, sub, 1_000_000)
    for i in range(5):
        await store.credit(sub, kind="topup", amount=1, reference=f"g{i}", now=T0)
    key = K.outbox_key(K.bucket_of(sub))
    ids = [i.decode() for i, _ in await raw_redis.xrange(key)]
    assert len(ids) == 6

    async def left() -> list[str]:
        return [i.decode() for i, _ in await raw_redis.xrange(key)]

    # billing (the usage consumer's group) was given 3 entries and acknowledged the first;
    # another group was created from the start and has read nothing.
    await raw_redis.xgroup_create(key, "billing", id="0")
    await raw_redis.xgroup_create(key, "other", id="0")
    got = await raw_redis.xreadgroup("billing", "c1", {key: ">"}, count=3)
    assert [i.decode() for i, _ in got[0][1]] == ids[:3]
    await raw_redis.xack(key, "billing", ids[0])
    journal = Journal(redis_url, tmp_path / "j")
    try:
        stats = await journal.export(keep_ms=0, now_ms=2**41)
        assert stats.exported == 6
        assert await left() == ids  # "other" needs every entry
        # "other" reads and acknowledges everything: billing's first pending entry is the floor.
        got = await raw_redis.xreadgroup("other", "c2", {key: ">"}, count=10)
        await raw_redis.xack(key, "other", *[i for i, _ in got[0][1]])
        await journal.export(keep_ms=0, now_ms=2**41)
        assert await left() == ids[1:]
        # billing acknowledges what it was given: the floor is the entry after the last one
        # delivered to it, never one it has not been given.
        await raw_redis.xack(key, "billing", ids[1], ids[2])
        await journal.export(keep_ms=0, now_ms=2**41)
        assert await left() == ids[3:]
        got = await raw_redis.xreadgroup("billing", "c1", {key: ">"}, count=10)
        await raw_redis.xack(key, "billing", *[i for i, _ in got[0][1]])
        await journal.export(keep_ms=0, now_ms=2**41)
        assert await left() == []
        assert len(exported(tmp_path / "j")) == 6  # each exported once
    finally:
        await journal.close()
