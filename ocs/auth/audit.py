"""The tamper-evident audit log: who changed what, from where, when; and every failed
authentication.

Each record is a flat map of strings with ``seq`` (1, 2, ...), ``prev`` (the hash of the
record before; 64 zeros for the first) and ``hash``: SHA-256 over the record's other fields in
a canonical JSON form (sorted keys, no spaces). The chain's head (``"<seq> <hash>"``) is
signed with HMAC-SHA256 under the audit key (derived from OCS_SECRET_KEY) in the same step as
each append, so the last records cannot be cut off without the key: :func:`verify` names the
first record that was edited, removed, reordered, or the point where the chain was truncated.

Kept in a Redis stream (``ocs:audit``) beside the outbox: every process appends to one chain
with one compare-and-set script, and it is as durable as the balances it records (AOF).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
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


async def verify(store: SecurityStore, key: bytes, *, batch: int = 1000) -> Verdict:
    """Walk the whole chain and check each link, then the signed head."""
    expected_seq, prev, count = 1, GENESIS, 0
    last: AuditEntry | None = None
    after = "-"
    while True:
        entries = await store.audit_entries(after=after, count=batch)
        for entry in entries:
            f = entry.fields
            where = f"record {entry.id} (seq {f.get('seq', '?')})"
            if record_hash(f) != f.get("hash"):
                return Verdict(False, count, f"{where}: edited (its hash does not match)")
            if f.get("seq") != str(expected_seq) or f.get("prev") != prev:
                missing = f"seq {expected_seq}" if f.get("prev") != prev else "its place"
                return Verdict(
                    False, count,
                    f"{where}: does not follow the record before it (expected {missing}): "
                    "a record was removed or the records were reordered",
                )  # fmt: skip
            expected_seq, prev, count, last = expected_seq + 1, f["hash"], count + 1, entry
        if len(entries) < batch:
            break
        after = entries[-1].id
    head, signature = await store.audit_head()
    if not head and last is None:
        return Verdict(True, 0)
    if not hmac.compare_digest(sign_head(key, head), signature):
        return Verdict(False, count, f"the chain's head {head!r} is not signed by the audit key")
    tail = f"{expected_seq - 1} {prev}"
    if head.split()[0] == str(expected_seq - 1) and head != tail:
        return Verdict(
            False, count, f"record {last.id if last else '-'} (seq {expected_seq - 1}): "
            "replaced (it is not the record the signed head names)",
        )  # fmt: skip
    if head != tail:
        return Verdict(
            False, count,
            f"truncated: the signed head is {head.split()[0] if head else 0} records, "
            f"the chain ends at seq {expected_seq - 1}"
            + (f" (record {last.id})" if last else ""),
        )  # fmt: skip
    return Verdict(True, count)
