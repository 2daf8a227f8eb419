"""``make load`` / ``make soak``: a Locust load test of a locally started OCS, with an SLO gate
and the money invariants checked afterwards (docs/load-testing.md).

1. A private redis-server (AOF on, appendfsync everysec, as in production) and ``ocs serve
   --workers N`` in a process of its own, both on free ports.
2. The population (``bench.locust.traffic.population``: the demo's mix of plans and balances,
   a quarter nearly out of credit) created through the admin API.
3. Locust, headless, for ``--duration`` seconds: ``--users`` gateways on ``--transport``
   (native or diameter) with Poisson arrivals, plus one customer-care user (HTTP top-ups and
   balance queries). Meanwhile the memory of the OCS processes, Redis and Locust is sampled.
4. The OCS is stopped (drained), and every subscriber checked: opening + top-ups - charges =
   final balance to the micro-unit, reserved = the open sessions' holds (none left open), one
   outbox event per change, and the client's own ledger (bench/locust/invariants.py).
5. ``load-report.html`` (Locust's report, with the memory chart added) and ``LOAD.md``
   (requests/s, p50/p95/p99 per message type, result codes, the SLO verdict, the invariant
   check, memory) under ``--out-dir``: by default ``<temp>/ocs-load``, outside the tree, as
   bench/LOAD.md is the tracked reference run (``--out-dir bench`` replaces it); the exit
   status is 1 when the SLO or an invariant fails.

``--soak`` runs long (30 minutes by default) and reads the memory trend. ``--compare-workers
1,2`` runs the same test with each worker count, alternating, ``--rounds`` times, and reports
medians and ratios (appended to bench/RESULTS.md). ``--populate-only`` loads the population
into any OCS (``--api``); ``--check-only`` checks any Redis (``--redis-url``) once its traffic
has stopped.

    .venv/bin/python -m bench.load [--duration S] [--users N] [--arrival-rate R]
        [--transport native|diameter] [--workers N] [--time-factor F] [--subscribers N]
        [--p99-ms MS] [--max-failures PERCENT] [--soak] [--compare-workers 1,2 --rounds R]

Every option also reads an environment variable: LOAD_DURATION, LOAD_USERS, LOAD_WORKERS...
(the option's name in capitals, dashes as underscores, after ``LOAD_``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import html
import importlib.util
import math
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import redis

from bench.charging import _spawn, _stop, free_port, git_commit, host_cpu, machine, proc_cpu
from bench.credentials import ADMIN_TOKEN, ocs_env
from bench.locust.invariants import CheckReport, check
from bench.locust.results import Results
from bench.locust.summary import CHARGING, Slo, Summary, summarize
from bench.locust.traffic import Traffic, population
from ocs.constants import BUCKET_COUNT
from ocs.money import format_money
from ocs.redis_server import EmbeddedRedis
from ocs.store.keys import outbox_key

ROOT: Final = Path(__file__).resolve().parents[1]
LOCUSTFILE: Final = ROOT / "bench" / "locust" / "locustfile.py"
RESULTS_MD: Final = ROOT / "bench" / "RESULTS.md"


def _env(name: str, default: Any) -> Any:
    return os.environ.get(f"LOAD_{name.upper()}", default)


def options(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.load",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    a = p.add_argument
    a(
        "--duration",
        type=float,
        default=_env("duration", None),
        help="seconds of load (default 60; --soak: 1800)",
    )
    a("--users", type=int, default=_env("users", 10), help="gateways (network elements)")
    a(
        "--arrival-rate",
        type=float,
        default=_env("arrival_rate", 20.0),
        help="new sessions per second per gateway (Poisson)",
    )
    a("--transport", choices=("native", "diameter"), default=_env("transport", "native"))
    a("--workers", type=int, default=_env("workers", 1), help="OCS processes (ocs serve --workers)")
    a(
        "--time-factor",
        type=float,
        default=_env("time_factor", 0.05),
        help="real seconds per simulated second (calls of 100 s last 5 s)",
    )
    a(
        "--mean-holding",
        type=float,
        default=_env("mean_holding", 100.0),
        help="mean holding time, simulated seconds",
    )
    a("--mix", default=_env("mix", "55,25,20"), help="weights of voice, data and SMS arrivals")
    a("--subscribers", type=int, default=_env("subscribers", 10_000), help="population size")
    a(
        "--closed-loop",
        type=int,
        default=_env("closed_loop", 0),
        help="capacity: N sessions back to back per gateway instead of Poisson arrivals",
    )
    a("--topup-rate", type=float, default=_env("topup_rate", 2.0), help="HTTP top-ups per second")
    a(
        "--balance-rate",
        type=float,
        default=_env("balance_rate", 5.0),
        help="HTTP balance queries per second",
    )
    a(
        "--processes",
        type=int,
        default=_env("processes", 1),
        help="Locust processes (locust --processes; more than one core of load generation)",
    )
    a("--p99-ms", type=float, default=_env("p99_ms", 20.0), help="SLO: p99 of every message type")
    a(
        "--max-failures",
        type=float,
        default=_env("max_failures", 0.1),
        help="SLO: failed requests, percent of all",
    )
    a(
        "--soak",
        action="store_true",
        default=bool(_env("soak", "")),
        help="long run (default 30 min) watching memory",
    )
    a(
        "--sample-interval",
        type=float,
        default=_env("sample_interval", None),
        help="seconds between memory samples (default 5; --soak: 30)",
    )
    a(
        "--compare-workers",
        default=_env("compare_workers", ""),
        help="e.g. 1,2: the same test with each worker count, alternating; medians and ratios",
    )
    a("--rounds", type=int, default=_env("rounds", 3), help="rounds of --compare-workers")
    a(
        "--out-dir",
        default=_env("out_dir", str(DEFAULT_OUT_DIR)),
        help="where load-report.html and LOAD.md go (created if missing; LOAD_OUT_DIR); "
        "bench/ replaces the tracked reference run",
    )
    a("--no-append", action="store_true", help="--compare-workers: do not append to RESULTS.md")
    a("--keep", action="store_true", help="keep the work directory (logs, CSV, data)")
    a(
        "--populate-only",
        action="store_true",
        help="create the population through the admin API at --api, and exit",
    )
    a("--api", default=_env("api", "http://127.0.0.1:8080"), help="admin API for --populate-only")
    a(
        "--check-only",
        action="store_true",
        help="check the invariants of the Redis at --redis-url (no traffic may run), and exit",
    )
    a("--redis-url", default=_env("redis_url", None), help="Redis for --check-only")
    ns = p.parse_args(argv)
    if ns.duration is None:
        ns.duration = 1800.0 if ns.soak else 60.0
    ns.duration = float(ns.duration)
    if ns.sample_interval is None:
        ns.sample_interval = 30.0 if ns.soak else 5.0
    ns.sample_interval = float(ns.sample_interval)
    if ns.users < 1 or ns.workers < 1 or ns.processes < 1 or ns.subscribers < 1:
        p.error("--users, --workers, --processes and --subscribers must be at least 1")
    Traffic(ns.time_factor, ns.mean_holding)  # checks them
    return ns


# -- the population -----------------------------------------------------------------------------


async def populate(api: str, count: int, concurrency: int = 32) -> int:
    """Create the population through the admin API (idempotent: a reference per subscriber);
    how many were created now."""
    subs = population(count)
    created = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(subs)):
        queue.put_nowait(i)

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal created
        while not queue.empty():
            s = subs[queue.get_nowait()]
            body = {
                "msisdn": s.msisdn,
                "balance": format_money(s.balance),
                "plan": s.plan,
                "credit_limit": format_money(s.credit_limit),
                "reference": f"load-{s.msisdn}",
            }
            async with http.post(f"{api.rstrip('/')}/v1/subscribers", json=body) as resp:
                if resp.status == 409:
                    continue  # there already (created without this reference)
                if resp.status != 201:
                    raise SystemExit(
                        f"load: creating {s.msisdn}: {resp.status} {await resp.text()}"
                    )
                created += 1

    timeout = aiohttp.ClientTimeout(total=None, sock_read=30)
    headers = {"Authorization": f"Bearer {os.environ.get('OCS_API_TOKEN') or ADMIN_TOKEN}"}
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return created


def operator_key(redis_url: str) -> str:
    """A new API key with the operator role, stored in the OCS's Redis: its token."""
    from ocs.auth.credentials import new_api_key
    from ocs.store.redis_client import PipelinedRedis
    from ocs.store.security import SecurityStore

    token, record = new_api_key("operator", None, now=int(time.time() * 1000),
                                label="load test customer care")  # fmt: skip

    async def add() -> None:
        async with PipelinedRedis.from_url(redis_url) as client:
            await SecurityStore(client).add_api_key(record)

    asyncio.run(add())
    return token


# -- processes ------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _tree(pid: int) -> list[int]:
    return [pid, *_children(pid)]


def _rss(pid: int) -> int:
    """Resident set size in bytes (0 when the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _cpu(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += proc_cpu(pid)
    return total


@dataclass
class Ocs:
    proc: subprocess.Popen[bytes]
    native_port: int
    http_port: int
    diameter_port: int
    log: Path

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def pids(self) -> list[int]:
        """The supervisor (or the only process) and its workers, without Redis."""
        return [p for p in _tree(self.proc.pid) if "redis-server" not in _cmdline(p)]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@contextlib.contextmanager
def ocs_process(redis_url: str, workers: int, work: Path) -> Iterator[Ocs]:
    """``ocs serve --workers N`` in a session of its own; yields once every worker serves."""
    ports = free_port(), free_port(), free_port()
    log = work / f"ocs-{uuid.uuid4().hex[:6]}.log"
    argv = [
        sys.executable,
        "-m",
        "ocs.cli",
        "serve",
        "--workers",
        str(workers),
        "--redis-url",
        redis_url,
        "--native-port",
        str(ports[0]),
        "--http-port",
        str(ports[1]),
        "--diameter-port",
        str(ports[2]),
    ]
    env = {**os.environ, "OCS_DATA_DIR": str(work / "ocs-data"), **ocs_env()}
    with open(log, "wb") as out:
        proc = _spawn(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    ocs = Ocs(proc, *ports, log)
    try:
        _wait_ready(ocs, workers)
        yield ocs
    finally:
        _stop(proc, 40)


def _wait_ready(ocs: Ocs, workers: int) -> None:
    deadline = time.monotonic() + 90
    while True:
        if ocs.proc.poll() is not None:
            tail = ocs.log.read_text(errors="replace")[-3000:]
            raise SystemExit(f"load: `ocs serve` exited ({ocs.proc.returncode}):\n{tail}")
        ready = 0
        with contextlib.suppress(OSError), urllib_open(f"{ocs.api}/readyz") as resp:
            ready = resp.status == 200
        if ready and (workers == 1 or _ready_workers(ocs) >= workers):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"load: `ocs serve` not ready within 90 s; see {ocs.log}")
        time.sleep(0.2)


def _ready_workers(ocs: Ocs) -> int:
    text = ocs.log.read_text(errors="replace")
    live = {}
    for slot, pid in re.findall(r"worker (\d+) ready \(pid (\d+)\)", text):
        live[slot] = pid
    return len(live)


def urllib_open(url: str) -> Any:
    import urllib.request

    return urllib.request.urlopen(url, timeout=2)


# -- memory sampling -------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float  # seconds since the load started
    ocs_rss: int
    ocs_processes: int
    redis_used: int
    redis_rss: int
    locust_rss: int
    outbox: int


class Sampler(threading.Thread):
    """Memory every ``interval`` seconds: the OCS processes' RSS, Redis used_memory and RSS,
    Locust's RSS, and the outbox length (it grows by design: the journal is not trimmed)."""

    def __init__(self, ocs: Ocs, redis_url: str, locust_pid: int, interval: float) -> None:
        super().__init__(daemon=True, name="memory-sampler")
        self.ocs, self.locust_pid, self.interval = ocs, locust_pid, interval
        self.redis = redis.Redis.from_url(redis_url)
        self.samples: list[Sample] = []
        self.stopped = threading.Event()
        self.t0 = time.monotonic()

    def sample(self) -> None:
        pids = self.ocs.pids()
        info = self.redis.info("memory")
        pipe = self.redis.pipeline(transaction=False)
        for b in range(BUCKET_COUNT):
            pipe.xlen(outbox_key(b))
        outbox = sum(pipe.execute())
        self.samples.append(
            Sample(
                time.monotonic() - self.t0,
                sum(_rss(p) for p in pids),
                len(pids),
                int(info["used_memory"]),
                int(info["used_memory_rss"]),
                sum(_rss(p) for p in _tree(self.locust_pid)),
                outbox,
            )
        )

    def run(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # a sample is not worth failing the run
                self.sample()
            if self.stopped.wait(self.interval):
                return

    def stop(self) -> list[Sample]:
        self.stopped.set()
        self.join(10)
        self.redis.close()
        return self.samples


# -- one run -------------------------------------------------------------------------------------


@dataclass
class Run:
    workers: int
    results: Results
    summary: Summary
    check: CheckReport
    samples: list[Sample]
    seconds: float
    cpu: dict[str, float] = field(default_factory=dict)  # process CPU seconds in the window
    host_busy: float = 0.0
    host_steal: float = 0.0
    locust_status: int = 0
    html: Path | None = None
    work: Path | None = None

    @property
    def charging_requests(self) -> int:
        return self.summary.charging.count

    def cpu_us(self, who: str) -> float:
        n = self.charging_requests + sum(
            s.count for name, s in self.results.types.items() if name not in CHARGING
        )
        return self.cpu.get(who, 0.0) / n * 1e6 if n else float("nan")

    @property
    def passed(self) -> bool:
        return self.summary.passed and self.check.ok and self.locust_status == 0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _redis_cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def locust_argv(ns: argparse.Namespace, ocs: Ocs, prefix: Path, results: Path) -> list[str]:
    users = ns.users + 1  # the gateways and the customer-care desk
    options = {
        "-u": users, "-r": max(users, 10), "-t": f"{ns.duration:g}s", "--host": ocs.api,
        "--csv": prefix, "--html": f"{prefix}.html", "--loglevel": "WARNING",
        "--exit-code-on-error": 0, "--stop-timeout": 0,
        "--transport": ns.transport, "--native-port": ocs.native_port,
        "--diameter-port": ocs.diameter_port, "--subscribers": ns.subscribers,
        "--arrival-rate": ns.arrival_rate, "--time-factor": ns.time_factor,
        "--mean-holding": ns.mean_holding, "--mix": ns.mix, "--closed-loop": ns.closed_loop,
        "--topup-rate": ns.topup_rate, "--balance-rate": ns.balance_rate,
        "--results-file": results, "--run-id": uuid.uuid4().hex[:8],
    }  # fmt: skip
    if ns.processes > 1:
        options["--processes"] = ns.processes
    argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary"]
    for name, value in options.items():
        argv += [name, str(value)]
    return argv


def run_once(ns: argparse.Namespace, workers: int, work: Path, label: str) -> Run:
    """Redis, the OCS, the population, Locust, the check; what it measured."""
    work.mkdir(parents=True, exist_ok=True)
    slo = Slo(ns.p99_ms, ns.max_failures / 100)
    with contextlib.ExitStack() as stack:
        server = EmbeddedRedis(work / "redis", extra_args=("--appendfsync", "everysec"))
        server.start()
        stack.callback(server.stop)
        admin = redis.Redis.from_url(server.url)
        stack.callback(admin.close)
        ocs = stack.enter_context(ocs_process(server.url, workers, work))
        t = time.monotonic()
        created = asyncio.run(populate(ocs.api, ns.subscribers))
        print(
            f"load: {label}: redis-server {server.version}, `ocs serve --workers {workers}`, "
            f"{created:,} subscribers in {time.monotonic() - t:.1f} s; Locust for "
            f"{ns.duration:g} s ({ns.users} {ns.transport} gateways)",
            flush=True,
        )
        prefix = work / "locust"
        results_path = work / "results.json"
        # Locust's customer-care desk is an operator (with the role's top-up limit); its
        # gateways authenticate with the run's native key.
        env = {**os.environ, "PYTHONPATH": str(ROOT),
               "OCS_API_TOKEN": operator_key(server.url)}  # fmt: skip
        children0 = _children_cpu()
        with open(work / "locust.log", "wb") as out:
            locust = _spawn(
                locust_argv(ns, ocs, prefix, results_path),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        stack.callback(_stop, locust, 10)  # on the way out, whatever happened
        sampler = Sampler(ocs, server.url, locust.pid, ns.sample_interval)
        sampler.start()
        cpu0 = _cpu(ocs.pids()), _redis_cpu(admin), host_cpu()
        try:
            status = locust.wait(timeout=ns.duration + 180)
        except subprocess.TimeoutExpired:
            _stop(locust, 10)
            status = -1
        # Locust and its own children (--processes), reaped by now (start-up included).
        locust_cpu = results_cpu = _children_cpu() - children0
        cpu1 = _cpu(ocs.pids()), _redis_cpu(admin), host_cpu()
        samples = sampler.stop()
        _stop(ocs.proc, 40)  # drained: nothing changes from here on
        if not results_path.exists():
            tail = (work / "locust.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"load: Locust wrote no results (exit {status}):\n{tail}")
        results = Results.read(results_path)
        locust_cpu = results.cpu or results_cpu  # from the start of the test, as measured there
        seconds = max((results.stopping or results.stopped) - results.started, 1e-9)
        subs = population(ns.subscribers)
        report = asyncio.run(
            check(
                server.url,
                opening={s.msisdn: s.balance for s in subs},
                ledger=results.ledger,
                check_charges=results.charges_known,
                abandoned=results.abandoned,
            )
        )
    total, idle, steal = (b - a for a, b in zip(cpu0[2], cpu1[2], strict=True))
    run = Run(
        workers,
        results,
        summarize(results, seconds, slo),
        report,
        samples,
        seconds,
        {"ocs": cpu1[0] - cpu0[0], "redis": cpu1[1] - cpu0[1], "locust": locust_cpu},
        1 - idle / total if total else 0.0,
        steal / total if total else 0.0,
        status,
        Path(str(prefix) + ".html"),
        work,
    )
    print(
        f"load: {label}: {run.summary.charging.rate:,.0f} charging requests/s, p99 "
        f"{run.summary.charging.p99:.2f} ms, {run.summary.total.failures:,} failures; SLO "
        f"{'pass' if run.summary.passed else 'FAIL'}; invariants "
        f"{'pass' if report.ok else 'FAIL'}",
        flush=True,
    )
    return run


# -- reports -------------------------------------------------------------------------------------


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"


def memory_markdown(samples: Sequence[Sample], rows: int = 16) -> str:
    if not samples:
        return "No memory samples."
    step = max(1, math.ceil(len(samples) / rows))
    picked = list(samples[::step])
    if picked[-1] is not samples[-1]:
        picked.append(samples[-1])
    out = [
        "| t s | OCS RSS MiB (processes) | Redis used MiB | Redis RSS MiB | Locust RSS MiB | "
        "outbox events |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for s in picked:
        out.append(
            f"| {s.t:,.0f} | {_mib(s.ocs_rss)} ({s.ocs_processes}) | {_mib(s.redis_used)} "
            f"| {_mib(s.redis_rss)} | {_mib(s.locust_rss)} | {s.outbox:,} |"
        )
    out.append("")
    out.append(memory_trend(samples))
    return "\n".join(out)


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def memory_trend(samples: Sequence[Sample]) -> str:
    """Growth over the second half of the run (after warm-up): MiB per hour, and Redis bytes
    per outbox event (the journal grows by design; anything beyond it would be a leak)."""
    half = [s for s in samples if s.t >= samples[-1].t / 2] if samples else []
    if len(half) < 8:
        return "Too few samples for a trend (run longer, or sample more often)."
    ts = [s.t / 3600 for s in half]
    ocs = _slope(ts, [s.ocs_rss / 2**20 for s in half])
    used = _slope(ts, [s.redis_used / 2**20 for s in half])
    per_event = _slope([float(s.outbox) for s in half], [float(s.redis_used) for s in half])
    lines = [
        f"Trend over the second half ({half[0].t:,.0f}-{half[-1].t:,.0f} s): OCS RSS "
        f"{ocs:+,.1f} MiB/hour, Redis used_memory {used:+,.1f} MiB/hour "
        f"(~{per_event:,.0f} bytes per outbox event: the journal is kept, not trimmed).",
    ]
    return " ".join(lines)


def memory_svg(samples: Sequence[Sample], width: int = 900, height: int = 260) -> str:
    """A line chart of the memory samples (inline SVG, no script)."""
    if len(samples) < 2:
        return "<p>Too few samples for a chart.</p>"
    series = [
        ("OCS RSS", "#1f77b4", [s.ocs_rss for s in samples]),
        ("Redis used_memory", "#d62728", [s.redis_used for s in samples]),
        ("Redis RSS", "#ff9896", [s.redis_rss for s in samples]),
        ("Locust RSS", "#2ca02c", [s.locust_rss for s in samples]),
    ]
    top = max(max(v) for _, _, v in series) or 1
    t_end = samples[-1].t or 1
    pad = 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'style="background:#fff;font:12px sans-serif">'
    ]
    for i in range(5):
        y = pad + (height - 2 * pad) * i / 4
        parts.append(
            f'<line x1="{pad}" x2="{width - 10}" y1="{y:.0f}" y2="{y:.0f}" stroke="#eee"/>'
        )
        label = _mib(top * (4 - i) / 4)
        parts.append(f'<text x="2" y="{y + 4:.0f}">{label}</text>')
    for n, (name, colour, values) in enumerate(series):
        points = " ".join(
            f"{pad + (width - pad - 10) * s.t / t_end:.1f},"
            f"{height - pad - (height - 2 * pad) * v / top:.1f}"
            for s, v in zip(samples, values, strict=True)
        )
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>'
        )
        parts.append(f'<text x="{pad + 170 * n}" y="16" fill="{colour}">{html.escape(name)}</text>')
    parts.append(f'<text x="{width - 120}" y="{height - 8}">time, s (0-{t_end:,.0f})</text>')
    parts.append(f'<text x="2" y="{pad - 10}">MiB</text>')
    parts.append("</svg>")
    return "".join(parts)


#: Where a plain ``make load`` writes: outside the tree, so the tracked bench/LOAD.md stays.
DEFAULT_OUT_DIR: Final = Path(tempfile.gettempdir()) / "ocs-load"


def write_html(run: Run, out: Path) -> None:
    """Locust's HTML report, with the memory chart and the verdicts added at the end, at
    ``out`` (its folder created if missing: ``--out-dir`` may name a new one)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    assert run.html is not None
    page = run.html.read_text() if run.html.exists() else "<html><body></body></html>"
    extra = (
        '<section style="font-family:sans-serif;margin:24px">'
        "<h2>OCS: memory over time</h2>"
        + memory_svg(run.samples)
        + f"<p>{html.escape(memory_trend(run.samples))}</p>"
        + f"<h2>SLO and invariants</h2><p>SLO: {'PASS' if run.summary.passed else 'FAIL'}"
        + "".join(f"<br>{html.escape(v)}" for v in run.summary.verdicts)
        + '</p><pre style="white-space:pre-wrap">'
        + html.escape(run.check.markdown())
        + "</pre></section>"
    )
    at = page.rfind("</body>")
    page = page[:at] + extra + page[at:] if at >= 0 else page + extra
    out.write_text(page)


def settings_line(ns: argparse.Namespace, workers: int | str) -> str:
    t = Traffic(ns.time_factor, ns.mean_holding)
    if ns.closed_loop:
        offered = (
            f"{ns.users} {ns.transport} gateways x {ns.closed_loop} sessions back to back "
            f"(closed loop: {ns.users * ns.closed_loop} in flight)"
        )
    else:
        sessions = ns.users * ns.arrival_rate
        per_second = sessions * t.requests_per_session()
        offered = (
            f"{ns.users} {ns.transport} gateways x {ns.arrival_rate:g} arrivals/s ({sessions:,.0f}"
            f" sessions/s offered, ~{per_second:,.0f} charging requests/s in the steady state)"
        )
    return (
        f"{ns.duration:g} s, {offered}, mix voice/data/SMS {ns.mix}, mean holding "
        f"{ns.mean_holding:g} s x time factor {ns.time_factor:g}, {ns.subscribers:,} "
        f"subscribers, top-ups {ns.topup_rate:g}/s and balance queries {ns.balance_rate:g}/s "
        f"over HTTP, `ocs serve --workers {workers}`, {ns.processes} Locust process(es)"
    )


def _header(title: str) -> list[str]:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    m = machine()
    return [
        f"# {title}",
        "",
        f"{now}, commit {git_commit()}. Machine: {m['cpu']}, {m['cores']} cores, {m['memory']}; "
        f"Python {m['python']}.",
        "",
    ]


def load_markdown(ns: argparse.Namespace, run: Run, html_name: str) -> str:
    lines = _header("Load test" + (" (soak)" if ns.soak else ""))
    lines += [
        f"Settings: {settings_line(ns, run.workers)}.",
        "",
        f"Verdict: **{'PASS' if run.passed else 'FAIL'}** (SLO "
        f"{'pass' if run.summary.passed else 'fail'}, invariants "
        f"{'pass' if run.check.ok else 'fail'}"
        + (f", Locust exited {run.locust_status}" if run.locust_status else "")
        + "). "
        f"The full report: [{html_name}]({html_name}).",
        "",
        f"Rates over the {run.seconds:,.1f} s of load (from the start until the stop, before the "
        "gateways drained); "
        "latency from the gateway's send to its answer, in the Locust process.",
        "",
        run.summary.markdown(),
        "",
        f"CPU per request: OCS {run.cpu_us('ocs'):,.0f} µs, Redis {run.cpu_us('redis'):,.0f} µs, "
        f"Locust {run.cpu_us('locust'):,.0f} µs; cores busy {run.host_busy:.0%} "
        f"(steal {run.host_steal:.0%}).",
        "",
        run.check.markdown(),
    ]
    if run.results.abandoned:
        lines += [
            "",
            f"Sessions the load left open (failed requests): {len(run.results.abandoned):,}.",
        ]
    lines += ["", "## Memory", "", memory_markdown(run.samples), ""]
    return "\n".join(lines)


# -- comparing worker counts -----------------------------------------------------------------------


@dataclass
class Figures:
    rate: float
    p50: float
    p99: float
    ocs_us: float
    redis_us: float
    locust_us: float
    busy: float


def figures(runs: Sequence[Run]) -> Figures:
    def med(values: Sequence[float]) -> float:
        return statistics.median(values)

    return Figures(
        med([r.summary.charging.rate for r in runs]),
        med([r.summary.charging.p50 for r in runs]),
        med([r.summary.charging.p99 for r in runs]),
        med([r.cpu_us("ocs") for r in runs]),
        med([r.cpu_us("redis") for r in runs]),
        med([r.cpu_us("locust") for r in runs]),
        med([r.host_busy for r in runs]),
    )


def compare_markdown(ns: argparse.Namespace, by_workers: dict[int, list[Run]]) -> str:
    counts = sorted(by_workers)
    lines = [
        "| run | charging req/s | p50 ms | p99 ms | failures | OCS CPU µs/req | Redis CPU µs/req "
        "| Locust CPU µs/req | cores busy (steal) | invariants |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for w in counts:
        for i, r in enumerate(by_workers[w], 1):
            c = r.summary.charging
            lines.append(
                f"| {w} worker(s), round {i} | {c.rate:,.0f} | {c.p50:.2f} | {c.p99:.2f} | "
                f"{r.summary.total.failures:,} | {r.cpu_us('ocs'):,.0f} | "
                f"{r.cpu_us('redis'):,.0f} | {r.cpu_us('locust'):,.0f} | {r.host_busy:.0%} "
                f"({r.host_steal:.0%}) | {'pass' if r.check.ok else 'FAIL'} |"
            )
    med = {w: figures(by_workers[w]) for w in counts}
    for w in counts:
        f = med[w]
        lines.append(
            f"| **{w} worker(s)** (median of {len(by_workers[w])}) | {f.rate:,.0f} | "
            f"{f.p50:.2f} | {f.p99:.2f} | | {f.ocs_us:,.0f} | {f.redis_us:,.0f} | "
            f"{f.locust_us:,.0f} | {f.busy:.0%} | |"
        )
    base = med[counts[0]]
    for w in counts[1:]:
        f = med[w]
        lines.append(
            f"| **{w} / {counts[0]} workers** | **{f.rate / base.rate:.2f}x** | "
            f"{f.p50 / base.p50:.2f}x | {f.p99 / base.p99:.2f}x | | "
            f"{f.ocs_us / base.ocs_us:.2f}x | | | | |"
        )
    return "\n".join(lines)


def compare(ns: argparse.Namespace, work: Path) -> int:
    counts = [int(x) for x in ns.compare_workers.split(",") if x.strip()]
    by_workers: dict[int, list[Run]] = {w: [] for w in counts}
    last: Run | None = None
    for rnd in range(ns.rounds):
        order = counts if rnd % 2 == 0 else counts[::-1]
        for w in order:
            run = run_once(ns, w, work / f"r{rnd + 1}-w{w}", f"round {rnd + 1}, {w} worker(s)")
            by_workers[w].append(run)
            last = run
    assert last is not None
    table = compare_markdown(ns, by_workers)
    ok = all(r.check.ok for runs in by_workers.values() for r in runs)
    out = Path(ns.out_dir)
    html_name = "load-report.html"
    write_html(last, out / html_name)
    lines = _header("Load test: worker counts compared")
    lines += [
        f"Settings: {settings_line(ns, ns.compare_workers)}; {ns.rounds} rounds, the order "
        "alternating; medians. Throughput is charging requests (not HTTP) per second over the "
        "whole run, latency over all charging requests.",
        "",
        table,
        "",
        f"Invariants: {'every run passed' if ok else 'FAILED in some runs (see below)'}.",
        "",
    ]
    for w in counts:
        for i, r in enumerate(by_workers[w], 1):
            if not r.check.ok:
                lines += [f"{w} worker(s), round {i}:", r.check.markdown(), ""]
    (out / "LOAD.md").write_text("\n".join(lines))
    print("\n" + table, flush=True)
    if not ns.no_append:
        append_results(ns, table, ok)
    return 0 if ok else 1


def append_results(ns: argparse.Namespace, table: str, ok: bool) -> None:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    m = machine()
    scenario = "capacity, closed loop" if ns.closed_loop else "network traffic, Poisson arrivals"
    section = [
        "",
        f"## Workers ({scenario}), Locust: {now} (commit {git_commit()})",
        "",
        f"`python -m bench.load {' '.join(sys.argv[1:])}` "
        "(bench/load.py): Locust gateways against `ocs serve --workers N`, each run with a "
        "fresh Redis and population, the invariant check after each.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, shared with other work while measured. "
        f"Settings: {settings_line(ns, ns.compare_workers)}.",
        "",
        table,
        "",
        f"Invariants: {'every run passed' if ok else 'FAILED in some runs'}.",
        "",
    ]
    with open(RESULTS_MD, "a") as f:
        f.write("\n".join(section))


# -- entry ----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ns = options(argv)
    if ns.populate_only:
        created = asyncio.run(populate(ns.api, ns.subscribers))
        print(
            f"load: {created:,} subscribers created through {ns.api} "
            f"({ns.subscribers:,} in the population)"
        )
        return 0
    if ns.check_only:
        if not ns.redis_url:
            raise SystemExit("load: --check-only needs --redis-url")
        report = asyncio.run(check(ns.redis_url, require_closed=False))
        print(report.markdown())
        return 0 if report.ok else 1
    # Only looked for: importing Locust here would monkey-patch this process (gevent).
    if importlib.util.find_spec("locust") is None:
        raise SystemExit(
            "load: Locust is not installed: `make load` installs it, or "
            "`.venv/bin/pip install -e '.[load]'`"
        )
    work = Path(tempfile.mkdtemp(prefix="ocs-load-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if ns.compare_workers:
            return compare(ns, work)
        run = run_once(ns, ns.workers, work / "run", "load")
        out = Path(ns.out_dir)
        html_name = "load-report.html"
        write_html(run, out / html_name)
        text = load_markdown(ns, run, html_name)
        (out / "LOAD.md").write_text(text)
        print("\n" + text, flush=True)
        print(f"load: wrote {out / html_name} and {out / 'LOAD.md'}", flush=True)
        return 0 if run.passed else 1
    finally:
        if ns.keep:
            print(f"load: work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
