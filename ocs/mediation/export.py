"""Rated records to the data warehouse: Parquet files, one per source file and day.

Layout (Hive-style partitions, readable as one dataset by pyarrow, Spark, DuckDB, Trino)::

    <warehouse>/
      date=2026-11-23/
        MSC01_-_0042.20261123_-_1201+0100.parquet
      date=2026-11-24/
        MSC01_-_0043.20261124_-_0001+0100.parquet

A record lands in the partition of the UTC day its call started, so a file closed just after
midnight may write to two partitions. Money columns are int64 micro-units (10^-6 of
``currency``), never floats; times are UTC timestamps in milliseconds. A file is written aside
and renamed into place (readers skip names that start with a dot), so a re-run after a crash
replaces it whole with the same rows.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from ocs.mediation.usage import Usage

_TS: Final = pa.timestamp("ms", tz="UTC")

#: The warehouse table. Money: int64 micro-units; units: seconds or events.
SCHEMA: Final = pa.schema(
    [
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("switch", pa.string(), nullable=False),
        pa.field("file", pa.string(), nullable=False),
        pa.field("sequence", pa.int64(), nullable=False),
        pa.field("direction", pa.string(), nullable=False),
        pa.field("served_msisdn", pa.string(), nullable=False),
        pa.field("served_imsi", pa.string(), nullable=False),
        pa.field("other_party", pa.string(), nullable=False),
        pa.field("start", _TS, nullable=False),
        pa.field("answer", _TS),
        pa.field("release", _TS),
        pa.field("duration", pa.int64(), nullable=False),
        pa.field("location", pa.string(), nullable=False),
        pa.field("plan", pa.string(), nullable=False),
        pa.field("service", pa.string(), nullable=False),
        pa.field("currency", pa.string(), nullable=False),
        pa.field("units", pa.int64(), nullable=False),
        pa.field("charged", pa.int64(), nullable=False),
        pa.field("from_buckets", pa.int64(), nullable=False),
        pa.field("balance_after", pa.int64(), nullable=False),
        pa.field("rated_at", _TS, nullable=False),
    ],
    metadata={
        b"ocs.money": b"charged and balance_after are int64 micro-units (10^-6 of currency)",
        b"ocs.units": b"units and from_buckets: seconds for calls, events for SMS",
    },
)


@dataclass(slots=True)
class RatedUsage:
    """A usage as charged: what the warehouse is made of. (A plain slotted dataclass, not a
    frozen one: one is made per record on the charging path; treat it as read-only.)"""

    usage: Usage
    plan: str
    service: str
    currency: str
    #: Units debited (seconds of a call, 1 for an SMS).
    units: int
    #: Money debited by this record, micro-units.
    charged: int
    #: Units taken from unit buckets (free minutes) by this record.
    from_buckets: int
    #: The balance right after this record's debit, micro-units.
    balance: int
    #: The debit was charged before under the record's identity (another file held the same
    #: record, or an earlier attempt at this file): the figures are that first debit's.
    replayed: bool = False


def day_of(ms: int) -> str:
    """The UTC date (YYYY-MM-DD) of a Unix-ms time: the partition of a record."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def _table(rows: Sequence[RatedUsage], rated_at: int) -> pa.Table:
    us = [r.usage for r in rows]
    cols: dict[str, list[Any]] = {
        "record_id": [u.record_id for u in us],
        "switch": [u.switch for u in us],
        "file": [u.file for u in us],
        "sequence": [u.sequence for u in us],
        "direction": [str(u.direction) for u in us],
        "served_msisdn": [u.served_msisdn for u in us],
        "served_imsi": [u.served_imsi for u in us],
        "other_party": [u.other_party for u in us],
        "start": [u.start for u in us],
        "answer": [u.answer for u in us],
        "release": [u.release for u in us],
        "duration": [u.duration for u in us],
        "location": [u.location for u in us],
        "plan": [r.plan for r in rows],
        "service": [r.service for r in rows],
        "currency": [r.currency for r in rows],
        "units": [r.units for r in rows],
        "charged": [r.charged for r in rows],
        "from_buckets": [r.from_buckets for r in rows],
        "balance_after": [r.balance for r in rows],
        "rated_at": [rated_at] * len(rows),
    }
    return pa.Table.from_pydict(cols, schema=SCHEMA)


def parquet_name(source_file: str) -> str:
    return f"{source_file.replace('/', '_')}.parquet"


def write_parquet(
    warehouse: str | Path, source_file: str, rows: Sequence[RatedUsage], *, rated_at: int
) -> list[Path]:
    """Write the rated records of one source file, one Parquet file per UTC day of their
    start, rows in sequence order; the paths written. Blocking I/O (run it in a thread)."""
    by_day: dict[str, list[RatedUsage]] = defaultdict(list)
    for r in rows:
        by_day[day_of(r.usage.start)].append(r)
    written = []
    for day, day_rows in sorted(by_day.items()):
        day_rows.sort(key=lambda r: r.usage.sequence)
        part = Path(warehouse) / f"date={day}"
        part.mkdir(parents=True, exist_ok=True)
        final = part / parquet_name(source_file)
        tmp = part / f".{final.name}.tmp"
        pq.write_table(_table(day_rows, rated_at), tmp, compression="zstd")
        os.replace(tmp, final)
        written.append(final)
    return written
