"""The tamper-evident audit log: who changed what, from where, when; and every failed
authentication.

Each record is a flat map of strings with ``seq`` (1, 2, ...), ``prev`` (the hash of the
record before; 64 zeros for the first) and ``hash``: SHA-256 over the record's other fields in
a canonical JSON form (sorted keys, no spaces). The chain's head (``"<seq> <hash>"``) is
signed with HMAC-SHA256 under the audit key (derived from OCS_SECRET_KEY) in the same step as
each append, so the last records cannot be cut off without the key: :func:`verify` names the
first record that was edited, removed, reordered, or the point where the chain was truncated.

Kept in a Redis stream (``ocs:{audit}``) beside the outbox: every process appends to one chain
with one compare-and-set script, and it is as durable as the balances it records (AOF).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ocs.store.security import AuditEntry, SecurityStore

__all__ = ["GENESIS", "AuditLog", "Verdict", "record_hash", "verify"]

GENESIS: Final = "0" * 64
#: Fields a caller may set (anything else is refused, so records stay comparable).
FIELDS: Final = frozenset(
    {"ts", "who", "role", "agency", "from", "action", "target", "status", "request_id",
     "before", "after", "detail"}
)  # fmt: skip
MAX_FIELD: Final = 8192
#: How many times an append retries when another process appended first.
_RETRIES: Final = 50


def record_hash(fields: Mapping[str, str]) -> str:
    body = {k: v for k, v in fields.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def sign_head(key: bytes, head: str) -> str:
    return hmac.new(key, head.encode(), hashlib.sha256).hexdigest()


class AuditLog:
    """Appends records to the chain in Redis (one process may hold many at once)."""

    def __init__(self, store: SecurityStore, key: bytes) -> None:
        self.store = store
        self.key = key
        self._lock = asyncio.Lock()
        self._head: str | None = None

    async def append(self, **fields: str) -> int:
        """Append one record; its sequence number."""
        unknown = set(fields) - FIELDS
        if unknown:
            raise ValueError(f"audit: unknown field {sorted(unknown)[0]!r}")
        clean = {k: v[:MAX_FIELD] for k, v in fields.items() if v}
        async with self._lock:  # one append in flight per process: no needless conflicts
            head = self._head
            if head is None:
                head, _ = await self.store.audit_head()
            for _ in range(_RETRIES):
                seq, prev = (int(head.split()[0]), head.split()[1]) if head else (0, GENESIS)
                record = {**clean, "seq": str(seq + 1), "prev": prev}
                record["hash"] = record_hash(record)
                new_head = f"{seq + 1} {record['hash']}"
                ok, head = await self.store.append_audit(
                    head, new_head, sign_head(self.key, new_head), record
                )
                if ok:
                    self._head = new_head
                    return seq + 1
            self._head = None
            raise RuntimeError("audit: could not append after many conflicting appends")


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    records: int
    #: The first bad record (its stream id and seq) and what is wrong, if not ok.
    problem: str = ""


class _Chain:
    """Checks records one by one, in order; then the signed head."""

    def __init__(self) -> None:
        self.expected_seq, self.prev, self.count = 1, GENESIS, 0
        self.last: AuditEntry | None = None

    def check(self, entry: AuditEntry) -> Verdict | None:
        """None if ``entry`` follows; else the verdict naming it."""
        f = entry.fields
        where = f"record {entry.id} (seq {f.get('seq', '?')})"
        if record_hash(f) != f.get("hash"):
            return Verdict(False, self.count, f"{where}: edited (its hash does not match)")
        if f.get("seq") != str(self.expected_seq) or f.get("prev") != self.prev:
            missing = f"seq {self.expected_seq}" if f.get("prev") != self.prev else "its place"
            return Verdict(
                False, self.count,
                f"{where}: does not follow the record before it (expected {missing}): "
                "a record was removed or the records were reordered",
            )  # fmt: skip
        self.expected_seq, self.prev = self.expected_seq + 1, f["hash"]
        self.count, self.last = self.count + 1, entry
        return None

    def finish(self, key: bytes, head: str, signature: str) -> Verdict:
        """The chain against its signed head (``head`` "" and no record: an empty chain)."""
        count, last, seq = self.count, self.last, self.expected_seq - 1
        if not head and last is None:
            return Verdict(True, 0)
        if not hmac.compare_digest(sign_head(key, head), signature):
            return Verdict(
                False, count, f"the chain's head {head!r} is not signed by the audit key"
            )
        tail = f"{seq} {self.prev}"
        if head.split(maxsplit=1)[0] == str(seq) and head != tail:
            return Verdict(
                False, count, f"record {last.id if last else '-'} (seq {seq}): "
                "replaced (it is not the record the signed head names)",
            )  # fmt: skip
        if head != tail:
            return Verdict(
                False, count,
                f"truncated: the signed head is {head.split(maxsplit=1)[0] if head else 0} "
                "records, "
                f"the chain ends at seq {seq}" + (f" (record {last.id})" if last else ""),
            )  # fmt: skip
        return Verdict(True, count)


async def verify(store: SecurityStore, key: bytes, *, batch: int = 1000) -> Verdict:
    """Walk the whole chain in Redis and check each link, then the signed head."""
    chain = _Chain()
    after = "-"
    while True:
        entries = await store.audit_entries(after=after, count=batch)
        for entry in entries:
            bad = chain.check(entry)
            if bad is not None:
                return bad
        if len(entries) < batch:
            break
        after = entries[-1].id
    return chain.finish(key, *await store.audit_head())


#: The exported copy of the chain (one JSON object a line: {"id": ..., **fields}).
EXPORT_FILE: Final = "audit.jsonl"
#: The signed head the copy was made under: {"head": ..., "signature": ...}.
EXPORT_HEAD: Final = "audit.head"


def read_export(directory: str | Path) -> Iterator[AuditEntry]:
    """The records of an exported copy, in order (a record written twice, after a crash
    between the write and the cursor, is read once)."""
    seen: set[str] = set()
    path = Path(directory) / EXPORT_FILE
    with open(path, encoding="utf-8") as f:
        for line in f:
            obj = json.loads(line)
            entry_id = str(obj.pop("id"))
            if entry_id not in seen:
                seen.add(entry_id)
                yield AuditEntry(entry_id, {str(k): str(v) for k, v in obj.items()})


def verify_export(directory: str | Path, key: bytes) -> Verdict:
    """An exported copy checked like the chain in Redis, up to the signed head saved with it
    (``audit.head``): it needs nothing of Redis, so it holds where Redis cannot be trusted."""
    saved = json.loads((Path(directory) / EXPORT_HEAD).read_text(encoding="utf-8"))
    head, signature = str(saved["head"]), str(saved["signature"])
    upto = int(head.split(maxsplit=1)[0]) if head else 0
    chain = _Chain()
    for entry in read_export(directory):
        if chain.count == upto:
            break  # later records are signed by a later head (the next export)
        bad = chain.check(entry)
        if bad is not None:
            return bad
    return chain.finish(key, head, signature)


async def export(store: SecurityStore, directory: str | Path, *, batch: int = 5000) -> int:
    """Append the records not exported yet to ``directory``/audit.jsonl, durably, then move
    the cursor (kept in Redis); how many. At least once, like the outbox journal."""
    folder = Path(directory)
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    # The head first: every record it signs is in the stream, so it is in the copy below.
    head, signature = await store.audit_head()
    cursor = await store.audit_export_cursor()
    total = 0
    while True:
        entries = await store.audit_entries(after=cursor, count=batch)
        if not entries:
            saved = json.dumps({"head": head, "signature": signature})
            await asyncio.to_thread(_replace, folder / EXPORT_HEAD, saved)
            return total
        lines = [json.dumps({"id": e.id, **e.fields}, sort_keys=True, ensure_ascii=False)
                 for e in entries]  # fmt: skip
        await asyncio.to_thread(_append, folder / EXPORT_FILE, lines)
        cursor = entries[-1].id
        await store.set_audit_export_cursor(cursor)
        total += len(entries)


def _append(path: Path, lines: list[str]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _replace(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
