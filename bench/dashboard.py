"""The dashboard (issue 13): each level's API p50/p99 on the billing bench's data set, the
page's time to interactive in Chromium, and the OCS's CPU for 50 open live connections.

Data set: bench/billing.py's generator (``--accounts`` 1,000 accounts, 40 agencies, 4
regions; ``--lines`` lines each), ``--events`` usage events of 2026-11 stored through
billing's ingestion function (which keeps the usage rollup; no Redis: the ingest rate is
bench/billing.py's subject), a draft run of 2026-11, and every line a subscriber in a
private Redis. The OCS's HTTP app (billing + dashboard, the real
authentication middleware) runs in this process; the load runs in a child process, so this
process's CPU time is the OCS's own.

- API: ``--requests`` sequential GETs per level (national NAT, region R0, agency AG000,
  account A00000) with an admin token; p50 and p99 in ms.
- Live: a child opens N server-sent-event connections and makes ``--rate`` top-ups a second
  through the store (so the reader has events to fan out) for ``--seconds``; the OCS's CPU is
  measured with N = 0 and N = 50, interleaved, ``--rounds`` times; the difference is what the
  50 connections cost, in % of one core.
- Page: Playwright on /usr/bin/chromium, sign-in to the national page's KPIs, median of 3.

    .venv/bin/python -m bench.dashboard [--accounts N] [--lines N] [--events N] [--append]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from bench.billing import PERIOD, build_dataset, make_events, msisdn
from bench.report import append_section
from ocs.api.app import create_app
from ocs.auth.credentials import AuthConfig, new_user
from ocs.billing import runs
from ocs.billing.api import BillingApi
from ocs.billing.db import open_billing_db
from ocs.billing.usage import store_usage
from ocs.charging.tariffs import TariffRegistry
from ocs.metrics import Metrics
from ocs.redis_server import EmbeddedRedis
from ocs.store.redis_client import PipelinedRedis
from ocs.store.security import SecurityStore
from ocs.store.store import Store
from ocs.ui.api import DashboardApi
from ocs.ui.live import live_feed
from tariffs import PlanBook, TariffRater, load_plans

ADMIN = "bench-admin-token"
CHROMIUM = "/usr/bin/chromium"
LEVELS = (("national", "NAT"), ("region", "R0"), ("agency", "AG000"), ("account", "A00000"))

# The child: N live connections and a rate of top-ups, for some seconds; prints what it got.
CHILD = r"""
import asyncio, json, sys, time
import aiohttp
from ocs.store.redis_client import PipelinedRedis
from ocs.store.store import Store

async def main(base, token, redis_url, n, rate, seconds, lines):
    got = [0]
    async def listen(http):
        async with http.get(base + "/v1/dashboard/live",
                            headers={"Authorization": "Bearer " + token}) as r:
            async for line in r.content:
                if line.startswith(b"data: "):
                    got[0] += 1
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as http:
        tasks = [asyncio.create_task(listen(http)) for _ in range(n)]
        async with PipelinedRedis.from_url(redis_url) as client:
            store = Store(client, session_ttl_ms=900_000, reference_ttl_ms=86_400_000)
            await asyncio.sleep(1.0)
            print("ready", flush=True)
            t0 = time.monotonic(); i = 0
            while time.monotonic() - t0 < seconds:
                m = lines[i % len(lines)]
                await store.credit(m, kind="topup", amount=1_000, reference=f"b{time.time_ns()}",
                                   now=int(time.time() * 1000))
                i += 1
                await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps({"messages": got[0], "topups": i}), flush=True)

a = json.loads(sys.argv[1])
asyncio.run(main(**a))
"""


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


async def api_latency(base: str, n: int) -> dict[str, tuple[float, float]]:
    out = {}
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with aiohttp.ClientSession() as http:
        for level, code in LEVELS:
            path = f"{base}/v1/dashboard/{level}/{code}?period={PERIOD}"
            times = []
            for _ in range(n):
                t = time.perf_counter()
                async with http.get(path, headers=headers) as r:
                    assert r.status == 200, await r.text()
                    await r.read()
                times.append((time.perf_counter() - t) * 1000)
            out[level] = (statistics.median(times), pct(times, 0.99))
    return out


async def live_cpu(
    base: str, redis_url: str, conns: int, rate: int, seconds: float
) -> tuple[float, dict[str, int]]:
    """The OCS's CPU (% of one core) while the child holds ``conns`` connections."""
    args = {"base": base, "token": ADMIN, "redis_url": redis_url, "n": conns, "rate": rate,
            "seconds": seconds, "lines": [msisdn(i, 0) for i in range(0, 1000, 7)]}  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, json.dumps(args), stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    assert (await proc.stdout.readline()).strip() == b"ready"
    c0, w0 = time.process_time(), time.monotonic()
    result = await proc.stdout.readline()
    c1, w1 = time.process_time(), time.monotonic()
    await proc.wait()
    return 100 * (c1 - c0) / (w1 - w0), json.loads(result)


async def page_time(base: str, runs_: int = 3) -> float | None:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        return None
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 (once, before the browser starts)
        return None
    times = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            for _ in range(runs_):
                ctx = await browser.new_context()
                page = await ctx.new_page()
                await page.goto(f"{base}/ui/login")
                await page.fill("input[name=username]", "bench")
                await page.fill("input[name=password]", "bench-password")
                t = time.perf_counter()
                await page.click("button[type=submit]")
                await page.wait_for_selector("[data-testid=children] tbody tr", timeout=30_000)
                times.append(time.perf_counter() - t)
                # a cold load of a bookmarked view (the token is in sessionStorage)
                t = time.perf_counter()
                await page.goto(f"{base}/ui/national/NAT?period={PERIOD}")
                await page.wait_for_selector("[data-testid=children] tbody tr", timeout=30_000)
                times.append(time.perf_counter() - t)
                await ctx.close()
        finally:
            await browser.close()
    return statistics.median(times)


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        redis = EmbeddedRedis(Path(tmp) / "redis")
        redis.start()
        try:
            engine = open_billing_db(f"sqlite:///{tmp}/billing.db")
            t = time.perf_counter()
            build_dataset(engine, args.accounts, args.lines, args.services)
            events = make_events(args.accounts, args.lines, args.events)
            # (through billing's ingestion, which keeps the usage rollup the figures read)
            rows = [
                {"event_id": f"e{i}", "msisdn": m, "ts": int(f["ts"]), "kind": f["t"],
                 "service": f["svc"], "destination": "", "units": 60,
                 "amount": -int(f["amt"]), "line_id": None}
                for i, (m, f) in enumerate(events)
            ]  # fmt: skip
            for i in range(0, len(rows), 10_000):
                store_usage(engine, rows[i : i + 10_000])
            runs.run(engine, PERIOD, now_ms=int(time.time() * 1000))
            print(f"data set in {time.perf_counter() - t:.1f} s", flush=True)
            async with PipelinedRedis.from_url(redis.url) as client:
                store = Store(client, session_ttl_ms=900_000, reference_ttl_ms=86_400_000)
                plans = load_plans()
                registry = TariffRegistry(store, TariffRater(PlanBook(plans)), plans)
                await registry.refresh()
                now = int(time.time() * 1000)
                for i in range(args.accounts):
                    await asyncio.gather(*(
                        store.create_subscriber(msisdn(i, j), plan="gov-payu", balance=10**8,
                                                credit_limit=0, state="active", now=now)
                        for j in range(args.lines)
                    ))  # fmt: skip
                user = await asyncio.to_thread(new_user, "bench", "bench-password", "admin",
                                               None, now)  # fmt: skip
                await SecurityStore(client).put_user(user)
                print("subscribers created", flush=True)
                metrics = Metrics()
                billing = BillingApi(engine, warehouse_dir=tmp)
                t = time.perf_counter()
                async with live_feed(store, redis.url, engine, metrics) as feed:
                    await feed.ready.wait()
                    prime_s = time.perf_counter() - t
                    dash = DashboardApi(engine, store, feed)
                    app = create_app(
                        store, metrics, tariffs=registry, clock=lambda: int(time.time() * 1000),
                        routes=[*billing.routes(), *dash.routes()],
                        auth=AuthConfig(admin_token=ADMIN, secret_key="k" * 64, fail_limit=10**6),
                    )  # fmt: skip
                    runner = web.AppRunner(app, access_log=None)
                    await runner.setup()
                    site = web.TCPSite(runner, "127.0.0.1", 0)
                    await site.start()
                    port = runner.addresses[0][1]
                    base = f"http://127.0.0.1:{port}"
                    try:
                        # Cold: every request computes the billing aggregates; then as served
                        # (kept AGGREGATES_TTL, shared by the pages asking in that second).
                        ttl, dash.aggregates.ttl = dash.aggregates.ttl, 0.0
                        cold = await api_latency(base, args.requests)
                        dash.aggregates.ttl = ttl
                        latency = await api_latency(base, args.requests)
                        print(f"api latency cold {cold} kept {latency}", flush=True)
                        cpu: dict[int, list[float]] = {0: [], args.connections: []}
                        delivered = 0
                        for _ in range(args.rounds):
                            for n in (0, args.connections):
                                c, got = await live_cpu(base, redis.url, n, args.rate, args.seconds)
                                cpu[n].append(c)
                                print(f"live {n} connections: {c:.1f} % {got}", flush=True)
                                delivered = max(delivered, got["messages"]) if n else delivered
                        page = await page_time(base)
                    finally:
                        await runner.cleanup()
            engine.dispose()
        finally:
            redis.stop()
    base_cpu, with_cpu = statistics.median(cpu[0]), statistics.median(cpu[args.connections])
    lines = [
        f"{args.accounts:,} accounts x {args.lines} lines ({args.accounts * args.lines:,} "
        f"subscribers), {args.events:,} usage events, the period drafted; the live feed primed "
        f"in {prime_s:.1f} s",
        "",
        f"{args.requests} sequential requests per level; cold: the billing aggregates computed "
        "for every request; kept: as served (aggregates kept 1 s, shared by every page):",
        "",
        "| level | cold p50 ms | cold p99 ms | kept p50 ms | kept p99 ms |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {lv} | {cold[lv][0]:.1f} | {cold[lv][1]:.1f} | {p50:.1f} | {p99:.1f} |"
            for lv, (p50, p99) in latency.items()
        ),
        "",
        f"Live, {args.rate} top-ups/s for {args.seconds:.0f} s, medians of {args.rounds} "
        "interleaved rounds (OCS process CPU, % of one core):",
        "",
        "| live connections | OCS CPU % |",
        "|---:|---:|",
        f"| 0 | {base_cpu:.1f} |",
        f"| {args.connections} | {with_cpu:.1f} |",
        f"| cost of {args.connections} connections | {with_cpu - base_cpu:.1f} |",
        "",
        f"Messages one round's {args.connections} connections received in all: {delivered:,}.",
        f"Page interactive (sign-in or bookmarked national view to its table, Chromium, median "
        f"of 6): {'n/a' if page is None else f'{page:.2f} s'}.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.append:
        how = (
            f"`.venv/bin/python -m bench.dashboard --accounts {args.accounts} --lines "
            f"{args.lines} --events {args.events}` (bench/dashboard.py). Targets: p99 < 200 ms "
            "per level, page < 2 s, 50 connections < 5 % of a core."
        )
        append_section("Dashboard", [how, "", text])


def cli() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--accounts", type=int, default=1000)
    p.add_argument("--lines", type=int, default=10)
    p.add_argument("--services", type=int, default=10)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--rate", type=int, default=50, help="top-ups a second in the live phase")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--append", action="store_true", help="append the result to bench/RESULTS.md")
    asyncio.run(main(p.parse_args()))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        cli()
