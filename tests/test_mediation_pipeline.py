"""Hot billing end to end against a real Redis: files in a directory -> ledger -> decode ->
forced debits keyed by record identity -> rejects, Parquet, archive -> done/.

Records come from a small text decoder defined here (``stub_decode``), so these tests pin the
pipeline's own behaviour whatever the formats do; the real decoders are exercised at the end
(``test_real_files``) with files that the switch simulator's encoders write.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from ocs.charging.engine import ChargingEngine
from ocs.mediation.archive import read_entry, verify
from ocs.mediation.collect import DirectorySource, Ledger
from ocs.mediation.formats import CdrRecord, Rejected, decode
from ocs.mediation.formats.ascii import encode_file
from ocs.mediation.formats.ber import encode_record, frame_file
from ocs.mediation.naming import format_name
from ocs.mediation.pipeline import (
    FileReport,
    Mediation,
    MediationConfig,
    implausible,
    rejects_text,
    run_mediation,
)
from ocs.mediation.usage import Direction, Usage
from ocs.store.keys import bucket_of, notify_key
from ocs.store.store import Store, UnitBucket
from tariffs import PlanBook, TariffRater
from tests.plans import flat_voice

KEY = bytes(range(32))
#: 2026-09-15 12:00 UTC
T0 = int(datetime(2026, 9, 15, 12, 0, tzinfo=UTC).timestamp() * 1000)
CET = UTC  # names carry the switch's local time; UTC keeps the arithmetic plain

PLAN = flat_voice(
    "cdr-flat",
    per_second=True,
    services="""
[services.voice-mt]
unit = "seconds"
default_quota = 300
direction = "incoming"
[services.voice-mt.network]
cdr_record_types = ["mtCallRecord"]

[services.sms]
unit = "events"
default_quota = 1
[services.sms.network]
cdr_record_types = ["moSMSRecord"]
""",
    rates="""
[[rates]]
service = "voice-mt"
price = "0"

[[rates]]
service = "sms"
price = "0.05"
""",
)
VOICE_PER_SECOND = 1_000  # 0.06 a minute, in micro-units a second
SMS_PRICE = 50_000


def rater() -> TariffRater:
    return TariffRater(PlanBook([PLAN]))


# -- a stub decoder: one record per line -------------------------------------------------------

_DIRS = {"moc": Direction.MOC, "mtc": Direction.MTC, "smo": Direction.SMS_MO,
         "smt": Direction.SMS_MT}  # fmt: skip


def line(direction: str, msisdn: str, other: str, start: int, duration: int = 0) -> str:
    return f"{direction} {msisdn} {other} {start} {duration}"


def stub_decode(data: bytes, *, switch: str, file: str) -> Iterator[Usage | Rejected]:
    """``<moc|mtc|smo|smt> <msisdn> <other> <start ms> <duration s>`` per line; anything else
    is rejected with its bytes, as a real decoder rejects a corrupt record."""
    offset = 0
    for seq, raw in enumerate(data.split(b"\n"), start=1):
        if not raw:
            offset += 1
            continue
        parts = raw.decode(errors="replace").split()
        if len(parts) != 5 or parts[0] not in _DIRS or not parts[3].isdigit():
            yield Rejected(seq, offset, f"malformed record: {raw[:20]!r}", raw)
        else:
            d = _DIRS[parts[0]]
            start, duration = int(parts[3]), int(parts[4])
            call = d in (Direction.MOC, Direction.MTC)
            yield Usage(
                record_id=f"{switch}:{file}:{seq}",
                switch=switch,
                file=file,
                sequence=seq,
                direction=d,
                served_msisdn=parts[1],
                served_imsi="26201" + parts[1][-10:],
                other_party=parts[2],
                start=start,
                answer=start if call and duration else None,
                release=start + duration * 1000 if call else None,
                duration=duration,
                location="26201",
                service="voice" if call else "sms",
            )
        offset += len(raw) + 1


# -- fixtures ------------------------------------------------------------------------------


async def add(store: Store, msisdn: str, balance: int, *, limit: int = 0,
              buckets: tuple[UnitBucket, ...] = ()) -> None:  # fmt: skip
    ans = await store.create_subscriber(msisdn, plan="cdr-flat", balance=balance,
                                        credit_limit=limit, state="active", buckets=buckets,
                                        now=T0)  # fmt: skip
    assert ans.status == "OK"


async def balance(store: Store, msisdn: str) -> int:
    acct = await store.get_account(msisdn)
    assert acct is not None
    return acct.balance


def name(rc: int, minute: int = 0, part: int = 0, node: str = "MSC01") -> str:
    closed = datetime(2026, 9, 15, 12, 1, tzinfo=CET) + timedelta(minutes=minute)
    return format_name(node, rc, closed, part or 1, "ascii", split=bool(part))


def write(directory: Path, file: str, lines: list[str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / file
    tmp = directory / (file + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.rename(path)  # closed: the switch renames the file when it closes it
    return path


def make(store: Store, src: Path, tmp_path: Path, *, window: int = 64,
         archive: bool = True, on_file: object = None) -> Mediation:  # fmt: skip
    config = MediationConfig(
        poll_interval=0.05,
        window=window,
        warehouse_dir=str(tmp_path / "warehouse"),
        archive_dir=str(tmp_path / "archive") if archive else None,
        archive_key=KEY if archive else None,
    )
    engine = ChargingEngine(store, rater())
    return Mediation(engine, rater(), DirectorySource(src), config, decoder=stub_decode,
                     on_file=on_file)  # type: ignore[arg-type]  # fmt: skip


async def debit_events(store: Store, msisdn: str) -> list[dict[str, str]]:
    return [e.fields for e in await store.events(msisdn, limit=10_000) if e.kind == "debit"]


# -- tests -----------------------------------------------------------------------------------


async def test_a_file_is_charged_rejected_exported_archived_and_moved(
    store: Store, tmp_path: Path
) -> None:
    await add(store, "491700000001", 10_000_000)
    await add(store, "491700000002", 10_000_000)
    src = tmp_path / "in"
    f = name(1)
    write(src, f, [
        line("moc", "491700000001", "+4930123456", T0, 125),
        line("mtc", "491700000001", "+4930999999", T0 + 1000, 300),  # incoming: free
        "garbage that is not a record",
        line("smo", "491700000002", "+491701111111", T0 + 2000),
        line("moc", "491700000002", "+4930123456", T0 + 3000, 0),  # unanswered
        line("moc", "499999999999", "+4930123456", T0 + 4000, 60),  # no such subscriber
    ])  # fmt: skip
    m = make(store, src, tmp_path)
    (report,) = await m.poll()
    assert (report.records, report.charged, report.rejected) == (6, 4, 2)
    assert report.amount == 125 * VOICE_PER_SECOND + SMS_PRICE
    assert await balance(store, "491700000001") == 10_000_000 - 125 * VOICE_PER_SECOND
    assert await balance(store, "491700000002") == 10_000_000 - SMS_PRICE
    # The file moved to done/, its rejects beside it, one line each, with the reason.
    assert not (src / f).exists()
    assert (src / "done" / f).exists()
    rejected = (src / "done" / f"{f}.rejected").read_text().splitlines()
    assert rejected[0].startswith("#")
    offset = len(line("moc", "491700000001", "+4930123456", T0, 125)) + 1
    offset += len(line("mtc", "491700000001", "+4930999999", T0 + 1000, 300)) + 1
    assert rejected[1].split("\t")[:3] == [
        "3", str(offset), "malformed record: b'garbage that is not '"]  # fmt: skip
    assert rejected[1].split("\t")[3] == b"garbage that is not a record".hex()
    seq, offset, reason, ident = rejected[2].split("\t")
    assert (seq, offset, ident) == ("6", "-", f"MSC01:{f}:6")
    assert reason == "user-unknown: no subscriber 499999999999"
    # The ledger.
    entry = await m.ledger.get(f)
    assert entry is not None
    assert (entry.state, entry.records, entry.charged, entry.rejected, entry.amount) == (
        "done", 6, 4, 2, report.amount)  # fmt: skip
    assert await m.ledger.totals() == {"files": 1, "records": 6, "charged": 4, "rejected": 2,
                                       "amount": report.amount, "repeated": 0,
                                       "duplicates": 0}  # fmt: skip
    # Parquet: one file in the day's partition, exact amounts, services as rated.
    (path,) = report.warehouse
    assert path == str(tmp_path / "warehouse" / "date=2026-09-15" / f"{f}.parquet")
    table = pq.read_table(path)
    assert table.schema.field("charged").type == "int64"
    rows = table.to_pylist()
    assert [r["sequence"] for r in rows] == [1, 2, 4, 5]
    assert [r["service"] for r in rows] == ["voice", "voice-mt", "sms", "voice"]
    assert [r["charged"] for r in rows] == [125_000, 0, 50_000, 0]
    assert [r["balance_after"] for r in rows] == [9_875_000, 9_875_000, 9_950_000, 9_950_000]
    assert rows[0]["start"] == datetime.fromtimestamp(T0 / 1000, UTC)
    assert rows[0]["plan"] == "cdr-flat" and rows[0]["units"] == 125
    # The whole warehouse reads as one dataset partitioned by day.
    dataset = ds.dataset(tmp_path / "warehouse", partitioning="hive")
    assert dataset.to_table().num_rows == 4
    # The archive holds the file as it came, and verifies.
    assert report.archive_seq == 1
    assert verify(tmp_path / "archive", KEY).ok
    (arc,) = (tmp_path / "archive").glob("*/*.arc")
    manifest, plain = read_entry(arc, KEY)
    assert plain == (src / "done" / f).read_bytes()
    assert (manifest["records"], manifest["rejected"]) == (6, 2)


async def test_rotation_and_split_parts_are_charged_in_closing_order(
    store: Store, tmp_path: Path
) -> None:
    await add(store, "491700000001", 0)
    src = tmp_path / "in"
    # Written out of order; two switches; a split minute in parts; a file still open.
    files = [name(5, 2), name(3, 1, part=2), name(2, 1, part=1), name(1, 0),
             name(7, 0, node="MSC02"), name(8, 1, node="MSC02")]  # fmt: skip
    for i, f in enumerate(files):
        write(src, f, [line("moc", "491700000001", "+4930123456", T0 + i, 1)])
    (src / (name(6, 3) + ".tmp")).write_text(line("moc", "491700000001", "+4930", T0, 1))
    seen: list[FileReport] = []
    m = make(store, src, tmp_path, on_file=seen.append)
    reports = await m.poll()
    assert reports == seen
    order = [r.file for r in reports]
    msc01 = [f for f in order if f.startswith("MSC01")]
    assert msc01 == [name(1, 0), name(2, 1, part=1), name(3, 1, part=2), name(5, 2)]
    assert [f for f in order if f.startswith("MSC02")] == [name(7, 0, node="MSC02"),
                                                           name(8, 1, node="MSC02")]  # fmt: skip
    # Switches interleave by closing time.
    assert order.index(name(7, 0, node="MSC02")) < order.index(name(2, 1, part=1))
    # The open file is left alone until it is closed.
    assert (src / (name(6, 3) + ".tmp")).exists()
    assert await balance(store, "491700000001") == -6 * VOICE_PER_SECOND
    # Ledger collection times follow the same order.
    times = [(await m.ledger.get(f)) for f in msc01]
    assert [e.collected_at for e in times if e] == sorted(e.collected_at for e in times if e)


async def test_a_duplicate_file_is_not_charged_twice(store: Store, tmp_path: Path) -> None:
    await add(store, "491700000001", 1_000_000)
    src = tmp_path / "in"
    f = name(1)
    lines = [line("moc", "491700000001", "+4930123456", T0 + i, 10) for i in range(5)]
    write(src, f, lines)
    m = make(store, src, tmp_path)
    (first,) = await m.poll()
    assert first.amount == 50 * VOICE_PER_SECOND
    after = await balance(store, "491700000001")
    # The switch (or an operator) delivers the same file again.
    write(src, f, lines)
    (dup,) = await m.poll()
    assert dup.duplicate
    assert await balance(store, "491700000001") == after
    assert not (src / f).exists()
    (moved,) = (src / "duplicates").iterdir()
    assert moved.name.startswith(f + ".")
    assert len(await debit_events(store, "491700000001")) == 5
    # Even with the ledger gone, the records' request keys make a replay change nothing.
    await store.client.execute("DEL", f"ocs:med:{{ledger}}:file:{f}")
    write(src, f, lines)
    (again,) = await make(store, src, tmp_path, archive=False).poll()
    assert not again.duplicate and (again.repeated, again.charged, again.amount) == (5, 0, 0)
    assert await balance(store, "491700000001") == after
    assert len(await debit_events(store, "491700000001")) == 5


async def test_a_renamed_copy_of_a_file_is_not_charged_again(
    store: Store, tmp_path: Path, redis_url: str
) -> None:
    await add(store, "491700000001", 1_000_000)
    src = tmp_path / "in"
    lines = [line("moc", "491700000001", "+4930123456", T0 + i, 10) for i in range(3)]
    write(src, name(7), lines)
    m = make(store, src, tmp_path)
    (first,) = await m.poll()
    after = await balance(store, "491700000001")
    # The same bytes again under the next running count (the stub decoder's record ids name
    # the file: only the content digest can tell).
    write(src, name(8), lines)
    (dup,) = await m.poll()
    assert (dup.file, dup.duplicate, dup.duplicate_of, dup.charged) == (name(8), True, name(7), 0)
    assert await balance(store, "491700000001") == after
    (moved,) = (src / "duplicates").iterdir()
    assert moved.name.startswith(name(8) + ".")
    entry = await m.ledger.get(name(8))
    assert entry is not None and (entry.state, entry.duplicate_of) == ("done", name(7))
    assert (await m.ledger.totals())["duplicates"] == 1
    r = await asyncio.to_thread(ocs_cmd, "mediation", "status", "--redis-url", redis_url)
    assert f"duplicate of {name(7)}" in r.stdout and "duplicate files 1" in r.stdout
    # Seen again later: still the duplicate, still not charged.
    write(src, name(8), lines)
    (dup,) = await m.poll()
    assert dup.duplicate and dup.duplicate_of == name(7)
    assert await balance(store, "491700000001") == after == 1_000_000 - first.amount


async def test_records_another_file_charged_are_not_charged_again(
    store: Store, tmp_path: Path
) -> None:
    """Real ASCII files: a record is identified by the switch's call reference, so a second
    file (another name, other bytes) that repeats a call charges only what is new."""
    await add(store, "491700000001", 10_000_000)
    src = tmp_path / "in"
    src.mkdir()
    opened = datetime(2026, 9, 15, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    a = format_name("MSC01", 7, opened + timedelta(minutes=1), 1, "ascii")
    b = format_name("MSC01", 8, opened + timedelta(minutes=2), 1, "ascii")
    (src / a).write_bytes(encode_file([real_record(1, "491700000001"),
                                       real_record(2, "491700000001")]))  # fmt: skip
    (src / b).write_bytes(encode_file([real_record(2, "491700000001"),
                                       real_record(3, "491700000001")]))  # fmt: skip
    m = make(store, src, tmp_path)
    m.decoder = decode
    ra, rb = await m.poll()
    assert (ra.charged, ra.repeated, ra.amount) == (2, 0, 2 * 60 * VOICE_PER_SECOND)
    assert (rb.records, rb.charged, rb.repeated, rb.amount) == (2, 1, 1, 60 * VOICE_PER_SECOND)
    assert [r.usage.sequence for r in rb.rated] == [4]  # (the new call's line)
    assert await balance(store, "491700000001") == 10_000_000 - 3 * 60 * VOICE_PER_SECOND
    assert len(await debit_events(store, "491700000001")) == 3
    entry = await m.ledger.get(b)
    assert entry is not None and entry.repeated == 1


async def test_implausible_calls_are_rejected_not_charged(store: Store, tmp_path: Path) -> None:
    await add(store, "491700000001", 1_000_000)
    src = tmp_path / "in"
    src.mkdir()
    opened = datetime(2026, 9, 15, 11, 58, 30, tzinfo=UTC)
    ok = real_record(1, "491700000001", duration=60)
    # Answered 11:58:35, released a minute later, but a callDuration of 10^10 s.
    absurd = replace(real_record(2, "491700000001", duration=60), duration=10**10)
    # Agrees with nothing: 600 s between answer and release, 90 s of callDuration.
    liar = replace(real_record(3, "491700000001", duration=600), duration=90)
    long = real_record(4, "491700000001", duration=5 * 3600)  # consistent, but 5 hours
    f = format_name("MSC01", 1, opened, 1, "ber")
    recs = [encode_record(r) for r in (ok, absurd, liar, long)]
    (src / f).write_bytes(frame_file(recs, sequence=1, opened=opened, last_append=opened))
    m = make(store, src, tmp_path)
    m.decoder = decode
    (r,) = await m.poll()
    assert (r.charged, r.rejected, r.amount) == (1, 3, 60 * VOICE_PER_SECOND)
    assert await balance(store, "491700000001") == 1_000_000 - 60 * VOICE_PER_SECOND
    lines = (src / "done" / f"{f}.rejected").read_text().splitlines()[1:]
    reasons = {int(x.split("\t")[0]): x.split("\t")[2] for x in lines}
    assert "callDuration 10000000000 s is over the maximum of 14400 s" in reasons[2]
    assert reasons[2].startswith("implausible: ")
    assert "disagrees with releaseTime - answerTime = 600 s" in reasons[3]
    assert "18000 s is over the maximum" in reasons[4]
    # The limits are settings: a 6-hour maximum takes the 5-hour call.
    cfg = replace(m.config, max_call_duration=6 * 3600)
    u = real_record(4, "491700000001", duration=5 * 3600)
    assert implausible(_usage(u), max_call_duration=cfg.max_call_duration,
                       duration_tolerance=cfg.duration_tolerance) is None  # fmt: skip


def _usage(r: CdrRecord) -> Usage:
    (u,) = decode(encode_record(r), switch="MSC01", file="f.ber")
    assert isinstance(u, Usage)
    return u


async def test_restart_in_the_middle_of_a_file_charges_each_record_once(
    store: Store, tmp_path: Path
) -> None:
    subs = [f"4917000001{i:02d}" for i in range(20)]
    for s in subs:
        await add(store, s, 5_000_000)
    src = tmp_path / "in"
    f = name(1)
    n = 400
    lines = [line("moc", subs[i % 20], "+4930123456", T0 + i, 1 + i % 7) for i in range(n)]
    write(src, f, lines)
    expected = {s: 0 for s in subs}
    for i in range(n):
        expected[subs[i % 20]] += (1 + i % 7) * VOICE_PER_SECOND

    # A decoder that says when it has handed out half the file.
    halfway = asyncio.Event()

    def decode_and_signal(data: bytes, *, switch: str, file: str) -> Iterator[Usage | Rejected]:
        for item in stub_decode(data, switch=switch, file=file):
            if item.sequence == n // 2:
                halfway.set()
            yield item

    m = make(store, src, tmp_path, window=8)
    m.decoder = decode_and_signal
    task = asyncio.create_task(m.poll())
    await asyncio.wait_for(halfway.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Stopped mid-file: some records charged, the file still in place, the ledger says so.
    charged_before = sum([len(await debit_events(store, s)) for s in subs])
    assert 0 < charged_before < n
    assert (src / f).exists()
    entry = await m.ledger.get(f)
    assert entry is not None and entry.state == "charging"
    assert await m.ledger.open_files() == [f]

    # A new process (new engine, new caches) picks the file up again.
    (report,) = await make(store, src, tmp_path, window=8).poll()
    assert report.resumed and report.charged == n and report.rejected == 0
    assert report.amount == sum(expected.values())
    for s in subs:
        events = await debit_events(store, s)
        keys = [e["rk"] for e in events]
        assert len(keys) == len(set(keys)) == n // 20  # each record debited exactly once
        assert await balance(store, s) == 5_000_000 - expected[s]
    assert await m.ledger.open_files() == []
    assert verify(tmp_path / "archive", KEY).entries == 1


async def test_a_forced_debit_takes_the_balance_below_zero(store: Store, tmp_path: Path) -> None:
    await add(store, "491700000001", 100_000, limit=0)  # 0.10 left, no credit allowed
    src = tmp_path / "in"
    write(src, name(1), [line("moc", "491700000001", "+4930123456", T0, 600)])  # 0.60
    (report,) = await make(store, src, tmp_path).poll()
    assert report.charged == 1
    assert await balance(store, "491700000001") == 100_000 - 600 * VOICE_PER_SECOND < 0
    (event,) = await debit_events(store, "491700000001")
    assert event["forced"] == "1"


async def test_a_cdr_past_the_threshold_bars_the_subscriber(store: Store, tmp_path: Path) -> None:
    """The barring flow of docs/barring.md, started by hot billing: the debit that takes the
    balance past a threshold bars the account and notifies the provisioning worker."""
    await add(store, "491700000001", 100_000)
    await store.update_subscriber(
        "491700000001", thresholds=[(-5_000_000, 0, "bar-outgoing")], now=T0
    )
    src = tmp_path / "in"
    write(
        src,
        name(1),
        [
            line("moc", "491700000001", "+4930123456", T0, 600),  # -0.50
            line("moc", "491700000001", "+4930123456", T0 + 1, 6000),
        ],
    )  # -6.50
    (report,) = await make(store, src, tmp_path, window=1).poll()
    assert report.charged == 2
    acct = await store.get_account("491700000001")
    assert acct is not None
    assert (acct.balance, acct.barring) == (100_000 - 6600 * VOICE_PER_SECOND, "outgoing")
    raw = await store.client.execute("XRANGE", notify_key(bucket_of("491700000001")), "-", "+")
    notes = [dict(zip(f[::2], f[1::2], strict=True)) for _, f in raw]
    assert [(n[b"t"], n[b"was"], n[b"bar"]) for n in notes] == [(b"barring", b"none", b"outgoing")]


async def test_buckets_are_used_by_the_earlier_call_first(store: Store, tmp_path: Path) -> None:
    # 90 free seconds: the first call (60 s) uses 60 of them, the second (60 s) the last 30.
    await add(store, "491700000001", 1_000_000,
              buckets=(UnitBucket(id="free", service="voice", units=90),))  # fmt: skip
    src = tmp_path / "in"
    write(src, name(1), [line("moc", "491700000001", "+4930123456", T0 + i, 60) for i in (0, 1)])
    (report,) = await make(store, src, tmp_path, window=16).poll()
    rows = sorted(report.rated, key=lambda r: r.usage.sequence)
    assert [r.from_buckets for r in rows] == [60, 30]
    assert [r.charged for r in rows] == [0, 30 * VOICE_PER_SECOND]


async def test_terminating_sms_without_an_incoming_service_is_rejected(
    store: Store, tmp_path: Path
) -> None:
    await add(store, "491700000001", 1_000_000)
    src = tmp_path / "in"
    f = name(1)
    write(src, f, [line("smt", "491700000001", "+491709999999", T0)])
    (report,) = await make(store, src, tmp_path).poll()
    assert (report.charged, report.rejected) == (0, 1)
    text = (src / "done" / f"{f}.rejected").read_text()
    assert "no-service: plan cdr-flat has no service for mtSMSRecord" in text
    assert await balance(store, "491700000001") == 1_000_000


async def test_a_truncated_file_charges_what_it_holds(store: Store, tmp_path: Path) -> None:
    await add(store, "491700000001", 1_000_000)
    src = tmp_path / "in"
    f = name(1)
    body = "\n".join(line("moc", "491700000001", "+4930123456", T0 + i, 10) for i in range(3))
    src.mkdir()
    (src / f).write_bytes(body.encode()[:-9])  # the last record cut short
    (report,) = await make(store, src, tmp_path).poll()
    assert (report.charged, report.rejected) == (2, 1)
    assert await balance(store, "491700000001") == 1_000_000 - 20 * VOICE_PER_SECOND


async def test_a_decoder_that_raises_does_not_stop_the_file(store: Store, tmp_path: Path) -> None:
    await add(store, "491700000001", 1_000_000)
    src = tmp_path / "in"
    f = name(1)
    write(src, f, [line("moc", "491700000001", "+4930123456", T0 + i, 10) for i in range(3)])

    def broken(data: bytes, *, switch: str, file: str) -> Iterator[Usage | Rejected]:
        for item in stub_decode(data, switch=switch, file=file):
            if item.sequence == 3:
                raise RuntimeError("decoder bug")
            yield item

    m = make(store, src, tmp_path)
    m.decoder = broken
    (report,) = await m.poll()
    assert (report.charged, report.rejected) == (2, 1)
    assert "decoder error" in (src / "done" / f"{f}.rejected").read_text()


async def test_run_mediation_picks_up_files_as_they_close(store: Store, tmp_path: Path) -> None:
    await add(store, "491700000001", 1_000_000)
    src = tmp_path / "in"
    src.mkdir()
    arrived: asyncio.Queue[FileReport] = asyncio.Queue()
    engine = ChargingEngine(store, rater())
    config = MediationConfig(poll_interval=0.02, warehouse_dir=None)
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_mediation(
            engine,
            rater(),
            src,
            config,
            on_file=arrived.put_nowait,
            stop=stop,
            decoder=stub_decode,
        )
    )
    counter = itertools.count(1)
    for i in range(3):
        f = name(next(counter))
        write(src, f, [line("moc", "491700000001", "+4930123456", T0 + i * 60_000, 10)])
        report = await asyncio.wait_for(arrived.get(), 10)
        assert report.file == f and report.charged == 1
    stop.set()
    await asyncio.wait_for(task, 10)
    assert await balance(store, "491700000001") == 1_000_000 - 30 * VOICE_PER_SECOND


def ocs_cmd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OCS_")}
    return subprocess.run(
        [sys.executable, "-m", "ocs.cli", *args], capture_output=True, text=True,
        env={**environ, **(env or {})}, timeout=60, check=False,
    )  # fmt: skip


async def test_ledger_status_cli(store: Store, tmp_path: Path, redis_url: str) -> None:
    await add(store, "491700000001", 1_000_000)
    src = tmp_path / "in"
    write(src, name(1), [line("moc", "491700000001", "+4930123456", T0, 10), "bad"])
    m = make(store, src, tmp_path)
    await m.poll()
    r = await asyncio.to_thread(ocs_cmd, "mediation", "status", "--redis-url", redis_url)
    assert r.returncode == 0, r.stderr
    assert (
        "files done 1, records 2 (1 charged, 1 rejected, 0 charged before), amount "
        "0.010000, duplicate files 0 (not charged)"
    ) in r.stdout
    assert name(1) in r.stdout and "done" in r.stdout
    r = await asyncio.to_thread(ocs_cmd, "mediation", "status", "--json",
                                env={"OCS_REDIS_URL": redis_url})  # fmt: skip
    (recent,) = json.loads(r.stdout)["recent"]
    assert recent["rejected"] == 1
    # Times as the API gives them (docs/api.md): ISO 8601 UTC with milliseconds.
    entry = await m.ledger.get(name(1))
    assert entry is not None and entry.collected_at and entry.done_at
    for key, ms in (("collected_at", entry.collected_at), ("done_at", entry.done_at)):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", recent[key]), recent
        assert round(datetime.fromisoformat(recent[key]).timestamp() * 1000) == ms


def real_record(i: int, msisdn: str, direction: Direction = Direction.MOC,
                duration: int = 60) -> CdrRecord:  # fmt: skip
    """A record as the switch simulator's encoders take it."""
    seizure = datetime(2026, 9, 15, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    seizure += timedelta(seconds=i)
    calls = direction in (Direction.MOC, Direction.MTC)
    answer = seizure + timedelta(seconds=5) if calls and duration else None
    release = (answer or seizure) + timedelta(seconds=duration) if calls else None
    return CdrRecord(direction, msisdn, "262010000000001", "+4930123456", seizure, answer,
                     release, duration if calls else 0, "26201", 4660, 12345, "4917200001",
                     i)  # fmt: skip


async def test_real_files(store: Store, tmp_path: Path) -> None:
    """Files written by the simulator's encoders, both formats, through the real decoders:
    a corrupt BER record and a truncated BER file are rejected, the rest charged."""
    await add(store, "491700000001", 10_000_000)
    src = tmp_path / "in"
    src.mkdir()
    opened = datetime(2026, 9, 15, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    recs = [encode_record(real_record(i, "491700000001")) for i in range(1, 5)]
    corrupt = [recs[0], b"\xff" * len(recs[1]), recs[2], recs[3]]
    ber_1 = format_name("MSC01", 1, opened + timedelta(minutes=1), 1, "ber")
    (src / ber_1).write_bytes(frame_file(corrupt, sequence=1, opened=opened,
                                         last_append=opened))  # fmt: skip
    ber_2 = format_name("MSC01", 2, opened + timedelta(minutes=2), 1, "ber")
    others = [encode_record(real_record(i, "491700000001")) for i in range(5, 9)]
    framed = frame_file(others, sequence=2, opened=opened, last_append=opened)
    (src / ber_2).write_bytes(framed[:-10])  # the last record cut short
    txt = format_name("MSC01", 3, opened + timedelta(minutes=3), 1, "ascii")
    body = encode_file([real_record(10, "491700000001"),
                        real_record(11, "491700000001", Direction.SMS_MO),
                        real_record(12, "491700000001", Direction.MTC, 30)])  # fmt: skip
    (src / txt).write_bytes(body + b"MOC|not|a|record\n")
    m = make(store, src, tmp_path)
    m.decoder = decode
    r1, r2, r3 = await m.poll()
    assert (r1.file, r1.charged, r1.rejected) == (ber_1, 3, 1)
    assert (r2.file, r2.charged, r2.rejected) == (ber_2, 3, 1)
    assert (r3.file, r3.charged, r3.rejected) == (txt, 3, 1)
    assert r1.amount == r2.amount == 3 * 60 * VOICE_PER_SECOND
    assert r3.amount == 60 * VOICE_PER_SECOND + SMS_PRICE
    assert [r.service for r in r3.rated] == ["voice", "sms", "voice-mt"]
    total = r1.amount + r2.amount + r3.amount
    assert await balance(store, "491700000001") == 10_000_000 - total
    rejected = (src / "done" / f"{ber_1}.rejected").read_text().splitlines()
    seq, offset, _, raw = rejected[1].split("\t")
    assert seq == "2" and bytes.fromhex(raw) == b"\xff" * len(recs[1])
    data = (src / "done" / ber_1).read_bytes()
    assert data[int(offset) : int(offset) + len(recs[1])] == bytes.fromhex(raw)
    assert (src / "done" / f"{ber_2}.rejected").exists()
    assert "4\t" in (src / "done" / f"{txt}.rejected").read_text()
    assert verify(tmp_path / "archive", KEY).entries == 3


async def test_mediation_run_cli(store: Store, tmp_path: Path, redis_url: str) -> None:
    """``ocs mediation run`` as an operator starts it: its own process on the OCS's Redis,
    with the shipped plans."""
    ans = await store.create_subscriber("491700000001", plan="prepaid-basic", balance=1_000_000,
                                        credit_limit=0, state="active", now=T0)  # fmt: skip
    assert ans.status == "OK"
    src = tmp_path / "in"
    src.mkdir()
    r = await asyncio.to_thread(ocs_cmd, "mediation", "run", "--source", str(src),
                                "--redis-url", redis_url)  # fmt: skip
    assert r.returncode == 1 and r.stderr.startswith("ocs: ") and "OCS_ARCHIVE_KEY" in r.stderr
    env = {"OCS_ARCHIVE_KEY": KEY.hex(), "OCS_ARCHIVE_DIR": str(tmp_path / "arc"),
           "OCS_WAREHOUSE_DIR": str(tmp_path / "wh"), "OCS_REDIS_URL": redis_url}  # fmt: skip
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OCS_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ocs.cli", "mediation", "run", "--source", str(src), "--poll",
        "0.05", env={**environ, **env}, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    f = format_name("MSC01", 1, datetime(2026, 9, 15, 14, 1, tzinfo=UTC), 1, "ascii")
    try:
        (src / (f + ".tmp")).write_bytes(encode_file([real_record(1, "491700000001")]))
        (src / (f + ".tmp")).rename(src / f)
        deadline = asyncio.get_running_loop().time() + 30
        while not (src / "done" / f).exists():  # the file is moved when it is charged
            assert asyncio.get_running_loop().time() < deadline, "not charged in time"
            await asyncio.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    entry = await Ledger(store.client).get(f)
    assert entry is not None and entry.state == "done" and entry.charged == 1
    assert entry.amount > 0
    assert await balance(store, "491700000001") == 1_000_000 - entry.amount
    assert verify(tmp_path / "arc", KEY).entries == 1
    assert list((tmp_path / "wh").glob("date=*/*.parquet"))


def test_mediation_run_with_a_missing_source_is_one_line_at_start(tmp_path: Path) -> None:
    r = ocs_cmd("mediation", "run", "--source", str(tmp_path / "no-such-dir"), "--no-archive",
                "--redis-url", "redis://127.0.0.1:1/0")  # fmt: skip
    assert r.returncode == 1
    assert r.stderr == f"ocs: --source: dir:{tmp_path / 'no-such-dir'}: does not exist\n"


async def test_a_source_that_goes_away_is_said_loudly_and_not_at_every_poll(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    m = make(store, src, tmp_path)
    assert await m.poll() == []
    src.rmdir()
    with caplog.at_level(logging.ERROR, logger="ocs.mediation.pipeline"):
        for _ in range(3):
            assert await m.poll() == []
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "the directory is gone" in errors[0]
    src.mkdir()
    assert await m.poll() == []


def test_rejects_text_is_one_line_per_record() -> None:
    from ocs.mediation.pipeline import RejectedRecord

    text = rejects_text("F", [RejectedRecord(2, None, "a\tb\nc", "id"),
                              RejectedRecord(1, 7, "x", "00ff")]).decode()  # fmt: skip
    assert text.splitlines()[1:] == ["1\t7\tx\t00ff", "2\t-\ta b c\tid"]


async def test_ledger_done_counts_once(store: Store) -> None:
    ledger = Ledger(store.client)
    await ledger.collected("F", source="s", switch="M", size=3, now=1)
    assert await ledger.done("F", now=2, records=3, charged=2, rejected=1, amount=10)
    assert not await ledger.done("F", now=3, records=3, charged=2, rejected=1, amount=10)
    assert (await ledger.totals())["amount"] == 10
    again = await ledger.collected("F", source="s", switch="M", size=3, now=4)
    assert again.state == "done" and again.attempts == 1


def test_a_file_spanning_midnight_writes_two_partitions(tmp_path: Path) -> None:
    from ocs.mediation.export import RatedUsage, write_parquet

    before = int(datetime(2026, 9, 15, 23, 59, 30, tzinfo=UTC).timestamp() * 1000)
    text = f"{line('moc', '1', '2', before, 60)}\n{line('moc', '1', '2', before + 60_000, 5)}"
    usages = list(stub_decode(text.encode(), switch="S", file="F"))
    rows = [RatedUsage(u, "p", "voice", "EUR", u.duration, u.duration * 1000, 0, -1)
            for u in usages if isinstance(u, Usage)]  # fmt: skip
    paths = write_parquet(tmp_path, "F", rows, rated_at=0)
    assert [p.parent.name for p in paths] == ["date=2026-09-15", "date=2026-09-16"]
    table = ds.dataset(tmp_path, partitioning="hive").to_table().sort_by("sequence")
    assert table.column("charged").to_pylist() == [60_000, 5_000]
    assert table.column("balance_after").to_pylist() == [-1, -1]
    assert [str(d) for d in table.column("date").to_pylist()] == ["2026-09-15", "2026-09-16"]
