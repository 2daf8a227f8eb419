"""Hot billing (issue 6): records per second from a CDR file to debits, and the time from a
file being closed to its last record charged under a steady call rate.

One private redis-server (AOF on, appendfsync everysec, as in production) holds N subscribers
on the shipped plan prepaid-basic. CDR files are TS 32.297-framed ASN.1 BER files of TS 32.298
records (MOC 60%, MTC 30%, MO SMS 10%; national calls at home, 1-300 s) encoded by pycrate
(the simulator's encoder) from a pool of templates whose servedMSISDN is then set per record,
so a file of 50,000 records takes a second to make. Everything runs in this one process under
uvloop, as ``ocs mediation run`` does.

Throughput, in rounds (medians reported), each on a fresh file (new record identities):

* script ceiling: the debit script alone, through ``Store.debit`` on the thin pipelined client
  with the costs precomputed, ``window`` in flight: what Redis and the client path can do;
* charge: decode + rate + debit of a file's records (``Charger.charge`` over ``decode``);
* whole file: ``Mediation.poll`` on a directory: ledger, decode, rate, debit, rejected file,
  Parquet, AES-GCM archive, move to done/.

Before the rounds one record per subscriber teaches the engine every subscriber's plan (the
steady state of a long-running mediation). CPU per record is this process's CPU time
(``time.process_time``) and Redis's (``INFO cpu``) over the round, divided by the records.

Latency: a writer produces ``rate`` calls a second (default 200) into the open file, closes it
(written aside, renamed to its TS 32.297 name) every ``rotate`` seconds, while ``Mediation.run``
polls the directory every ``poll`` seconds (the default 1 s). Close -> charged is the time from
the rename to the ledger marking the file done (its last record settled, exports written).

    .venv/bin/python -m bench.mediation [--records N] [--subscribers N] [--rounds R]
        [--window W] [--rate CALLS] [--rotate S] [--duration S] [--poll S] [--append]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import uvloop

from bench.charging import git_commit, machine, percentile, redis_cpu
from ocs.charging.engine import ChargingEngine
from ocs.clikit import tune_gc as _tune_gc
from ocs.mediation.collect import DirectorySource
from ocs.mediation.formats import CdrRecord, decode, network_id
from ocs.mediation.formats._fields import encode_tbcd
from ocs.mediation.formats.ber import encode_record, frame_file
from ocs.mediation.naming import format_name
from ocs.mediation.pipeline import Charger, FileReport, Mediation, MediationConfig
from ocs.mediation.usage import Direction, Usage
from ocs.redis_server import EmbeddedRedis
from ocs.store.redis_client import PipelinedRedis
from ocs.store.store import Store
from tariffs import PlanBook, TariffRater, load_plans
from tariffs.interface import UsageContext

RESULTS: Final = Path(__file__).with_name("RESULTS.md")
PLAN: Final = "prepaid-basic"
TZ: Final = dt.timezone(dt.timedelta(hours=1))
TEMPLATE_MSISDN: Final = "491700000000"
KEY: Final = bytes(range(32))


def msisdn(i: int) -> str:
    return f"4917{i:08d}"


# -- CDR files ---------------------------------------------------------------------------------


class Files:
    """Makes TS 32.297 BER files fast: pycrate encodes a pool of templates once; each record is
    a template with its servedMSISDN (same length, TBCD) replaced."""

    def __init__(self, subscribers: int, seed: int = 7, pool: int = 240) -> None:
        rng = random.Random(seed)
        self.rng = rng
        self.subscribers = subscribers
        self.pattern = encode_tbcd(TEMPLATE_MSISDN)
        t0 = dt.datetime(2026, 11, 23, 10, 0, tzinfo=TZ)
        self.templates: list[bytes] = []
        for i in range(pool):
            d = rng.choices([Direction.MOC, Direction.MTC, Direction.SMS_MO], [6, 3, 1])[0]
            calls = d is not Direction.SMS_MO
            dur = rng.randint(1, 300) if calls else 0
            s = t0 + dt.timedelta(seconds=rng.randrange(36_000))
            answer = s + dt.timedelta(seconds=4) if calls else None
            release = answer + dt.timedelta(seconds=dur) if answer else None
            other = f"030{rng.randrange(10**7):07d}" if calls else "+491701234567"
            rec = CdrRecord(d, TEMPLATE_MSISDN, "262010000000001", other, s, answer, release,
                            dur, "26201", 4660, 12345, "4917200001", i)  # fmt: skip
            self.templates.append(encode_record(rec))
        self.count = 0
        self.opened = t0

    def records(self, n: int) -> list[bytes]:
        rng, pat, subs = self.rng, self.pattern, self.subscribers
        return [
            rng.choice(self.templates).replace(pat, encode_tbcd(msisdn(rng.randrange(subs))))
            for _ in range(n)
        ]

    def file(self, records: list[bytes]) -> bytes:
        self.count += 1
        return frame_file(records, sequence=self.count, opened=self.opened,
                          last_append=self.opened)  # fmt: skip

    def name(self, closed: dt.datetime) -> str:
        return format_name("MSC01", self.count, closed.astimezone(TZ), 1, "ber")


# -- measurement -------------------------------------------------------------------------------


@dataclass
class Run:
    kind: str
    records: int
    seconds: float
    cpu: float
    redis: float

    @property
    def rate(self) -> float:
        return self.records / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.records * 1e6

    @property
    def redis_us(self) -> float:
        return self.redis / self.records * 1e6


async def measure(kind: str, client: PipelinedRedis, work: Callable[[], Awaitable[int]]) -> Run:
    r0, c0, t0 = await redis_cpu(client), time.process_time(), time.perf_counter()
    n = await work()
    t1, c1, r1 = time.perf_counter(), time.process_time(), await redis_cpu(client)
    return Run(kind, n, t1 - t0, c1 - c0, r1 - r0)


async def ceiling(store: Store, rater: TariffRater, usages: list[Usage], window: int,
                  tag: str) -> int:  # fmt: skip
    """The debit script alone: costs priced beforehand, ``window`` calls in flight."""
    services = {Direction.MOC: "voice", Direction.MTC: "voice-mt", Direction.SMS_MO: "sms"}
    jobs = []
    for u in usages:
        at = u.answer if u.answer is not None else u.start
        svc = services[u.direction]
        units = 1 if svc == "sms" else u.duration
        ctx = UsageContext(PLAN, svc, u.served_msisdn, at, u.other_party,
                           network_id(u.location))  # fmt: skip
        jobs.append((u.served_msisdn, f"{tag}:{u.sequence}", svc, units,
                     rater.cost(ctx, units), at))  # fmt: skip
    it = iter(jobs)

    async def worker() -> None:
        for sub, rk, svc, units, cost, at in it:
            ans = await store.debit(sub, request_key=rk, service=svc, units=units, cost=cost,
                                    bucket_quote=-1, flags="X", plan=PLAN, now=at)  # fmt: skip
            assert ans.status == "OK", ans.status

    await asyncio.gather(*(worker() for _ in range(window)))
    return len(jobs)


def median_run(runs: list[Run]) -> Run:
    rates = sorted(runs, key=lambda r: r.rate)
    mid = rates[len(rates) // 2]
    return Run(
        mid.kind,
        mid.records,
        mid.seconds,
        statistics.median(r.cpu / r.records for r in runs) * mid.records,
        statistics.median(r.redis / r.records for r in runs) * mid.records,
    )


async def steady(
    mediation: Mediation, src: Path, files: Files, *, rate: float, rotate: float,
    duration: float, reports: asyncio.Queue[FileReport],
) -> list[tuple[str, int, float]]:  # fmt: skip
    """Write ``rate`` calls a second, closing a file every ``rotate`` s, for ``duration`` s;
    (file, records, seconds from close to charged) for each file."""
    stop = asyncio.Event()
    runner = asyncio.create_task(mediation.run(stop))
    closed: dict[str, tuple[int, float]] = {}
    pending: list[bytes] = []
    start = time.monotonic()
    written = 0
    # Closes fall at random points of the poll cycle (a switch's clock is not ours).
    jitter = random.Random(3)
    next_close = start + rotate + jitter.uniform(0, mediation.config.poll_interval)
    try:
        while True:
            now = time.monotonic()
            due = int((min(now, start + duration) - start) * rate) - written
            if due > 0:
                pending.extend(files.records(due))
                written += due
            if now >= next_close or now >= start + duration:
                if pending:
                    data = files.file(pending)
                    name = files.name(dt.datetime.now(dt.UTC))
                    (src / f"{name}.tmp").write_bytes(data)
                    (src / f"{name}.tmp").rename(src / name)
                    closed[name] = (len(pending), time.time())
                    pending = []
                next_close += rotate + jitter.uniform(0, mediation.config.poll_interval)
                if now >= start + duration:
                    break
            await asyncio.sleep(0.05)
        out = []
        while len(out) < len(closed):
            r = await asyncio.wait_for(reports.get(), 60)
            n, t_close = closed[r.file]
            out.append((r.file, n, r.done_at / 1000 - t_close))
        return out
    finally:
        stop.set()
        await asyncio.wait_for(runner, 60)


# -- the run -------------------------------------------------------------------------------------


async def run(ns: argparse.Namespace) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="bench-mediation-"))
    server = EmbeddedRedis(tmp / "redis")
    await asyncio.to_thread(server.start)
    try:
        async with PipelinedRedis.from_url(server.url) as client:
            return await _run(ns, tmp, client)
    finally:
        await asyncio.to_thread(server.stop)
        shutil.rmtree(tmp, ignore_errors=True)


async def _run(ns: argparse.Namespace, tmp: Path, client: PipelinedRedis) -> str:
    store = Store(client, session_ttl_ms=900_000, reference_ttl_ms=86_400_000)
    await store.load_scripts()
    sem = asyncio.Semaphore(256)

    async def add(i: int) -> None:
        async with sem:
            await store.create_subscriber(msisdn(i), plan=PLAN, balance=10**13, credit_limit=0,
                                          state="active", now=0)  # fmt: skip

    await asyncio.gather(*(add(i) for i in range(ns.subscribers)))
    rater = TariffRater(PlanBook(load_plans()))
    engine = ChargingEngine(store, rater)
    t = time.perf_counter()
    files = Files(ns.subscribers)
    print(f"templates encoded in {time.perf_counter() - t:.1f} s", flush=True)
    charger = Charger(engine, rater.book.at, window=ns.window)
    # Teach the engine every subscriber's plan (the steady state of a running mediation).
    warm = [files.templates[0].replace(files.pattern, encode_tbcd(msisdn(i)))
            for i in range(ns.subscribers)]  # fmt: skip
    await charger.charge(decode(files.file(warm), switch="MSC01", file="warm.ber"))

    src = tmp / "cdr"
    src.mkdir()
    config = MediationConfig(
        poll_interval=ns.poll, window=ns.window, warehouse_dir=str(tmp / "warehouse"),
        archive_dir=str(tmp / "archive"), archive_key=KEY,
    )  # fmt: skip
    reports: asyncio.Queue[FileReport] = asyncio.Queue()
    mediation = Mediation(engine, rater, DirectorySource(src), config,
                          on_file=reports.put_nowait)  # fmt: skip

    runs: dict[str, list[Run]] = {"ceiling": [], "charge": [], "file": [], "decode": []}
    for rnd in range(ns.rounds):
        data = files.file(files.records(ns.records))
        usages = [u for u in decode(data, switch="MSC01", file=f"c{rnd}") if isinstance(u, Usage)]

        async def do_decode() -> int:
            return sum(1 for _ in decode(data, switch="MSC01", file=f"d{rnd}"))  # noqa: B023

        async def do_ceiling() -> int:
            return await ceiling(store, rater, usages, ns.window, f"ceil{rnd}")  # noqa: B023

        async def do_charge() -> int:
            rated, rejected = await charger.charge(decode(data, switch="MSC01",  # noqa: B023
                                                          file=f"r{rnd}"))  # noqa: B023  # fmt: skip
            assert not rejected, rejected[:3]
            return len(rated)

        async def do_file() -> int:
            name = files.name(dt.datetime.now(dt.UTC))
            (src / name).write_bytes(data)  # noqa: B023
            (report,) = await mediation.poll()
            assert report.rejected == 0 and report.file == name
            reports.get_nowait()
            return report.records

        steps = [("decode", do_decode), ("ceiling", do_ceiling), ("charge", do_charge),
                 ("file", do_file)]  # fmt: skip
        if rnd % 2:
            steps.reverse()
        for kind, work in steps:
            r = await measure(kind, client, work)
            runs[kind].append(r)
            print(
                f"round {rnd + 1}: {kind:<8} {r.rate:>9,.0f} records/s  "
                f"{r.cpu_us:6.1f} us CPU/record  redis {r.redis_us:5.1f} us",
                flush=True,
            )

    print(f"steady {ns.rate:.0f} calls/s, a file every {ns.rotate:g} s, for {ns.duration:g} s, "
          f"polling every {ns.poll:g} s", flush=True)  # fmt: skip
    lat = await steady(mediation, src, files, rate=ns.rate, rotate=ns.rotate,
                       duration=ns.duration, reports=reports)  # fmt: skip
    for name, n, secs in lat:
        print(f"  {name}: {n} records, closed -> charged {secs:.3f} s", flush=True)
    return report(ns, {k: median_run(v) for k, v in runs.items()}, runs, lat)


def report(ns: argparse.Namespace, med: dict[str, Run], runs: dict[str, list[Run]],
           lat: list[tuple[str, int, float]]) -> str:  # fmt: skip
    m = machine()
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    ceil = med["ceiling"].rate
    lines = [
        f"## Hot billing (CDR files): {now} (commit {git_commit()})",
        "",
        "`.venv/bin/python -m bench.mediation`: TS 32.297-framed BER files of TS 32.298 records "
        "(MOC 60%, MTC 30%, MO SMS 10%) from a directory, in one process (bench/mediation.py).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}. Settings: "
        f"{ns.subscribers:,} subscribers ({PLAN}), {ns.records:,} records a file, "
        f"{ns.window} debits in flight, {ns.rounds} rounds.",
        "",
        "| run (median of rounds) | records/s | of ceiling | CPU µs/record | Redis µs/record |",
        "|---|---:|---:|---:|---:|",
    ]
    names = {
        "decode": "decode only (fast BER)",
        "ceiling": "debit script ceiling",
        "charge": "decode + rate + debit",
        "file": "whole file (+ ledger, Parquet, archive)",
    }
    for kind in ("decode", "ceiling", "charge", "file"):
        r = med[kind]
        of = "-" if kind == "decode" else f"{r.rate / ceil:.0%}"
        lines.append(f"| {names[kind]} | {r.rate:,.0f} | {of} | {r.cpu_us:.1f} | "
                     f"{r.redis_us:.1f} |")  # fmt: skip
    secs = sorted(s for _, _, s in lat)
    recs = statistics.median(n for _, n, _ in lat) if lat else 0
    lines += [
        "",
        f"Steady {ns.rate:.0f} calls/s, a file closed every {ns.rotate:g} s (~{recs:,.0f} "
        f"records), polled every {ns.poll:g} s, {len(lat)} files: closed -> last record "
        f"charged p50 {percentile(secs, 0.5):.2f} s, max {max(secs, default=float('nan')):.2f} "
        f"s (target < 5 s).",
        "",
        f"Whole file: {med['file'].rate:,.0f} records/s (target >= 10,000).",
    ]
    return "\n".join(lines) + "\n"


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--records", type=int, default=50_000, help="records a file (default 50,000)")
    p.add_argument("--subscribers", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--window", type=int, default=256, help="debits in flight")
    p.add_argument("--rate", type=float, default=200.0, help="calls a second (steady part)")
    p.add_argument("--rotate", type=float, default=20.0, help="seconds between file closes")
    p.add_argument("--duration", type=float, default=80.0, help="seconds of the steady part")
    p.add_argument("--poll", type=float, default=1.0, help="mediation poll interval, seconds")
    p.add_argument("--append", action="store_true", help="append the result to RESULTS.md")
    p.add_argument("--default-gc", action="store_true", help="leave the collector as it is")
    ns = p.parse_args()
    if not ns.default_gc:
        _tune_gc()  # as `ocs mediation run` does
    text = uvloop.run(run(ns))
    print()
    print(text)
    if ns.append:
        with RESULTS.open("a") as f:
            f.write("\n" + text.rstrip("\n") + "\n")


if __name__ == "__main__":
    cli()
