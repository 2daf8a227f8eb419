"""What keeping the usage rollup costs the ingestion (issue 13, docs/billing.md "The usage
rollup"): the same usage batches stored by the bare INSERT (what ingestion was before) and
by ``store_usage`` (the INSERT and the rollup's upserts, one transaction), each into a fresh
database of bench/billing.py's data set, interleaved, ``--rounds`` times; CPU microseconds
per event of this process (SQLite's work is in-process; PostgreSQL's server is not counted,
its wall seconds are shown beside). Then the rollup is checked against the scan of the
events.

    .venv/bin/python -m bench.rollup [--accounts N] [--lines N] [--events N]
        [--db sqlite|postgresql|both] [--append]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.billing import build_dataset, make_events
from ocs.billing import rollup, usage
from ocs.billing.db import open_billing_db


def rows_of(events: list[tuple[str, dict[str, str]]]) -> list[dict[str, Any]]:
    return [
        {"event_id": f"e{i}", "msisdn": m, "ts": int(f["ts"]), "kind": f["t"],
         "service": f["svc"], "destination": "", "units": 60, "amount": -int(f["amt"]),
         "line_id": None}
        for i, (m, f) in enumerate(events)
    ]  # fmt: skip


def bare(engine: Any, batch: list[dict[str, Any]]) -> None:
    """The INSERT alone, as ingestion stored a batch before the rollup."""
    stmt = usage.usage_statement(engine.dialect.name, batch)
    assert stmt is not None
    with engine.begin() as conn:
        conn.exec_driver_sql(*stmt)


def one(url: str, args: argparse.Namespace, rows: list[dict[str, Any]], kept: bool) -> float:
    engine = open_billing_db(url)
    try:
        build_dataset(engine, args.accounts, args.lines, 3)
        t, cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(rows), args.batch):
            part = rows[i : i + args.batch]
            usage.store_usage(engine, part) if kept else bare(engine, part)
        cpu_us = (time.process_time() - cpu) / len(rows) * 1e6
        wall = time.perf_counter() - t
        if kept:
            with engine.connect() as c:
                assert rollup.drift(c) == [], "the rollup drifted"
        print(f"  {'rollup' if kept else 'bare  '}: {cpu_us:.1f} us CPU/event, {wall:.2f} s")
        return cpu_us
    finally:
        engine.dispose()


def main(args: argparse.Namespace) -> None:
    rows = rows_of(make_events(args.accounts, args.lines, args.events))
    dbs = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    out = []
    for db in dbs:
        pg = None
        if db == "postgresql":
            from tests.billing_db import start_postgres, stop_postgres

            pg = start_postgres()
            if isinstance(pg, str):
                print(f"postgresql: {pg}")
                continue
        try:
            with tempfile.TemporaryDirectory() as tmp:
                got: dict[bool, list[float]] = {False: [], True: []}
                for r in range(args.rounds):
                    for kept in (False, True):
                        url = (pg.url(pg.create_database()) if pg is not None
                               else f"sqlite:///{tmp}/b{r}{int(kept)}.db")  # fmt: skip
                        print(f"{db} round {r + 1}", flush=True)
                        got[kept].append(one(url, args, rows, kept))
                b, k = statistics.median(got[False]), statistics.median(got[True])
                out.append(f"| {db} | {b:.1f} | {k:.1f} | {k - b:.1f} | {k / b:.2f} |")
        finally:
            if pg is not None:
                stop_postgres(pg)
    now = datetime.now(UTC)
    text = "\n".join([
        f"## bench.rollup: {now:%Y-%m-%d %H:%M} UTC",
        "",
        f"`.venv/bin/python -m bench.rollup --accounts {args.accounts} --lines {args.lines} "
        f"--events {args.events}` ({args.events:,} usage events at random over 2026-11 in "
        f"batches of {args.batch:,}, each round into a fresh database; medians of "
        f"{args.rounds} interleaved rounds; 2 shared cores). Process CPU per event stored "
        "(PostgreSQL's server not counted); the rollup checked exact after each kept round.",
        "",
        "| database | INSERT alone us/event | with the rollup us/event | rollup's cost | ratio |",
        "|---|---:|---:|---:|---:|",
        *out,
        "",
    ])  # fmt: skip
    print(text)
    if args.append:
        with open(Path(__file__).with_name("RESULTS.md"), "a", encoding="utf-8") as f:
            f.write(text + "\n")


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--accounts", type=int, default=1000)
    p.add_argument("--lines", type=int, default=5)
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    p.add_argument("--append", action="store_true", help="append the result to bench/RESULTS.md")
    main(p.parse_args())


if __name__ == "__main__":
    cli()
