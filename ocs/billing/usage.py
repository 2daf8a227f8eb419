"""Usage from the OCS outbox into the billing store.

Billing never re-rates (architecture.md, Layers): what the charging core debited is the
usage. The commit, release and debit events of every bucket's outbox stream are read through a
consumer group of billing's own (``billing``), at least once: a batch is written in one
transaction, then acknowledged, and an event read twice (a crash between the two, a second
consumer claiming it) is written once, since its identity, ``<bucket>/<stream id>``, is the
primary key.

Which account an event belongs to is decided at the bill run, from the line's ownership at
the event's time (a line moved between accounts bills each its own part). The same
transaction adds the events it inserted, and only those, to the usage rollup
(:mod:`ocs.billing.rollup`), by the accounts owning their lines then.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import SQLAlchemyError

from ocs.billing import rollup
from ocs.billing import schema as S
from ocs.billing.db import pg_rows
from ocs.billing.errors import StorageUnavailable
from ocs.store.errors import StoreUnavailable
from ocs.store.notify import Notification, NotifyStore, group_gone
from ocs.tasks import cancel_and_wait

log = logging.getLogger("ocs.billing")

GROUP: Final = "billing"
#: Outbox event kinds that carry usage (``amt``: minus the money debited).
USAGE_KINDS: Final = frozenset({"commit", "release", "debit"})
#: Seconds before the consumer tries again after a Redis or database error.
RETRY_AFTER: Final = 1.0


def usage_row(bucket: int, entry_id: str, fields: Mapping[str, str]) -> dict[str, Any] | None:
    """The billing row of one outbox entry, or None when it is not usage (a top-up, a
    reservation) or is malformed (logged; never fatal)."""
    kind = fields.get("t", "")
    if kind not in USAGE_KINDS:
        return None
    try:
        amount = -int(fields.get("amt", "0"))
        units = int(fields.get("u", "0"))
        ts = int(fields["ts"])
        msisdn = fields["sub"]
    except (KeyError, ValueError):
        log.warning("billing: outbox entry %s/%s is not a usage event I can read: %r",
                    bucket, entry_id, dict(fields))  # fmt: skip
        return None
    return {
        "event_id": f"{bucket}/{entry_id}",
        "msisdn": msisdn,
        "ts": ts,
        "kind": kind,
        "service": fields.get("svc", "")[:32],
        "destination": fields.get("dst", "")[:32],
        "units": units,
        "amount": amount,
        "line_id": None,
    }


#: The columns of a usage row, in the order the bulk statements take them.
COLUMNS: Final = ("event_id", "msisdn", "ts", "kind", "service", "destination", "units", "amount")
_SQLITE_INSERT: Final = (
    f"INSERT INTO {S.usage_event.name} ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(COLUMNS))}) ON CONFLICT DO NOTHING"
)
# One statement for the whole batch (the rows as one JSON parameter, db.pg_rows), with the
# conflict handling in the same step and one round trip.
_PG_TYPES: Final = ("text", "text", "bigint", "text", "text", "text", "bigint", "bigint")
_PG_INSERT: Final = (
    f"INSERT INTO {S.usage_event.name} ({', '.join(COLUMNS)}) {pg_rows(_PG_TYPES)} "
    "ON CONFLICT DO NOTHING"
)


def usage_statement(dialect: str, rows: Sequence[Mapping[str, Any]]) -> tuple[str, Any] | None:
    """The driver-level INSERT of usage rows and its parameters (None: nothing to insert).
    Built before the transaction opens, so the database never waits, in a transaction, for
    Python to prepare 10,000 rows."""
    if not rows:
        return None
    if dialect == "postgresql":
        return _PG_INSERT, {"rows": json.dumps([[r[c] for c in COLUMNS] for r in rows])}
    return _SQLITE_INSERT, [tuple(r[c] for c in COLUMNS) for r in rows]


def _unique(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """An event id twice in the batch once (the last one)."""
    return list({r["event_id"]: r for r in rows}.values())


class _Raced(StorageUnavailable):
    """Another writer stored some of the batch between reading what was stored and writing."""


class _Replayed(Exception):
    """Some of the batch was stored already: which ones must be read first (in a new
    transaction: the rows this one inserted are there now)."""


def _insert_all(conn: Connection, rows: Sequence[Mapping[str, Any]], stmt: tuple[str, Any]) -> int:
    """Insert a batch believed new, and add it to the rollup; _Replayed (roll back) when an
    event of it was stored before: the rollup must count only what this batch inserted."""
    n = _execute(conn, stmt)
    if n != len(rows):
        raise _Replayed
    rollup.ingested(conn, rows)
    return n


def insert_usage(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
    """INSERT the usage rows whose event id is not stored (the first one stays) and add them,
    and only them, to the rollup, in the caller's transaction; how many were new. A row
    another writer stores meanwhile makes it raise StorageUnavailable (roll back, try again):
    it cannot say which rows were its own. Driver-level statements: the Core path spent more
    time building each row's parameters than the database spent storing it."""
    unique = _unique(rows)
    u = S.usage_event
    seen: set[str] = set()
    ids = [str(r["event_id"]) for r in unique]
    for i in range(0, len(ids), 2_000):
        part = ids[i : i + 2_000]
        seen.update(conn.execute(select(u.c.event_id).where(u.c.event_id.in_(part))).scalars())
    fresh = [r for r in unique if r["event_id"] not in seen]
    stmt = usage_statement(conn.dialect.name, fresh)
    if stmt is None:
        return 0
    try:
        return _insert_all(conn, fresh, stmt)
    except _Replayed:
        raise _Raced("billing database: usage stored by another writer meanwhile; "
                     "try the batch again") from None  # fmt: skip


def _execute(conn: Connection, stmt: tuple[str, Any]) -> int:
    result = conn.exec_driver_sql(*stmt)
    return max(int(result.rowcount or 0), 0)


#: Tries of a batch some of which was stored before, while other writers store it too.
REPLAY_TRIES: Final = 3


def store_usage(engine: Engine, rows: Sequence[Mapping[str, Any]]) -> int:
    """Write a batch of usage rows in one transaction, with their sums in the rollup; how
    many were new. The usual batch is all new: one INSERT, and its row count says so. One
    with events stored before (read again after a crash) is rolled back and written again,
    those events left out (:func:`insert_usage`)."""
    unique = _unique(rows)
    stmt = usage_statement(engine.dialect.name, unique)
    if stmt is None:
        return 0
    try:
        try:
            with engine.begin() as conn:
                return _insert_all(conn, unique, stmt)
        except _Replayed:
            pass
        for _ in range(REPLAY_TRIES - 1):
            try:
                with engine.begin() as conn:
                    return insert_usage(conn, unique)
            except _Raced:
                continue
        with engine.begin() as conn:
            return insert_usage(conn, unique)
    except SQLAlchemyError as exc:
        raise StorageUnavailable(f"billing database: {exc}") from exc


@dataclass(slots=True)
class IngestStats:
    read: int = 0
    stored: int = 0
    ignored: int = 0
    #: Unix ms of the last batch written (how fresh the pending sums are).
    last_batch_ms: int = 0
    errors: list[str] = field(default_factory=list)


def consumer_name() -> str:
    return f"billing:{socket.gethostname()}:{os.getpid()}"


class UsageConsumer:
    """Reads the outbox streams through the ``billing`` group into the billing store."""

    def __init__(
        self,
        outbox: NotifyStore,
        engine: Engine,
        *,
        me: str | None = None,
        batch: int = 2_000,
        block_ms: int = 500,
        clock: Any = None,
    ) -> None:
        self.outbox = outbox
        self.engine = engine
        self.me = me or consumer_name()
        self.batch = batch
        # XREADGROUP's COUNT is per stream: about ``batch`` entries a read over all of them.
        self._count = max(16, batch // max(1, len(outbox.streams)))
        self.block_ms = block_ms
        self.stats = IngestStats()
        self._clock = clock
        self._started = False

    async def start(self) -> None:
        """Create the group (from the start of each stream) and take over what a consumer
        that died read and did not acknowledge."""
        await self.outbox.ensure_group(GROUP)
        await self.outbox.claim_all(GROUP, self.me)
        self._started = True

    async def _handle(self, notes: Sequence[Notification]) -> None:
        rows = []
        for n in notes:
            row = usage_row(self.outbox.bucket(n), n.id, n.fields)
            if row is not None:
                rows.append(row)
        stored = await asyncio.to_thread(store_usage, self.engine, rows)
        await self.outbox.ack_many(GROUP, notes)
        self.stats.read += len(notes)
        self.stats.stored += stored
        self.stats.ignored += len(notes) - len(rows)
        if self._clock is not None:
            self.stats.last_batch_ms = int(self._clock())

    async def drain(self) -> int:
        """Ingest everything there is now (pending entries first, then new ones), without
        waiting for more; how many entries were read."""
        if not self._started:
            await self.start()
        before = self.stats.read
        after = dict.fromkeys(self.outbox.streams, "0")

        async def own() -> list[Notification]:
            notes = await self.outbox.read(GROUP, self.me, ids=after, count=self._count)
            for n in notes:
                after[n.stream] = n.id
            return notes

        async def new() -> list[Notification]:
            return await self.outbox.read(GROUP, self.me, ids=None, count=self._count)

        await self._ingest(own)
        await self._ingest(new)
        return self.stats.read - before

    async def _ingest(self, read: Callable[[], Awaitable[list[Notification]]]) -> None:
        """Read batches until one comes back empty, each stored while the next is read (the
        database's write and Redis's read overlap); a batch is acknowledged once stored, so
        one read ahead and not stored stays pending (read again: at least once)."""
        writing: asyncio.Task[None] | None = None
        try:
            while True:
                notes = await read()
                if writing is not None:
                    await writing
                    writing = None
                if not notes:
                    return
                writing = asyncio.create_task(self._handle(notes), name="billing-usage-write")
        finally:
            if writing is not None:
                await cancel_and_wait(writing)

    async def run(self) -> None:
        """Consume until cancelled; a store or database outage is logged and retried."""
        while True:
            try:
                await self.drain()
                while True:
                    notes = await self.outbox.read(
                        GROUP, self.me, ids=None, count=self._count, block_ms=self.block_ms
                    )
                    if notes:
                        await self._handle(notes)
            except (StoreUnavailable, StorageUnavailable) as exc:
                if group_gone(exc):
                    # The streams were deleted under the group (a Redis emptied or replaced,
                    # as the demo does at start): create it again on the next pass, rather
                    # than fail on every read from now on.
                    self._started = False
                log.warning("billing usage consumer: %s", exc)
                self.stats.errors.append(str(exc))
                del self.stats.errors[:-10]
                await asyncio.sleep(RETRY_AFTER)


@contextlib.asynccontextmanager
async def consuming(consumer: UsageConsumer) -> Any:
    """Run ``consumer`` in a task for as long as the context lasts."""
    task = asyncio.create_task(consumer.run(), name="billing-usage")
    try:
        yield consumer
    finally:
        # (cancelled until it ends: a single cancellation can be lost inside redis-py, and
        # this loop would then run on, reading the group for a database no longer used)
        await cancel_and_wait(task)


def events_of(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    return [str(r["event_id"]) for r in rows]
