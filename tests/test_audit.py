"""The audit chain (ocs.auth.audit): records appended by concurrent writers form one chain,
and an edited, removed, reordered or truncated record is found and named, by the function and
by ``ocs audit verify``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio

from ocs.auth.audit import AuditLog, verify
from ocs.auth.credentials import derive_key
from ocs.store.cluster import hot_client
from ocs.store.keys import AUDIT_HEAD, AUDIT_STREAM
from ocs.store.security import SecurityStore

KEY = derive_key("test-secret-key-" * 4, "audit")


@pytest.fixture
async def security(redis_url: str) -> AsyncIterator[SecurityStore]:
    async with hot_client(redis_url) as client:
        yield SecurityStore(client)


async def _fill(security: SecurityStore, n: int = 5) -> None:
    log = AuditLog(security, KEY)
    for i in range(n):
        await log.append(ts=str(1000 + i), who="key:abc", action="POST /v1/x", target=f"/v1/x/{i}")


async def _entries(raw: redis.asyncio.Redis) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return list(await raw.xrange(AUDIT_STREAM))


async def _rewrite(raw: redis.asyncio.Redis, entries: list[tuple[bytes, dict[bytes, bytes]]]
                   ) -> None:  # fmt: skip
    """Write the stream anew with these entries (their ids kept, in the order given)."""
    ids = sorted(e[0] for e in entries)
    await raw.delete(AUDIT_STREAM)
    for new_id, (_, fields) in zip(ids, entries, strict=True):
        await raw.xadd(AUDIT_STREAM, fields, id=new_id)  # type: ignore[arg-type]


async def test_an_intact_chain_verifies(security: SecurityStore) -> None:
    assert (await verify(security, KEY)).ok  # empty
    await _fill(security)
    verdict = await verify(security, KEY)
    assert verdict.ok and verdict.records == 5
    # With another key the head's signature does not verify.
    assert not (await verify(security, derive_key("other", "audit"))).ok


async def test_concurrent_writers_make_one_chain(redis_url: str, security: SecurityStore) -> None:
    async with hot_client(redis_url) as other_client:
        logs = [AuditLog(security, KEY), AuditLog(SecurityStore(other_client), KEY)]
        await asyncio.gather(*(logs[i % 2].append(ts=str(i), action="a") for i in range(40)))
    verdict = await verify(security, KEY, batch=7)
    assert verdict.ok and verdict.records == 40


async def test_an_edited_record_is_named(security: SecurityStore, raw_redis: redis.asyncio.Redis
                                         ) -> None:  # fmt: skip
    await _fill(security)
    entries = await _entries(raw_redis)
    entries[2][1][b"target"] = b"/v1/x/elsewhere"
    await _rewrite(raw_redis, entries)
    verdict = await verify(security, KEY)
    assert not verdict.ok and verdict.records == 2
    assert verdict.problem.startswith(f"record {entries[2][0].decode()} (seq 3): edited")


async def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(
    security: SecurityStore, raw_redis: redis.asyncio.Redis
) -> None:
    from ocs.auth.audit import record_hash

    await _fill(security)
    entries = await _entries(raw_redis)
    fields = {k.decode(): v.decode() for k, v in entries[1][1].items()}
    fields["who"] = "key:someone-else"
    fields["hash"] = record_hash(fields)
    entries[1] = (entries[1][0], {k.encode(): v.encode() for k, v in fields.items()})
    await _rewrite(raw_redis, entries)
    verdict = await verify(security, KEY)
    assert not verdict.ok and "(seq 3): does not follow" in verdict.problem


async def test_a_removed_record_is_named(security: SecurityStore, raw_redis: redis.asyncio.Redis
                                         ) -> None:  # fmt: skip
    await _fill(security)
    entries = await _entries(raw_redis)
    await raw_redis.xdel(AUDIT_STREAM, entries[1][0])
    verdict = await verify(security, KEY)
    assert not verdict.ok and verdict.records == 1
    assert verdict.problem.startswith(f"record {entries[2][0].decode()} (seq 3): does not follow")
    assert "expected seq 2" in verdict.problem


async def test_reordered_records_are_named(security: SecurityStore,
                                           raw_redis: redis.asyncio.Redis) -> None:  # fmt: skip
    await _fill(security)
    entries = await _entries(raw_redis)
    entries[1], entries[2] = entries[2], entries[1]
    await _rewrite(raw_redis, entries)
    verdict = await verify(security, KEY)
    assert not verdict.ok and verdict.records == 1 and "(seq 3): does not follow" in verdict.problem


async def test_a_truncated_chain_is_found(security: SecurityStore,
                                          raw_redis: redis.asyncio.Redis) -> None:  # fmt: skip
    await _fill(security)
    entries = await _entries(raw_redis)
    await raw_redis.xdel(AUDIT_STREAM, entries[-1][0], entries[-2][0])
    verdict = await verify(security, KEY)
    assert not verdict.ok and verdict.records == 3
    assert verdict.problem.startswith("truncated: the signed head is 5 records")
    # Rolling the head back too needs the key: its signature no longer matches.
    await raw_redis.set(AUDIT_HEAD, f"3 {entries[2][1][b'hash'].decode()}")
    verdict = await verify(security, KEY)
    assert not verdict.ok and "is not signed by the audit key" in verdict.problem


async def test_ocs_audit_verify(redis_url: str, security: SecurityStore,
                                raw_redis: redis.asyncio.Redis) -> None:  # fmt: skip
    await _fill(security)
    env = {**os.environ, "OCS_REDIS_URL": redis_url, "OCS_SECRET_KEY": "test-secret-key-" * 4}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ocs.cli", "audit", "verify", "--json"],
                              capture_output=True, text=True, env=env, timeout=60,
                              check=False)  # fmt: skip

    r = await asyncio.to_thread(run)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"ok": True, "records": 5, "problem": ""}
    entries = await _entries(raw_redis)
    await raw_redis.xdel(AUDIT_STREAM, entries[3][0])
    r = await asyncio.to_thread(run)
    assert r.returncode == 2
    out = json.loads(r.stdout)
    assert not out["ok"] and out["problem"].startswith(f"record {entries[4][0].decode()} (seq 5)")


async def test_an_exported_copy_verifies_without_redis(
    redis_url: str, security: SecurityStore, raw_redis: redis.asyncio.Redis, tmp_path: Path
) -> None:
    from ocs.auth.audit import EXPORT_FILE, export, verify_export

    await _fill(security, 3)
    assert await export(security, tmp_path) == 3
    await _fill_more(security, 2)
    assert await export(security, tmp_path) == 2
    assert await export(security, tmp_path) == 0
    verdict = verify_export(tmp_path, KEY)
    assert verdict.ok and verdict.records == 5
    # Redis loses the chain: the copy still verifies (and says it all).
    await raw_redis.delete(AUDIT_STREAM)
    assert not (await verify(security, KEY)).ok
    assert verify_export(tmp_path, KEY).ok
    # The copy edited: named.
    path = tmp_path / EXPORT_FILE
    lines = path.read_text().splitlines()
    record = json.loads(lines[1])
    record["who"] = "key:nobody"
    lines[1] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")
    verdict = verify_export(tmp_path, KEY)
    assert not verdict.ok and "(seq 2): edited" in verdict.problem
    # And through the command line, with no Redis.
    env = {**os.environ, "OCS_SECRET_KEY": "test-secret-key-" * 4}
    env.pop("OCS_REDIS_URL", None)
    r = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "ocs.cli", "audit", "verify", "--dir",
                         str(tmp_path)], capture_output=True, text=True, env=env, timeout=60,
        check=False,
    )  # fmt: skip
    assert r.returncode == 2 and "(seq 2): edited" in r.stdout, r.stdout + r.stderr


async def _fill_more(security: SecurityStore, n: int) -> None:
    log = AuditLog(security, KEY)
    for i in range(n):
        await log.append(ts=str(2000 + i), who="key:def", action="PATCH /v1/x")
