"""Enterprise billing (issue 11): usage events ingested per second from the outbox, and the
seconds a bill run takes, on SQLite and on PostgreSQL.

Data set (deterministic): ``--accounts`` accounts (default 1,000) of ``--lines`` mobile lines
(50) and ``--services`` fixed services each (10: 10,000 services), one order and one ticket per
service in the period (10,000 of each; ~40 % of the orders late, some tickets overlapping), and
``--events`` usage events (1,000,000) spread over the lines and the period, in time order
(``--order time``, as charging journals them; ``random`` for a backlog out of order, the usage
rollup's worst case). The events are appended to a private Redis's outbox streams in the shape
the charging scripts write them (XADD in pipelines: writing them through the Lua scripts would
measure the charging core, not billing); the billing consumer then reads them through its group
into the database: that is the ingest rate. The run drafts every account's invoice for 2026-11.
Afterwards the usage lines of every account are reconciled with the events of its lines, to the
micro-unit.

    .venv/bin/python -m bench.billing [--accounts N] [--lines N] [--services N] [--events N]
        [--db sqlite|postgresql|both] [--order time|random] [--append]

PostgreSQL is a private cluster started for the run (tests/billing_db.py's helper). CPU
figures are this process's (the consumer and the run; PostgreSQL's own server processes and
Redis are not counted): on a shared machine they hold better than the wall-clock seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func, insert, select

from bench.report import append_section
from ocs.billing import model as M
from ocs.billing import runs
from ocs.billing import schema as S
from ocs.billing.db import open_billing_db
from ocs.billing.usage import UsageConsumer
from ocs.redis_server import EmbeddedRedis
from ocs.store import keys as K
from ocs.store.notify import NotifyStore
from ocs.tasks import cancel_and_wait

ZONE = ZoneInfo("Europe/Berlin")
PERIOD = "2026-11"
START = datetime(2026, 11, 1, tzinfo=ZONE)
END = datetime(2026, 12, 1, tzinfo=ZONE)


def msisdn(account: int, line: int) -> str:
    return f"4915{account:05d}{line:03d}"


def build_dataset(engine: Engine, accounts: int, lines: int, services: int, seed: int = 1) -> None:
    """The hierarchy, contracts, services, orders and tickets, in bulk (a few statements)."""
    rng = random.Random(seed)
    with engine.begin() as c:
        M.create_org(c, "national", {"code": "NAT", "name": "National"})
        for r in range(4):
            M.create_org(c, "region", {"code": f"R{r}", "name": f"Region {r}", "parent": "NAT"})
        agencies = max(1, accounts // 25)
        for a in range(agencies):
            M.create_org(
                c, "agency", {"code": f"AG{a:03d}", "name": f"Agency {a}", "parent": f"R{a % 4}"}
            )
        M.put_tax_profile(c, "VAT19", {"rate": "19", "mode": "exclusive"})
        ag_ids = dict(c.execute(select(S.org.c.code, S.org.c.id)).all())
        c.execute(
            insert(S.account),
            [
                {
                    "code": f"A{i:05d}",
                    "name": f"Account {i}",
                    "agency_id": ag_ids[f"AG{i % agencies:03d}"],
                    "currency": "EUR",
                    "tax_profile": "VAT19",
                    "billing_day": 1,
                    "timezone": "Europe/Berlin",
                }
                for i in range(accounts)
            ],
        )
        acc_ids = dict(c.execute(select(S.account.c.code, S.account.c.id)).all())
        c.execute(
            insert(S.line),
            [
                {
                    "msisdn": msisdn(i, j),
                    "account_id": acc_ids[f"A{i:05d}"],
                    "valid_from": 0,
                    "valid_to": None,
                }
                for i in range(accounts)
                for j in range(lines)
            ],
        )
        ladder = json.dumps([{"up_to": s.up_to, "penalty": s.penalty} for s in M.DEFAULT_LADDER])
        c.execute(
            insert(S.contract),
            [
                {
                    "account_id": acc_ids[f"A{i:05d}"],
                    "start_date": "2026-01-01",
                    "end_date": None,
                    "usage_plan": "gov-payu",
                    "lad_rate_kind": "percent",
                    "lad_rate": 0,
                    "lad_rate_percent": "1",
                    "lad_grace_days": 2,
                    "lad_cap_kind": "percent",
                    "lad_cap": 0,
                    "lad_cap_percent": "10",
                }
                for i in range(accounts)
            ],
        )
        svc_rows, orders, tickets = [], [], []
        for i in range(accounts):
            for s in range(services):
                sid = f"S{i:05d}-{s:02d}"
                svc_rows.append(
                    {
                        "service_id": sid,
                        "account_id": acc_ids[f"A{i:05d}"],
                        "description": f"Leased line {sid}",
                        "monthly_charge": rng.randrange(50, 900) * 1_000_000,
                        "charging": "advance" if s % 3 == 0 else "arrears",
                        "start_date": "2026-11-01" if s % 4 else "2026-11-11",
                        "end_date": None,
                        "sla_tier": "silver",
                        "sla_target": "99.9",
                        "sla_ladder": ladder,
                    }
                )
                committed = START + timedelta(days=rng.randrange(0, 25), hours=10)
                late = rng.random()
                delivered = (
                    None
                    if late < 0.2
                    else committed + timedelta(days=rng.randrange(1, 10))
                    if late < 0.6
                    else committed
                )
                orders.append(
                    {
                        "order_id": f"O-{sid}",
                        "version": 1,
                        "service_id": sid,
                        "account_code": f"A{i:05d}",
                        "ordered_at": (committed - timedelta(days=30)).isoformat(),
                        "committed_at": committed.isoformat(),
                        "delivered_at": delivered.isoformat() if delivered else None,
                        "status": "delivered" if delivered else "open",
                        "digest": "-",
                        "received_at": 0,
                    }
                )
                t0 = START + timedelta(hours=rng.randrange(0, 700))
                tickets.append(
                    {
                        "ticket_id": f"T-{sid}",
                        "version": 1,
                        "service_id": sid,
                        "fault_start": t0.isoformat(),
                        "restored_at": (t0 + timedelta(minutes=rng.randrange(5, 600))).isoformat(),
                        "cause": "bench",
                        "excluded": "",
                        "digest": "-",
                        "received_at": 0,
                    }
                )
        c.execute(insert(S.fixed_service), svc_rows)
        c.execute(insert(S.order_version), orders)
        c.execute(insert(S.ticket_version), tickets)


def make_events(
    accounts: int, lines: int, events: int, seed: int = 2, *, in_time_order: bool = False
) -> list[tuple[str, dict[str, str]]]:
    """(msisdn, outbox fields) of ``events`` debits/commits at random times of the period;
    ``in_time_order``: sorted by time, as the outbox streams hold a month's usage (each is a
    journal appended as charging happens), else in random order (a worst case: a batch then
    spans the whole month, so nearly every event is a rollup row of its own)."""
    rng = random.Random(seed)
    span = int((END - START).total_seconds() * 1000)
    t0 = int(START.timestamp() * 1000)
    out = []
    kinds = ("debit", "commit", "release")
    svcs = ("sms", "voice", "data")
    for _ in range(events):
        m = msisdn(rng.randrange(accounts), rng.randrange(lines))
        out.append(
            (
                m,
                {
                    "t": kinds[rng.randrange(3)],
                    "sub": m,
                    "ts": str(t0 + rng.randrange(span)),
                    "svc": svcs[rng.randrange(3)],
                    "u": "60",
                    "amt": f"-{rng.randrange(0, 500_000)}",
                    "bal": "0",
                    "rsv": "0",
                    "ver": "1",
                },
            )
        )
    if in_time_order:
        out.sort(key=lambda e: int(e[1]["ts"]))
    return out


async def fill_outbox(url: str, events: list[tuple[str, dict[str, str]]]) -> None:
    import redis.asyncio

    r = redis.asyncio.Redis.from_url(url)
    try:
        for i in range(0, len(events), 10_000):
            async with r.pipeline(transaction=False) as p:
                for m, fields in events[i : i + 10_000]:
                    p.xadd(K.outbox_key(K.bucket_of(m)), fields)  # type: ignore[arg-type]
                await p.execute()
    finally:
        await r.aclose()


def expected_usage(events: list[tuple[str, dict[str, str]]]) -> dict[str, int]:
    by_account: dict[str, int] = defaultdict(int)
    end = int(END.timestamp() * 1000)
    for m, f in events:
        if int(f["ts"]) < end:
            by_account[f"A{int(m[4:9]):05d}"] += -int(f["amt"])
    return by_account


def billed_usage(engine: Engine) -> dict[str, int]:
    with engine.connect() as c:
        rows = c.execute(
            select(S.account.c.code, func.sum(S.invoice_line.c.amount))
            .select_from(S.invoice_line.join(S.invoice).join(S.account))
            .where(S.invoice_line.c.kind.like("usage%"), S.invoice.c.period == PERIOD)
            .group_by(S.account.c.code)
        ).all()
    return {k: int(v) for k, v in rows}


async def bench_one(
    url: str, redis_url: str, args: argparse.Namespace, events: list[tuple[str, dict[str, str]]]
) -> dict[str, Any]:
    engine = open_billing_db(url)
    t = time.perf_counter()
    build_dataset(engine, args.accounts, args.lines, args.services)
    build_s = time.perf_counter() - t
    progress(f"{engine.url.get_backend_name()}: dataset built in {build_s:.1f} s; ingesting")
    outbox = NotifyStore(redis_url, outbox=True)
    try:
        consumer = UsageConsumer(outbox, engine, batch=10_000)
        t, cpu = time.perf_counter(), time.process_time()
        n = await consumer.drain()
        ingest_s, ingest_cpu = time.perf_counter() - t, time.process_time() - cpu
        progress(f"ingested {n:,} in {ingest_s:.1f} s ({ingest_cpu:.1f} s CPU); freshness")
        stale = await freshness(consumer, redis_url, engine, args) if args.fresh_seconds else 0.0
        progress(f"pending sums at most {stale:.2f} s stale; the bill run")
        # the group is billing's own: drop it so the next database reads the same events
        for key in outbox.streams:
            await outbox.redis.xgroup_destroy(key, "billing")
    finally:
        await outbox.close()
    t, cpu = time.perf_counter(), time.process_time()
    result = runs.run(engine, PERIOD, now_ms=1)
    run_s, run_cpu = time.perf_counter() - t, time.process_time() - cpu
    exp, got = expected_usage(events), billed_usage(engine)
    mismatched = [a for a in set(exp) | set(got) if exp.get(a, 0) != got.get(a, 0)]
    engine.dispose()
    return {
        "setup_s": build_s,
        "events": n,
        "ingest_s": ingest_s,
        "ingest_rate": n / ingest_s,
        "ingest_cpu_us": ingest_cpu / max(n, 1) * 1e6,
        "run_s": run_s,
        "run_cpu_s": run_cpu,
        "accounts": len(result.drafted),
        "mismatched": len(mismatched),
        "stale_s": stale,
    }


def progress(text: str) -> None:
    print(f"[{datetime.now(ZoneInfo('UTC')):%H:%M:%S}] {text}", file=sys.stderr, flush=True)


async def freshness(
    consumer: UsageConsumer, redis_url: str, engine: Engine, args: argparse.Namespace
) -> float:
    """Charging events at ``--fresh-rate`` a second for ``--fresh-seconds`` while the consumer
    runs: the largest age of the newest stored event, sampled every 0.25 s (how stale the
    pending sums can be)."""
    import redis.asyncio

    from ocs.billing.usage import consuming

    consumer.block_ms = 100
    r = redis.asyncio.Redis.from_url(redis_url)
    start = int(time.time() * 1000)
    worst = 0.0
    rng = random.Random(5)

    async def produce() -> None:
        per_tick = max(1, args.fresh_rate // 100)
        while True:
            async with r.pipeline(transaction=False) as p:
                now = str(int(time.time() * 1000))
                for _ in range(per_tick):
                    m = msisdn(rng.randrange(args.accounts), rng.randrange(args.lines))
                    p.xadd(
                        K.outbox_key(K.bucket_of(m)),
                        {
                            "t": "debit",
                            "sub": m,
                            "ts": now,
                            "svc": "sms",
                            "u": "1",
                            "amt": "-20000",
                        },
                    )  # type: ignore[arg-type]
                await p.execute()
            await asyncio.sleep(0.01)

    def newest() -> int:
        with engine.connect() as c:
            got = c.execute(
                select(func.max(S.usage_event.c.ts)).where(S.usage_event.c.ts >= start)
            ).scalar()
        return int(got or start)

    try:
        async with consuming(consumer):
            producer = asyncio.create_task(produce())
            t0 = time.monotonic()
            while time.monotonic() - t0 < args.fresh_seconds:
                await asyncio.sleep(0.25)
                age = (time.time() * 1000 - await asyncio.to_thread(newest)) / 1000
                if time.monotonic() - t0 > 1.0:
                    worst = max(worst, age)
            # (cancelled until it ends: redis-py can lose a cancellation, ocs/tasks.py; a
            # single cancel() here once left the run waiting for ever on a producer going on)
            await cancel_and_wait(producer)
    finally:
        await r.aclose()
    return worst


async def main(args: argparse.Namespace) -> None:
    from tests.billing_db import PrivatePostgres, start_postgres, stop_postgres

    events = make_events(args.accounts, args.lines, args.events,
                         in_time_order=args.order == "time")  # fmt: skip
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        redis = EmbeddedRedis(Path(tmp) / "redis")
        redis.start()
        pg: PrivatePostgres | str | None = None
        try:
            await fill_outbox(redis.url, events)
            if args.db in ("sqlite", "both"):
                results["SQLite"] = await bench_one(
                    f"sqlite:///{tmp}/billing.db", redis.url, args, events
                )
            if args.db in ("postgresql", "both"):
                pg = start_postgres(dict(args.pg_setting))
                if isinstance(pg, str):
                    print(f"PostgreSQL skipped: {pg}")
                else:
                    results["PostgreSQL"] = await bench_one(
                        pg.url(pg.create_database()), redis.url, args, events
                    )
        finally:
            redis.stop()
            if isinstance(pg, PrivatePostgres):
                stop_postgres(pg)
    lines = [
        f"{args.accounts:,} accounts x {args.lines} lines, {args.accounts * args.services:,} "
        f"services, orders and tickets; {args.events:,} usage events in {args.order} order",
        "",
        "| database | ingest events/s | ingest s | ingest CPU us/event | bill run s | bill run "
        "CPU s | invoices | reconciliation "
        f"| pending sums stale at {args.fresh_rate:,}/s (max) |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for db, r in results.items():
        rec = "exact" if not r["mismatched"] else f"{r['mismatched']} accounts differ"
        lines.append(
            f"| {db} | {r['ingest_rate']:,.0f} | {r['ingest_s']:.1f} | "
            f"{r['ingest_cpu_us']:.0f} | {r['run_s']:.1f} | {r['run_cpu_s']:.1f} | "
            f"{r['accounts']:,} | {rec} | {r['stale_s']:.2f} s |"
        )
    text = "\n".join(lines)
    print(text)
    if args.append:
        how = (
            f"`.venv/bin/python -m bench.billing --accounts {args.accounts} --lines "
            f"{args.lines} --services {args.services} --events {args.events}` "
            "(bench/billing.py). Targets: ingest >= 20,000 events/s, run < 60 s."
        )
        append_section("Enterprise billing", [how, "", text])


def _setting(text: str) -> tuple[str, str]:
    """``--pg-setting``'s NAME=VALUE (an argparse type: a bad one is a usage error)."""
    name, eq, value = text.partition("=")
    if not (name and eq and value):
        raise argparse.ArgumentTypeError(f"not NAME=VALUE: {text!r}")
    return name, value


def cli() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--accounts", type=int, default=1000)
    p.add_argument("--lines", type=int, default=50)
    p.add_argument("--services", type=int, default=10)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--fresh-rate", type=int, default=2000, help="events/s of the freshness phase")
    p.add_argument("--fresh-seconds", type=float, default=10.0, help="0: no freshness phase")
    p.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    p.add_argument(
        "--order", choices=("time", "random"), default="time",
        help="the events in the outbox in time order (as charging writes them) or at random",
    )  # fmt: skip
    p.add_argument(
        "--pg-setting",
        action="append",
        default=[],
        type=_setting,
        metavar="NAME=VALUE",
        help="a setting of the private PostgreSQL server (repeatable), e.g. shared_buffers=1GB",
    )
    p.add_argument("--append", action="store_true", help="append the result to bench/RESULTS.md")
    asyncio.run(main(p.parse_args()))


if __name__ == "__main__":
    cli()
