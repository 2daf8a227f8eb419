"""The dashboard in a real browser (Playwright driving Debian's Chromium; docs/dashboard.md).

The test starts an OCS with billing on its own Redis, loads the demo's subscribers and
hierarchy plus one account whose bill is computed by hand, signs in through the login page,
drills national -> region -> agency -> account by clicking, checks the figures shown against
the API's, sees a live figure change after a charge through the native protocol, downloads
an invoice PDF, and checks that an agency user cannot reach another agency's account by URL or
by API. No console errors, no failed requests. Screenshots go to ``OCS_UI_SHOTS`` (or the
test's temporary directory).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from secure import ADMIN, NATIVE_KEY, SECURE

from ocs.auth.credentials import new_user
from ocs.billing import model as M
from ocs.config import Settings
from ocs.demo.billing import load_hierarchy, now_in_zone
from ocs.demo.dataset import load_demo_data
from ocs.service import Running, run_ocs
from ocs.store.security import SecurityStore
from protocols.native import NativeClient
from tests.contract import contract_trace

CHROMIUM = os.environ.get("OCS_CHROMIUM", "/usr/bin/chromium")
try:
    from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    async_playwright = None  # type: ignore[assignment]

pytestmark = [
    pytest.mark.skipif(async_playwright is None, reason="playwright is not installed"),
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason=f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)",
    ),
    pytest.mark.timeout(240),
]

KNOWN = "MIN-HEA-KNOWN"
#: By hand: one leased line of 1,234.50 a month in arrears for the whole period, 19 % VAT
#: exclusive: tax 234.555 -> 234.56 (half-even to the cent), total 1,469.06.
KNOWN_TOTAL_MICRO = 1_469_060_000
USERS = {"finance": ("finance", None), "viewer": ("agency-viewer", "MIN-HEA")}
PASSWORD = "browser-test-password"


@dataclass
class Watch:
    """What went wrong on a page: console errors, page errors, failed or refused requests."""

    errors: list[str] = field(default_factory=list)
    #: URL parts whose 404 is the point of the step (another agency's account).
    expected_404: tuple[str, ...] = ()

    def attach(self, page: Page) -> None:
        def console(msg: ConsoleMessage) -> None:
            if msg.type == "error" and not (
                "404" in msg.text and self.expected_404 and "Failed to load resource" in msg.text
            ):
                self.errors.append(f"console: {msg.text}")

        page.on("console", console)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on(
            "requestfailed",
            lambda r: (
                None
                if r.url.endswith("/v1/dashboard/live")
                else self.errors.append(f"failed: {r.url} {r.failure}")
            ),
        )

        def response(r: Any) -> None:
            if r.status >= 400 and not (
                r.status == 404 and any(x in r.url for x in self.expected_404)
            ):
                self.errors.append(f"HTTP {r.status}: {r.url}")

        page.on("response", response)


def previous_period(now: datetime) -> tuple[str, str]:
    first = (now.replace(day=1) - timedelta(days=1)).replace(day=1)
    return f"{first.year:04d}-{first.month:02d}", first.date().isoformat()


@pytest.fixture
async def ocs(redis_url: str, tmp_path: Path) -> AsyncIterator[Running]:
    settings = Settings(
        native_port=0, http_port=0, validity=600, grace=10, sweep_interval=0.5,
        redis_url=redis_url, data_dir=str(tmp_path), billing=True,
        billing_db_url=f"sqlite:///{tmp_path / 'billing.db'}", **SECURE,
    )  # fmt: skip
    async with run_ocs(settings) as running:
        await running.store.client.execute("FLUSHALL")
        await running.tariffs.publish_thresholds()
        yield running


async def load(ocs: Running) -> tuple[list[Any], str]:
    """The demo's data and the known account; the previous period, billed."""
    assert ocs.billing is not None
    now = now_in_zone()
    subs = await load_demo_data(ocs.store, 80, int(time.time() * 1000), ocs.tariffs.rater.book)
    engine = ocs.billing.engine
    await asyncio.to_thread(load_hierarchy, engine, subs, now)
    period, first_day = previous_period(now)

    def known() -> None:
        with engine.begin() as c:
            M.create_account(c, {"code": KNOWN, "name": "Ministry of Health, audit office",
                                 "agency": "MIN-HEA", "tax_profile": "VAT19",
                                 "timezone": "Europe/Berlin"}, None)  # fmt: skip
            M.put_service(c, KNOWN, "KN-1", {"description": "Leased line KN-1",
                                             "monthly_charge": "1234.50", "charging": "arrears",
                                             "start_date": first_day, "sla_tier": "silver"},
                          None)  # fmt: skip
            M.put_contract(c, KNOWN, {"start_date": first_day}, None)

    await asyncio.to_thread(known)
    security = SecurityStore(ocs.store.client)
    for name, (role, agency) in USERS.items():
        record = await asyncio.to_thread(
            new_user, name, PASSWORD, role, agency, int(time.time() * 1000)
        )
        await security.put_user(record)
    return subs, period


async def api(http: aiohttp.ClientSession, base: str, path: str, token: str = ADMIN) -> Any:
    async with http.get(base + path, headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200, (path, r.status, await r.text())
        return await r.json()


async def until(what: str, check: Any, limit: float = 20.0) -> Any:
    """Await ``check()`` until it is truthy (a deadline, not a sleep-and-hope)."""
    deadline = time.monotonic() + limit
    while True:
        got = await check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def login(page: Page, base: str, user: str) -> None:
    await page.goto(f"{base}/ui/")
    await page.fill("input[name=username]", user)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_selector("[data-testid=kpis]")


async def kpi_micro(page: Page, name: str) -> str | None:
    return await page.get_attribute(f"[data-kpi={name}]", "data-micro")


async def kpi_text(page: Page, name: str) -> str:
    return (await page.inner_text(f"[data-kpi={name}] .value")).strip()


async def test_drill_down_live_figures_invoice_and_agency_portal(
    ocs: Running, tmp_path: Path
) -> None:
    assert async_playwright is not None
    shots = Path(os.environ.get("OCS_UI_SHOTS", tmp_path))
    await asyncio.to_thread(shots.mkdir, parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{ocs.http_port}"
    subs, period = await load(ocs)
    lines = [s.msisdn for s in subs if s.plan == "gov-payu"]
    async with (
        aiohttp.ClientSession(trace_configs=[contract_trace()]) as http,
        NativeClient("127.0.0.1", ocs.native.port, key=NATIVE_KEY) as native,
    ):
        # Usage through the native protocol, then billing has it (pending) and the feed
        # knows the hierarchy (it reloads it every few seconds).
        r = await native.reserve("b-use", lines[0], "voice", seq=0, units=120)
        assert r.ok, r
        assert (await native.release("b-use", 1, used=95, subscriber=lines[0])).ok

        async def billed_and_known() -> bool:
            async with http.get(f"{base}/v1/dashboard/account/{KNOWN}",
                                headers={"Authorization": f"Bearer {ADMIN}"}) as resp:  # fmt: skip
                if resp.status != 200:
                    return False
            nat = await api(http, base, "/v1/dashboard/national/NAT")
            return bool(nat["kpis"]["micro"]["pending"] > 0)

        await until("billing and the live feed to know the data", billed_and_known)
        issue = {"period": period, "account": KNOWN}
        for path, body in (("/v1/billing/runs", {"period": period}),
                           ("/v1/billing/runs/issue", issue)):  # fmt: skip
            async with http.post(base + path, json=body,
                                 headers={"Authorization": f"Bearer {ADMIN}"}) as resp:  # fmt: skip
                assert resp.status == 200, await resp.text()
        invoice = (await api(http, base, f"/v1/billing/invoices?account={KNOWN}"))["items"][0]
        assert invoice["micro"]["total"] == KNOWN_TOTAL_MICRO, invoice

        async with async_playwright() as pw:
            browser: Browser = await pw.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
            )
            try:
                await operator_story(browser, http, native, base, period, lines, shots)
                await agency_story(browser, http, base, shots)
            finally:
                await browser.close()


async def operator_story(
    browser: Browser, http: aiohttp.ClientSession, native: NativeClient, base: str,
    period: str, lines: list[str], shots: Path,
) -> None:  # fmt: skip
    watch = Watch()
    ctx = await browser.new_context(viewport={"width": 1366, "height": 900}, accept_downloads=True)
    page = await ctx.new_page()
    watch.attach(page)
    t0 = time.monotonic()
    await login(page, base, "finance")
    interactive = time.monotonic() - t0
    assert page.url.endswith("/ui/national/NAT"), page.url
    token = await page.evaluate("sessionStorage.getItem('ocs.access')")
    # The period in the URL (bookmarkable): the billed period.
    await page.goto(f"{base}/ui/national/NAT?period={period}")
    await page.wait_for_selector("[data-testid=children] tbody tr")
    nat = await api(http, base, f"/v1/dashboard/national/NAT?period={period}", token)
    for k in ("billed", "drafted", "pending", "lad", "penalties"):
        assert await kpi_micro(page, k) == str(nat["kpis"]["micro"][k]), k
    assert (await page.inner_text("[data-testid=title]")).startswith(nat["name"])
    shown = await page.eval_on_selector_all(
        "[data-testid=children] tbody tr", "rows => rows.map(r => r.dataset.code)"
    )
    assert shown == [c["code"] for c in nat["children"]]
    await page.screenshot(path=str(shots / "national.png"), full_page=True)

    # Live: a session opened through the native protocol shows within the feed's tick.
    before = int(await kpi_text(page, "open_sessions"))
    r = await native.reserve("b-live", lines[1], "voice", seq=0, units=60)
    assert r.ok, r
    t1 = time.monotonic()
    await page.wait_for_function(
        f"document.querySelector('[data-kpi=open_sessions] .value').innerText.trim() == "
        f"'{before + 1}'",
        timeout=5000,
    )
    live_delay = time.monotonic() - t1
    assert live_delay < 3.0, live_delay
    assert (await native.release("b-live", 1, used=10, subscriber=lines[1])).ok

    # Drill down by clicking: region -> agency -> account.
    await page.click("[data-testid=children] tbody tr[data-code=RG-N]")
    await page.wait_for_selector("[data-testid=children] tbody tr[data-code=MIN-HEA]")
    assert "/ui/region/RG-N" in page.url and f"period={period}" in page.url
    region = await api(http, base, f"/v1/dashboard/region/RG-N?period={period}", token)
    assert await kpi_micro(page, "billed") == str(region["kpis"]["micro"]["billed"])
    await page.click("[data-testid=children] tbody tr[data-code=MIN-HEA]")
    await page.wait_for_selector(f"[data-testid=children] tbody tr[data-code={KNOWN}]")
    agency = await api(http, base, f"/v1/dashboard/agency/MIN-HEA?period={period}", token)
    row = page.locator(f"[data-testid=children] tbody tr[data-code={KNOWN}] td[data-col=billed]")
    assert await row.get_attribute("data-micro") == str(KNOWN_TOTAL_MICRO)
    assert await kpi_micro(page, "billed") == str(agency["kpis"]["micro"]["billed"])
    await page.click(f"[data-testid=children] tbody tr[data-code={KNOWN}]")
    await page.wait_for_selector("[data-testid=invoices] tbody tr")
    crumbs = await page.inner_text("[data-testid=breadcrumb]")
    assert "North" in crumbs and "Ministry of Health" in crumbs, crumbs
    cell = page.locator("[data-testid=invoices] tbody tr td.num").first
    assert await cell.get_attribute("data-micro") == str(KNOWN_TOTAL_MICRO)
    assert (await cell.inner_text()).strip() == "€1,469.06"
    assert await kpi_micro(page, "billed") == str(KNOWN_TOTAL_MICRO)
    await page.wait_for_selector("[data-testid=pending] tbody tr")
    # The audit view of the invoice's line: billing's explain, recomputed to the micro-unit.
    await page.click("[data-testid=invoices] tbody tr a")
    await page.click("[data-testid=explain]")
    await page.wait_for_selector("[data-testid=audit] pre")
    assert '"matches": true' in await page.inner_text("[data-testid=audit] pre")
    await page.screenshot(path=str(shots / "account.png"), full_page=True)
    async with page.expect_download() as dl:
        await page.click("[data-testid=pdf]")
    path = shots / "invoice.pdf"
    await (await dl.value).save_as(path)
    assert path.read_bytes().startswith(b"%PDF")
    if shutil.which("pdftotext"):
        done = await asyncio.to_thread(
            subprocess.run, ["pdftotext", str(path), "-"], capture_output=True, text=True,
            check=True,
        )  # fmt: skip
        text = done.stdout
        assert "1,469.06" in text or "1469.06" in text, text
    # A tablet's width: the same page, no horizontal overflow of the page itself.
    await page.set_viewport_size({"width": 820, "height": 1180})
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 820, width
    await page.click("[data-testid=logout]")
    await page.wait_for_selector("[data-testid=login]")
    await ctx.close()
    assert not watch.errors, watch.errors
    print(f"page interactive in {interactive:.2f} s; live figure after {live_delay:.2f} s")


async def agency_story(
    browser: Browser, http: aiohttp.ClientSession, base: str, shots: Path
) -> None:
    other = "MIN-FIN-01"
    watch = Watch(expected_404=(f"/{other}",))
    ctx = await browser.new_context(viewport={"width": 1024, "height": 800})
    page = await ctx.new_page()
    watch.attach(page)
    await login(page, base, "viewer")
    assert page.url.endswith("/ui/agency/MIN-HEA"), page.url
    codes = await page.eval_on_selector_all(
        "[data-testid=children] tbody tr", "rows => rows.map(r => r.dataset.code)"
    )
    assert KNOWN in codes and all(c.startswith("MIN-HEA") for c in codes), codes
    await page.screenshot(path=str(shots / "agency-portal.png"), full_page=True)
    # Another agency's account by URL: an error message, none of its figures.
    await page.goto(f"{base}/ui/account/{other}")
    await page.wait_for_selector("[data-testid=error]")
    assert "no account" in (await page.inner_text("[data-testid=error]")).lower()
    assert await page.locator("[data-testid=kpis]").count() == 0
    # ... and by API, with the same user's token.
    token = await page.evaluate("sessionStorage.getItem('ocs.access')")
    for path in (f"/v1/dashboard/account/{other}", f"/v1/billing/accounts/{other}",
                 "/v1/dashboard/national/NAT"):  # fmt: skip
        async with http.get(base + path, headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 404, (path, r.status)
    await ctx.close()
    assert not watch.errors, watch.errors
