"""``ocs demo``: an embedded Redis, the demo data, the OCS and the switch simulator, with a live
view in the terminal, until Ctrl-C (or ``duration`` seconds). Nothing is left running after."""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import shutil
import signal
import socket
import sys
import time
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final, TextIO
from zoneinfo import ZoneInfo

from ocs.billing.usage import GROUP
from ocs.charging.engine import wall_clock_ms
from ocs.config import Settings, is_loopback
from ocs.demo.billing import AGENCIES, bill_period, load_hierarchy, now_in_zone
from ocs.demo.dataset import OVERDRAFT, load_demo_data, overdrawn
from ocs.lineage import Lineage
from ocs.mediation.formats.record import CdrRecord
from ocs.mediation.ftpd import LocalFtpServer
from ocs.mediation.pipeline import FileReport, MediationConfig, run_mediation
from ocs.mediation.usage import Direction
from ocs.money import format_money
from ocs.service import Running, redis_for, run_ocs
from ocs.sims.hlr import Applied, HlrSimulator, bound_port, serve
from ocs.sims.msc import SsfConfig, connect_msc, describe, run_calls, traffic
from ocs.sims.switch import (
    FtpTarget,
    Layout,
    Traffic,
    imsi_of,
    next_running_count,
    upload,
    write_files,
)
from ocs.sims.switch import SwitchSimulator as CdrSwitch
from ocs.sims.traffic import SwitchSimulator, Tally
from ocs.store.redis_client import PipelinedRedis
from ocs.store.security import SecurityStore
from ocs.tasks import cancel_and_wait
from protocols.native import NativeClient


class LiveView:
    """Prints a sample of what happens and a status line: refusals and cut-offs share one
    budget of lines per second and everything else another, so neither drowns the other."""

    def __init__(self, out: TextIO, lines_per_second: float = 4.0) -> None:
        self.out = out
        self.rate = lines_per_second
        self.tokens = {True: lines_per_second, False: lines_per_second}
        self.last = {True: time.monotonic(), False: time.monotonic()}

    def line(self, text: str) -> None:
        kind = "refused" in text or "cut off" in text
        now = time.monotonic()
        self.tokens[kind] = min(self.rate, self.tokens[kind] + (now - self.last[kind]) * self.rate)
        self.last[kind] = now
        if self.tokens[kind] >= 1:
            self.tokens[kind] -= 1
            print(text, file=self.out, flush=True)

    def status(self, elapsed: float, t: Tally, prev: int, interval: float) -> None:
        rate = (t.requests - prev) / interval
        print(
            f"--- {elapsed:5.1f}s  {t.requests} requests ({rate:.0f}/s)  calls {t.calls}  "
            f"data {t.sessions}  sms {t.sms}  granted {t.granted}  refused {t.refused}  "
            f"denied {t.denied}  errors {t.errors}  charged {format_money(t.charged)}",
            file=self.out,
            flush=True,
        )


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


async def run_demo(
    settings: Settings,
    *,
    subscribers: int = 300,
    callers: int = 48,
    speed: float = 200.0,
    duration: float | None = None,
    out: TextIO = sys.stdout,
) -> Tally:
    settings = replace(settings, data_dir=f"{settings.data_dir}/demo")
    configured_secret = bool(settings.secret_key)
    settings = demo_credentials(settings)
    # Enterprise billing runs in the demo, in its own SQLite file unless a database is given.
    settings = replace(
        settings, billing=True,
        billing_db_url=settings.billing_db_url or f"sqlite:///{settings.data_dir}/billing.db",
    )  # fmt: skip
    if settings.http_port and not _port_free(settings.bind, settings.http_port):
        # The demo must run beside anything: take a free port and say which.
        print(
            f"Port {settings.http_port} is in use: the admin API moves to a free port "
            "(below); use that port in the README's curl examples.",
            file=out,
            flush=True,
        )
        settings = replace(settings, http_port=0)
    settings = _demo_camel(settings, out)
    if not settings.diameter_peers and not settings.diameter_tls_ca and is_loopback(settings.bind):
        # A Diameter client on this machine can try the demo at once (a real deployment lists
        # its peers; docs/security.md); nothing off the machine reaches a loopback listener.
        settings = replace(settings, diameter_peers="*")
    view = LiveView(out)
    async with contextlib.AsyncExitStack() as stack:
        hlr = None
        if not settings.provisioning_url:
            # The HLR is simulated, and told of bars and unbars like a real one would be.
            hlr = HlrSimulator(secret="demo-secret", on_apply=lambda a: _show_hlr(a, out))
            runner = await serve(hlr, "127.0.0.1", 0)
            stack.push_async_callback(runner.cleanup)
            settings = replace(
                settings,
                provisioning_url=f"http://127.0.0.1:{bound_port(runner)}",
                provisioning_secret="demo-secret",
            )
        # The switch's FTP server (where MSC01 and MSC02 drop their CDR files).
        data = Path(settings.data_dir)
        fresh = settings.redis_url is None  # the demo's own Redis: each run starts afresh
        if fresh:  # the old files go too
            for leftover in ("switch", "ftp", "warehouse", "archive", "feeds", "invoices"):
                shutil.rmtree(data / leftover, ignore_errors=True)
            if settings.billing_db_url.startswith("sqlite:///"):
                db = Path(settings.billing_db_url.removeprefix("sqlite:///"))
                for f in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
                    f.unlink(missing_ok=True)
        (data / "ftp" / "cdr").mkdir(parents=True, exist_ok=True)
        ftpd = stack.enter_context(LocalFtpServer(data / "ftp"))
        if fresh:
            # Emptied before the OCS starts: emptied under its consumers, their groups would
            # vanish (a NOGROUP warning from each, then each creates its group again).
            url = await stack.enter_async_context(redis_for(settings))
            async with PipelinedRedis.from_url(url) as client:
                await client.execute("FLUSHALL")
                if not configured_secret:
                    # The secret generated for this run is kept in Redis, where a fresh
                    # install keeps the one it generates: `ocs audit verify` and `ocs auth`
                    # against this Redis then use the same keys as the OCS.
                    await SecurityStore(client).generated_secret(settings.secret_key)
            settings = replace(settings, redis_url=url)
        ocs = await stack.enter_async_context(run_ocs(settings))
        return await _run(
            ocs, settings, view, out, subscribers, callers, speed, duration, ftpd.url("cdr"), hlr,
            fresh=fresh,
        )  # fmt: skip
    raise AssertionError("unreachable")


#: The demo MSC's point code (ocs/sims/msc.py's default), the one the demo's gsmSCF admits.
DEMO_MSC_POINT_CODE = SsfConfig().point_code


def _demo_camel(settings: Settings, out: TextIO) -> Settings:
    """CAMEL in the demo: the gsmSCF on SCTP over UDP (a free UDP port of this process) that
    admits only the demo MSC's point code; none where libusrsctp is missing."""
    if settings.camel_transport:
        return settings
    from protocols.sigtran.usrsctp import SctpUnavailable, _Library

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        udp = int(s.getsockname()[1])
    try:
        _Library.get(udp)
    except SctpUnavailable as exc:
        print(f"CAMEL     not in this demo: {exc}", file=out, flush=True)
        return settings
    return replace(settings, camel_transport="sctp-udp", camel_udp_port=udp,
                   camel_peers=settings.camel_peers or f"pc:{DEMO_MSC_POINT_CODE}")  # fmt: skip


def _admitted(settings: Settings) -> str:
    """Which Diameter peers the demo's listener admits, in words."""
    if settings.diameter_peers == "*" and is_loopback(settings.bind):
        return "any peer on this machine; set OCS_DIAMETER_PEERS to list them"
    return settings.diameter_peers or "no peer: set OCS_DIAMETER_PEERS"


async def _camel_calls(ocs: Running, settings: Settings, out: TextIO, subscribers: list[str],
                       pause: float) -> None:  # fmt: skip
    """A few CAMEL calls of the demo's subscribers from the simulated MSC (``ocs msc-sim``),
    two at a time, beside the native and Diameter traffic."""
    make = traffic(subscribers, seed=14)
    udp = settings.camel_udp_port
    async with connect_msc("127.0.0.1", settings.camel_port, udp_port=udp, remote_udp_port=udp,
                           config=SsfConfig(point_code=DEMO_MSC_POINT_CODE)) as msc:  # fmt: skip
        for _ in range(6):
            for o in await run_calls(msc, [make(), make()], 2):
                print(f"CAMEL     {describe(o)}", file=out, flush=True)
            await asyncio.sleep(pause)


#: The demo's users, one per role (agency-viewer limited to the Ministry of Health, MIN-HEA).
DEMO_USERS: tuple[tuple[str, str, str | None], ...] = (
    ("admin", "admin", None),
    ("operator", "operator", None),
    ("finance", "finance", None),
    ("tariffs", "tariff-manager", None),
    ("auditor", "auditor", None),
    ("moh-viewer", "agency-viewer", "MIN-HEA"),
)
#: The key id the demo's switch simulator authenticates with on the native protocol.
DEMO_NATIVE_KEY = "demo-switch"


def demo_credentials(settings: Settings) -> Settings:
    """The demo's secrets, generated for this run where the settings give none: the
    bootstrap admin token, the master secret, a native-protocol key for the simulator."""
    return replace(
        settings,
        admin_token=settings.admin_token or secrets.token_urlsafe(24),
        secret_key=settings.secret_key or secrets.token_hex(32),
        native_keys=settings.native_keys or f"{DEMO_NATIVE_KEY}:{secrets.token_hex(16)}",
    )


async def _demo_users(ocs: Running) -> list[tuple[str, str, str]]:
    """Create the demo users with fresh passwords: (name, role, password)."""
    from ocs.auth.credentials import new_user

    store = SecurityStore(ocs.store.client)
    out = []
    for name, role, agency in DEMO_USERS:
        password = secrets.token_urlsafe(9)
        record = await asyncio.to_thread(new_user, name, password, role, agency, wall_clock_ms())
        await store.put_user(record)
        out.append((name, role + (f" ({agency})" if agency else ""), password))
    return out


def _show_hlr(a: Applied, out: TextIO) -> None:
    what = {"none": "unbarred", "outgoing": "barred outgoing", "all": "barred all"}[a.barring]
    print(f"HLR       {a.msisdn} {what} (command {a.command_id})", file=out, flush=True)


#: The subscriber whose balance the demo drives below its limits and back (prepaid-basic).
STORY_MSISDN = "4919000000001"
#: Subscribers charged only from CDR files (hot billing), beside the story's.
CDR_SUBSCRIBERS = [f"49190000000{i:02d}" for i in range(2, 22)]
#: The demo archive's AES-256 key (a demo has no secrets): `ocs archive verify --dir
#: .ocs/demo/archive --key 00...00` (64 zeros).
DEMO_ARCHIVE_KEY = bytes(32)


async def _story(
    ocs: Running,
    out: TextIO,
    pause: float,
    spool: Path,
    ftp: FtpTarget,
    charged: asyncio.Event,
    hlr: HlrSimulator | None,
) -> None:
    """A subscriber on prepaid-basic whose calls arrive as CDRs (hot billing): a switch writes
    a file with two long calls, the mediation charges them whatever the balance, the balance
    passes -5.00, the HLR bars outgoing calls; a top-up lifts the bar."""

    def say(text: str) -> None:
        print(f"STORY     {text}", file=out, flush=True)

    say(f"{STORY_MSISDN} on prepaid-basic has 1.00; its calls arrive as CDRs (hot billing)")
    await asyncio.sleep(pause)
    tz = ZoneInfo("Europe/Berlin")
    end = datetime.now(tz).replace(microsecond=0)
    calls = []
    for i, (to, seconds) in enumerate([("+13125550100", 900), ("+447700900123", 1200)]):
        release = end  # (both in one file: the same minute)
        answer = release - timedelta(seconds=seconds)
        calls.append(
            CdrRecord(
                Direction.MOC, STORY_MSISDN, imsi_of(STORY_MSISDN), to,
                answer - timedelta(seconds=5), answer, release, seconds, "26201", 4660, 12345,
                "491720000002", 7000 + i,
            )
        )  # fmt: skip
    layout = Layout(node="MSC02", rotate_seconds=60)
    first_rc = next_running_count(spool, "MSC02")
    paths = await asyncio.to_thread(write_files, calls, spool, layout, tz, first_rc=first_rc)
    for path in paths:
        await upload(ftp, path)
    say(f"switch MSC02 closed {paths[-1].name}: 15 min to +1 312..., 20 min to +44 7700...")
    # The top-up comes once the file is charged and the HLR has barred the subscriber.
    async with asyncio.timeout(60):
        await charged.wait()
        if hlr is not None:
            await hlr.wait_for(lambda: hlr.barring(STORY_MSISDN) == "outgoing")
    await asyncio.sleep(pause)
    ans = await ocs.store.credit(
        STORY_MSISDN, kind="topup", amount=50_000_000, reference=f"story-{wall_clock_ms()}",
        note="voucher", now=wall_clock_ms(),
    )  # fmt: skip
    say(f"top-up 50.00; balance {format_money(ans.balance)}")


async def _bill(ocs: Running, settings: Settings, out: TextIO) -> None:
    """Let billing read the last usage from the outbox, then bill this month."""
    assert ocs.billing is not None
    outbox = ocs.billing.consumer.outbox
    for _ in range(100):  # at most ~10 s
        if not (await outbox.lag(GROUP) or await outbox.pending_count(GROUP)):
            break
        await asyncio.sleep(0.1)
    print("", file=out)
    lineage = Lineage(f"{settings.data_dir}/lineage", settings.lineage_url)  # (as mediation's)
    await asyncio.to_thread(bill_period, ocs.billing.engine, Path(settings.data_dir),
                            now_in_zone(), out, lineage)  # fmt: skip


def _show_file(r: FileReport, out: TextIO, charged: asyncio.Event) -> None:
    if r.switch == "MSC02":
        charged.set()
    took = (r.done_at - r.collected_at) / 1000
    print(f"CDR file  {r.file}: {r.charged} records charged {format_money(r.amount)}, "
          f"{r.rejected} rejected, in {took:.1f} s", file=out, flush=True)  # fmt: skip


async def _hot_billing(
    ocs: Running, settings: Settings, out: TextIO, spool: Path, ftp_url: str,
    charged: asyncio.Event,
) -> None:  # fmt: skip
    """A switch without real-time charging (MSC01) writes a CDR file every 5 s for the CDR
    subscribers and puts it on the FTP server; the mediation collects each file from there as
    it closes, and charges it."""
    for i, m in enumerate([STORY_MSISDN, *CDR_SUBSCRIBERS]):
        await ocs.store.create_subscriber(
            m, plan="prepaid-basic", balance=1_000_000 if i == 0 else (2 + i % 5) * 1_000_000,
            credit_limit=0, state="active", now=wall_clock_ms(),
        )  # fmt: skip
    switch = CdrSwitch(
        Traffic(CDR_SUBSCRIBERS, rate=6.0, mean_holding=90.0),
        Layout(node="MSC01", rotate_seconds=5.0),
        spool,
        first_rc=next_running_count(spool, "MSC01"),
        ftp=FtpTarget.parse(ftp_url),
        keep_local=False,
    )
    config = MediationConfig(
        poll_interval=0.5,
        warehouse_dir=f"{settings.data_dir}/warehouse",
        archive_dir=f"{settings.data_dir}/archive",
        archive_key=DEMO_ARCHIVE_KEY,
        lineage_dir=f"{settings.data_dir}/lineage",
    )
    await asyncio.gather(
        switch.run(),
        run_mediation(ocs.engine, ocs.tariffs.rater, ftp_url, config,
                      on_file=lambda r: _show_file(r, out, charged)),
    )  # fmt: skip


#: Seconds between the demo's top-ups, and how many subscribers each tops up (among a random
#: sample, those barred or nearly out of credit, the emptiest first): without them, a network
#: left running for minutes runs dry and shows mostly refusals.
KEEP_ALIVE_EVERY: Final = 5.0
KEEP_ALIVE_SAMPLE: Final = 40
KEEP_ALIVE_TOPUPS: Final = 8
KEEP_ALIVE_AMOUNT: Final = 20_000_000  # 20.00
#: Credit (balance + credit limit - held) under which a subscriber is topped up: one who can
#: still pay for a minute or two is left to spend on (the overdraft ones down to their bar).
KEEP_ALIVE_BELOW: Final = 1_000_000  # 1.00


async def _keep_alive(ocs: Running, msisdns: list[str], out: TextIO, every: float) -> None:
    """Every few seconds, top up (through the store's credit script, as the API would) the
    subscribers of a random sample who are barred, then those nearly out of credit. The
    overdraft subscribers' real-time calls take them past -5.00, where the scripts bar their
    outgoing calls and the HLR is told; a top-up takes them back above 0.00 and lifts the bar."""
    rng = random.Random(7)
    n = 0
    while True:
        await asyncio.sleep(every)
        sample = rng.sample(msisdns, min(KEEP_ALIVE_SAMPLE, len(msisdns)))
        accounts = [a for m in sample if (a := await ocs.store.get_account(m)) is not None]
        low = [a for a in accounts if a.barring != "none" or a.available < KEEP_ALIVE_BELOW]
        # The barred first (a customer barred buys a voucher), then the emptiest.
        low.sort(key=lambda a: (a.barring == "none", a.available))
        due = low[:KEEP_ALIVE_TOPUPS]
        if not due:
            continue
        n += 1
        for a in due:
            await ocs.store.credit(a.msisdn, kind="topup", amount=KEEP_ALIVE_AMOUNT,
                                   reference=f"demo-keep-alive:{n}:{a.msisdn}",
                                   note="demo keep-alive", now=wall_clock_ms())  # fmt: skip
        barred = sum(a.barring != "none" for a in due)
        print(f"TOP-UP    {len(due)} subscribers low on credit topped up "
              f"{format_money(KEEP_ALIVE_AMOUNT)} each"
              + (f", {barred} of them barred (the top-up lifts the bar)" if barred else ""),
              file=out, flush=True)  # fmt: skip


async def _run(
    ocs: Running,
    settings: Settings,
    view: LiveView,
    out: TextIO,
    subscribers: int,
    callers: int,
    speed: float,
    duration: float | None,
    ftp_url: str,
    hlr: HlrSimulator | None,
    *,
    fresh: bool,
) -> Tally:
    subs = await load_demo_data(ocs.store, subscribers, wall_clock_ms(), ocs.tariffs.rater.book)
    users = await _demo_users(ocs)
    api = f"http://{settings.bind}:{ocs.http_port}"
    if ocs.billing is not None:
        n = await asyncio.to_thread(load_hierarchy, ocs.billing.engine, subs, now_in_zone())
        print(f"BILLING   {n} enterprise accounts of {len(AGENCIES)} agencies bill their "
              "gov-payu lines' usage, fixed charges, LAD and SLA penalties", file=out)  # fmt: skip
    overdraft = sum(map(overdrawn, subs))
    print(f"BARRING   {overdraft} prepaid subscribers start in overdraft (credit limit "
          f"{format_money(OVERDRAFT)}): their calls take them past -5.00, where charging bars "
          "their outgoing calls and the HLR is told; a top-up lifts the bar", file=out)  # fmt: skip
    print(
        f"OCS demo: {len(subs)} subscribers loaded; native protocol on port "
        f"{ocs.native.port}, Diameter Gy on port {ocs.diameter_port} (admitting "
        f"{_admitted(settings)}), admin API on {api}\n"
        f"Redis: {ocs.redis_url}"
        + (
            " (embedded; each run, and each `make run`, starts from fresh data)\n"
            if fresh
            else "\n"
        )
        + "Credentials of this run (docs/security.md):\n"
        f"  admin token (OCS_ADMIN_TOKEN): {settings.admin_token}\n"
        f"  try: curl -H 'Authorization: Bearer {settings.admin_token}' "
        f"{api}/v1/subscribers/{subs[1].msisdn}\n"
        f"  native protocol key (OCS_NATIVE_KEYS): {settings.native_keys}\n"
        f"  dashboard: {api}/ui/ (sign in as one of these users)\n"
        f"  users (POST {api}/v1/auth/token with username and password):\n"
        + "".join(f"    {name:<11} {role:<22} {pw}\n" for name, role, pw in users)
        + "Ctrl-C to stop.\n",
        file=out,
        flush=True,
    )
    key_id, secret = next(iter(settings.native_key_map.items()))
    async with NativeClient(settings.bind, ocs.native.port, key=(key_id, secret)) as client:
        sim = SwitchSimulator(
            client,
            [s.msisdn for s in subs],
            callers=callers,
            speed=speed,
            report=view.line,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(sim.run())
        # A short demo tells the story faster, so that it ends before the demo does.
        pause = 3.0 if duration is None else min(3.0, max(0.2, duration / 8))
        spool = Path(settings.data_dir) / "switch"
        # Both switches write here: the story's (MSC02) must not count on MSC01's task to
        # have made it first (when it had not, the story's file had nowhere to go).
        spool.mkdir(parents=True, exist_ok=True)
        ftp = FtpTarget.parse(ftp_url)
        charged = asyncio.Event()  # the story's CDR file is charged
        billing = asyncio.create_task(_hot_billing(ocs, settings, out, spool, ftp_url, charged))
        story = asyncio.create_task(_story(ocs, out, pause, spool, ftp, charged, hlr))
        camel = None
        if ocs.camel is not None:
            callers_ = [s.msisdn for s in subs[:40]]
            camel = asyncio.create_task(_camel_calls(ocs, settings, out, callers_, pause))
        every = KEEP_ALIVE_EVERY if duration is None else min(KEEP_ALIVE_EVERY, duration / 6)
        alive = asyncio.create_task(_keep_alive(ocs, [s.msisdn for s in subs], out, every))
        start = prev_t = time.monotonic()
        deadline = None if duration is None else start + duration
        prev_n = 0
        try:
            while not stop.is_set():
                timeout = 2.0
                if deadline is not None:
                    timeout = min(timeout, deadline - time.monotonic())
                if timeout > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout)
                now = time.monotonic()
                view.status(now - start, sim.tally, prev_n, max(now - prev_t, 1e-3))
                prev_n, prev_t = sim.tally.requests, now
                if deadline is not None and now >= deadline - 0.01:
                    break
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            # Stop them all (the MSC simulator's association first, the CDR switch last, so
            # that it closes and uploads its open file while the FTP server and the OCS are
            # still up), then say what failed: a task's error must not leave the others to
            # be cancelled after the OCS is gone.
            # What a task raises only as it is stopped (an FTP upload cut in the middle
            # answering its QUIT out of turn) is said in one line, not raised.
            failed: list[BaseException] = []
            for what, t in (("the top-ups", alive), ("the CAMEL calls", camel),
                            ("the switch simulator", task), ("the story", story),
                            ("hot billing", billing)):  # fmt: skip
                if t is None:
                    continue
                ended = t.done()
                try:
                    await cancel_and_wait(t)
                except Exception as exc:
                    if ended:
                        failed.append(exc)
                    else:
                        print(f"Stopping: {what} ended with {type(exc).__name__}: {exc}",
                              file=out, flush=True)  # fmt: skip
            if failed:
                raise failed[0]
    low = sorted(
        [(a.balance, m) for m in [s.msisdn for s in subs[:40]]
         if (a := await ocs.store.get_account(m)) is not None]
    )[:5]  # fmt: skip
    if ocs.billing is not None:
        await _bill(ocs, settings, out)
    print("\nLowest balances among the first 40 subscribers:", file=out)
    for bal, m in low:
        print(f"  {m}  {format_money(bal)}", file=out)
    print("Stopping: draining requests, stopping the OCS and its Redis.", file=out, flush=True)
    return sim.tally
