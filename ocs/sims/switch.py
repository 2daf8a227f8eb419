"""A switch (MSC) simulator for hot billing: writes CDR files the way a switch without a
real-time charging link does (issue 6, docs/cdr-formats.md).

Calls and SMS of the given subscribers arrive at a chosen rate (a Poisson process); each
becomes a record when it ends (MOC, MTC, MO and MT SMS; some calls unanswered, some while
roaming). Records go into the open file of the current interval; the switch closes a file at
the end of each interval (a minute by default) and names it by its closing time (TS 32.297
naming, ``ocs.mediation.naming``). When a file would pass the size limit within an interval it
is closed early and the interval goes on in a new file: every part of that interval carries
its part number. A file is written as ``<name>.tmp`` and renamed when closed, so a collector
never sees a file half written; empty intervals write no file.

Two ways in: the pure functions ``make_records`` and ``write_files`` (deterministic, for tests
and benchmarks), and ``SwitchSimulator.run`` (wall clock, into a directory and optionally onto
an FTP server), which ``ocs switch-sim`` drives.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ocs.mediation.formats import ascii as ascii_format
from ocs.mediation.formats import ber, ts32297
from ocs.mediation.formats.record import CAUSE_NORMAL, CAUSE_UNSUCCESSFUL, CdrRecord
from ocs.mediation.naming import TEMP_SUFFIX, Format, format_name, parse_name, temp_name
from ocs.mediation.usage import Direction
from ocs.sims.traffic import DESTINATIONS, LOCATIONS
from ocs.tasks import cancel_and_wait
from tariffs.digits import ascii_float, ascii_int, is_digits

log = logging.getLogger(__name__)

#: Who calls the subscribers (MTC) and sends them SMS (MT), as the network presents them.
CALLERS = (
    ("+4930 1234567", 30), ("+49171 2345678", 40), ("+4989 7654321", 15),
    ("+33 1 23456789", 8), ("", 7),  # "" : the caller withheld the number
)  # fmt: skip
#: The share of each kind of record.
MIX = ((Direction.MOC, 55), (Direction.MTC, 25), (Direction.SMS_MO, 15), (Direction.SMS_MT, 5))


@dataclass(frozen=True)
class Traffic:
    """What the simulated switch sees: whose records, how many, which switch."""

    subscribers: Sequence[str]
    #: Records per second (calls and SMS together).
    rate: float = 200.0
    #: Mean conversation time of answered calls, seconds (exponential).
    mean_holding: float = 100.0
    #: Share of call attempts that are not answered.
    unanswered: float = 0.08
    #: The MSC's own number (international digits): recordingEntity and mSCAddress.
    msc: str = "491720000001"
    #: The switch's local time zone: record time stamps and file names use its offset.
    tz: tzinfo = field(default_factory=lambda: ZoneInfo("Europe/Berlin"))


def imsi_of(msisdn: str) -> str:
    """A stable IMSI for a demo MSISDN: home network 262 01 and the last 10 digits."""
    return "26201" + msisdn[-10:].rjust(10, "0")


class RecordMaker:
    """Draws records one after another from a seeded random generator."""

    def __init__(self, traffic: Traffic, seed: int = 1) -> None:
        if not traffic.subscribers:
            raise ValueError("no subscribers to simulate")
        self.t = traffic
        self.rng = random.Random(seed)
        self.call_reference = self.rng.randrange(1, 1 << 24)
        self._kinds = [k for k, _ in MIX], [w for _, w in MIX]
        self._dest = [d for d, _ in DESTINATIONS], [w for _, w in DESTINATIONS]
        self._callers = [c for c, _ in CALLERS], [w for _, w in CALLERS]
        self._where = [w for w, _ in LOCATIONS], [p for _, p in LOCATIONS]

    def _pick(self, table: tuple[list[Any], list[int]]) -> Any:
        return self.rng.choices(table[0], table[1])[0]

    def record(self, ended: datetime) -> CdrRecord:
        """The record of a call or SMS that ended (or was sent) at ``ended``."""
        rng, t = self.rng, self.t
        kind: Direction = self._pick(self._kinds)
        msisdn = rng.choice(t.subscribers)
        self.call_reference = (self.call_reference + 1) & 0xFFFFFFFF
        common: dict[str, Any] = {
            "direction": kind,
            "served_msisdn": msisdn,
            "served_imsi": imsi_of(msisdn),
            "mcc_mnc": self._pick(self._where),
            "lac": rng.randrange(1, 0xFFFF),
            "ci": rng.randrange(1, 0xFFFF),
            "msc": t.msc,
            "call_reference": self.call_reference,
        }
        ended = ended.replace(microsecond=0)
        if kind in (Direction.SMS_MO, Direction.SMS_MT):
            other = self._pick(self._dest if kind is Direction.SMS_MO else self._callers)
            return CdrRecord(**common, other=other, seizure=ended, answer=None, release=None,
                             duration=0)  # fmt: skip
        other = self._pick(self._dest if kind is Direction.MOC else self._callers)
        ring = rng.randrange(2, 15)
        if rng.random() < t.unanswered:
            seizure = ended - timedelta(seconds=ring)
            return CdrRecord(**common, other=other, seizure=seizure, answer=None,
                             release=ended, duration=ring, cause=CAUSE_UNSUCCESSFUL)  # fmt: skip
        duration = max(1, round(rng.expovariate(1 / t.mean_holding)))
        answer = ended - timedelta(seconds=duration)
        return CdrRecord(**common, other=other, seizure=answer - timedelta(seconds=ring),
                         answer=answer, release=ended, duration=duration,
                         cause=CAUSE_NORMAL)  # fmt: skip

    def arrivals(self, start: float, end: float) -> Iterator[float]:
        """Poisson arrival times (Unix seconds) in [start, end) at the traffic's rate."""
        now = start
        while True:
            now += self.rng.expovariate(self.t.rate)
            if now >= end:
                return
            yield now


def make_records(
    traffic: Traffic, *, start: datetime, count: int, seed: int = 1
) -> list[CdrRecord]:
    """``count`` records ending from ``start`` on at the traffic's rate (deterministic)."""
    maker = RecordMaker(traffic, seed)
    t0 = start.timestamp()
    out: list[CdrRecord] = []
    for at in maker.arrivals(t0, math.inf):
        if len(out) == count:
            break
        out.append(maker.record(datetime.fromtimestamp(at, traffic.tz)))
    return out


def encode(record: CdrRecord, fmt: Format) -> bytes:
    """One record as its file holds it (a BER record, or an ASCII line)."""
    if fmt == "ber":
        return ber.encode_record(record)
    return ascii_format.encode_line(record).encode("ascii")


@dataclass(frozen=True)
class Layout:
    """How the switch names, frames, rotates and splits its files."""

    node: str = "MSC01"
    fmt: Format = "ber"
    #: BER only: the TS 32.297 file framing (file header, CDR headers); else plain records.
    framed: bool = True
    #: A file closes at every multiple of this many seconds (Unix time): 60 = each minute.
    rotate_seconds: float = 60.0
    #: A file that would grow past this many octets is closed and the interval continues in
    #: the next part.
    max_file_bytes: int = 1_000_000
    node_ip: str = "192.0.2.1"

    def __post_init__(self) -> None:
        if self.rotate_seconds <= 0:
            raise ValueError("rotate_seconds must be > 0")
        if self.max_file_bytes < 256:
            raise ValueError("max_file_bytes must be at least 256")
        format_name(self.node, 0, datetime.now().astimezone(), fmt=self.fmt)  # checks node

    def header_size(self) -> int:
        if self.fmt == "ascii":
            return len(ascii_format.header())
        return _FILE_HEADER if self.framed else 0

    def framing(self) -> int:
        """The octets each record adds besides its own encoding."""
        return _CDR_HEADER if self.fmt == "ber" and self.framed else 0


_FILE_HEADER = len(ts32297.file_header(body_length=0, cdr_count=0, sequence=0,
                                       opened=datetime.now().astimezone(),
                                       last_append=datetime.now().astimezone()))  # fmt: skip
_CDR_HEADER = len(ts32297.cdr_header(0))


def interval_end(t: float, rotate_seconds: float) -> float:
    """The end of the rotation interval that holds Unix time ``t``."""
    return (math.floor(t / rotate_seconds) + 1) * rotate_seconds


class OpenFile:
    """The file the switch is writing: ``<name>.tmp`` in ``directory``, renamed on close."""

    def __init__(
        self, layout: Layout, directory: Path, rc: int, closes: datetime, part: int,
        opened: datetime,
    ) -> None:  # fmt: skip
        self.layout, self.directory = layout, directory
        self.rc, self.closes, self.part, self.opened = rc, closes, part, opened
        self.count = 0
        self.last_append = opened
        self.tmp = directory / temp_name(self.name(split=part > 1))
        self._fh: BinaryIO = open(self.tmp, "wb")  # noqa: SIM115 - closed in close()
        if layout.fmt == "ascii":
            self._fh.write(ascii_format.header().encode("ascii"))
        elif layout.framed:
            self._fh.write(b"\0" * _FILE_HEADER)  # rewritten on close
        self.size = layout.header_size()

    def name(self, *, split: bool) -> str:
        lay = self.layout
        return format_name(lay.node, self.rc, self.closes, self.part, lay.fmt, split=split)

    def fits(self, encoded: bytes) -> bool:
        return self.count == 0 or (
            self.size + len(encoded) + self.layout.framing() <= self.layout.max_file_bytes
        )

    def add(self, encoded: bytes, at: datetime) -> None:
        if self.layout.fmt == "ber" and self.layout.framed:
            self._fh.write(ts32297.cdr_header(len(encoded)))
        self._fh.write(encoded)
        self.size += len(encoded) + self.layout.framing()
        self.count += 1
        self.last_append = at

    def close(self, *, split: bool, reason: int) -> Path:
        """Finish the file (the TS 32.297 header gets its final counts), make it durable,
        rename it to its closed name; returns the closed file's path."""
        fh = self._fh
        lay = self.layout
        if lay.fmt == "ber" and lay.framed:
            fh.seek(0)
            fh.write(
                ts32297.file_header(
                    body_length=self.size - _FILE_HEADER, cdr_count=self.count,
                    sequence=self.rc, opened=self.opened, last_append=self.last_append,
                    closure_reason=reason, node_ip=lay.node_ip,
                )
            )  # fmt: skip
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        final = self.directory / self.name(split=split)
        os.replace(self.tmp, final)
        return final

    def discard(self) -> None:
        self._fh.close()
        self.tmp.unlink(missing_ok=True)


class FileWriter:
    """Puts records into files by the layout's rotation and split rules.

    ``add(record, at)`` for each record in time order, ``tick(now)`` to close the interval
    that ended, ``close()`` at the end. Every closed file is passed to ``on_closed``.
    """

    def __init__(
        self, layout: Layout, directory: Path, tz: tzinfo, *, first_rc: int = 1,
        on_closed: Callable[[Path, int], None] | None = None,
    ) -> None:  # fmt: skip
        self.layout, self.directory, self.tz = layout, directory, tz
        self.rc = first_rc
        self.on_closed = on_closed or (lambda path, count: None)
        self.current: OpenFile | None = None
        self._interval_end = 0.0
        self._split = False

    def _open(self, at: float, part: int) -> OpenFile:
        end = self._interval_end
        closes = datetime.fromtimestamp(end, self.tz).replace(second=0, microsecond=0)
        f = OpenFile(self.layout, self.directory, self.rc, closes, part,
                     datetime.fromtimestamp(at, self.tz))  # fmt: skip
        self.rc += 1
        return f

    def _close(self, reason: int) -> None:
        f = self.current
        if f is None:
            return
        self.current = None
        if f.count == 0:
            f.discard()
            return
        path = f.close(split=self._split, reason=reason)
        self.on_closed(path, f.count)

    def tick(self, now: float) -> None:
        """Close the current file if its interval ended by ``now``."""
        if self.current is not None and now >= self._interval_end:
            self._close(ts32297.CLOSE_TIME)

    def add(self, record: CdrRecord, at: float) -> None:
        self.tick(at)
        encoded = encode(record, self.layout.fmt)
        if self.current is None:
            self._interval_end = interval_end(at, self.layout.rotate_seconds)
            self._split = False
            self.current = self._open(at, 1)
        elif not self.current.fits(encoded):
            part = self.current.part + 1
            self._split = True
            self._close(ts32297.CLOSE_SIZE)
            self.current = self._open(at, part)
        self.current.add(encoded, datetime.fromtimestamp(at, self.tz))

    def close(self, reason: int = ts32297.CLOSE_NORMAL) -> None:
        """Close the open file (as a switch does at shutdown: a normal closure)."""
        self._close(reason)


def write_files(
    records: Iterable[CdrRecord], directory: Path, layout: Layout, tz: tzinfo, *,
    first_rc: int = 1,
) -> list[Path]:  # fmt: skip
    """Write ``records`` (in time order; each at its release or sending time) into closed
    files in ``directory`` by the layout's rules; the closed files' paths, in close order."""
    closed: list[Path] = []
    w = FileWriter(layout, directory, tz, first_rc=first_rc,
                   on_closed=lambda p, n: closed.append(p))  # fmt: skip
    for r in records:
        w.add(r, (r.release or r.seizure).timestamp())
    w.close(ts32297.CLOSE_TIME)  # the last interval is over too
    return closed


def next_running_count(directory: Path, node: str) -> int:
    """One more than the highest running count of ``node``'s files in ``directory`` (closed or
    open), 1 when there are none: a restarted switch goes on counting, so its new files never
    take the names of old ones."""
    top = 0
    if directory.is_dir():
        for p in directory.iterdir():
            name = p.name.removesuffix(TEMP_SUFFIX)
            try:
                f = parse_name(name)
            except ValueError:
                continue
            if f.node == node:
                top = max(top, f.running_count)
    return top + 1


# -- FTP ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FtpTarget:
    """Where closed files are uploaded: ``ftp://user:password@host:port/directory``."""

    host: str
    port: int = 21
    user: str = "anonymous"
    password: str = "anon@"
    directory: str = "/"

    @classmethod
    def parse(cls, url: str) -> FtpTarget:
        u = urlsplit(url)
        if u.scheme != "ftp" or not u.hostname:
            raise ValueError(f"not an ftp:// URL: {url!r}")
        return cls(
            host=u.hostname, port=u.port or 21, user=unquote(u.username or "anonymous"),
            password=unquote(u.password or "anon@"), directory=u.path or "/",
        )  # fmt: skip


async def upload(target: FtpTarget, path: Path) -> None:
    """Upload a closed file as ``<name>.tmp``, then rename it to ``<name>`` (atomic on the
    server: a collector that skips .tmp names never reads it half written)."""
    import aioftp

    remote = target.directory.rstrip("/") + "/" + path.name
    async with aioftp.Client.context(target.host, target.port, target.user,
                                     target.password) as client:  # fmt: skip
        data = await asyncio.to_thread(path.read_bytes)
        async with client.upload_stream(temp_name(remote)) as stream:
            await stream.write(data)
        await client.rename(temp_name(remote), remote)


# -- the running simulator ------------------------------------------------------------------------


@dataclass
class SimStats:
    records: int = 0
    files: int = 0
    uploaded: int = 0
    upload_errors: int = 0


class SwitchSimulator:
    """Writes records at the traffic's rate on the wall clock, rotating and splitting files
    by the layout, into ``directory``; with ``ftp``, uploads each closed file there (and
    keeps the local copy only when ``keep_local``)."""

    def __init__(
        self, traffic: Traffic, layout: Layout, directory: Path, *, seed: int = 1,
        ftp: FtpTarget | None = None, keep_local: bool = True, first_rc: int = 1,
        on_file: Callable[[Path, int], None] | None = None, tick: float = 0.05,
    ) -> None:  # fmt: skip
        self.traffic, self.layout, self.directory = traffic, layout, directory
        self.maker = RecordMaker(traffic, seed)
        self.ftp, self.keep_local = ftp, keep_local
        self.on_file = on_file or (lambda path, count: None)
        self.tick = min(tick, layout.rotate_seconds / 4)
        self.stats = SimStats()
        self._closed: asyncio.Queue[Path] = asyncio.Queue()
        self.writer = FileWriter(layout, directory, traffic.tz, first_rc=first_rc,
                                 on_closed=self._file_closed)  # fmt: skip

    def _file_closed(self, path: Path, count: int) -> None:
        self.stats.files += 1
        self._closed.put_nowait(path)
        self.on_file(path, count)

    async def _uploader(self) -> None:
        assert self.ftp is not None
        while True:
            path = await self._closed.get()
            try:
                await upload(self.ftp, path)
            except Exception as exc:  # OSError, and aioftp's own errors (StatusCodeError...)
                self.stats.upload_errors += 1
                log.warning("upload of %s failed: %s", path.name, exc)
            else:
                self.stats.uploaded += 1
                if not self.keep_local:
                    path.unlink(missing_ok=True)
            finally:
                self._closed.task_done()

    async def run(self, *, max_files: int | None = None, duration: float | None = None) -> None:
        """Write records until ``max_files`` files are closed, ``duration`` seconds passed, or
        the task is cancelled; the open file is closed (not lost) on the way out."""
        self.directory.mkdir(parents=True, exist_ok=True)
        uploader = asyncio.create_task(self._uploader()) if self.ftp else None
        started = last = time.time()
        try:
            while True:
                now = time.time()
                tz = self.traffic.tz
                for at in self.maker.arrivals(last, now):
                    self.writer.add(self.maker.record(datetime.fromtimestamp(at, tz)), at)
                    self.stats.records += 1
                last = now
                self.writer.tick(now)
                if max_files is not None and self.stats.files >= max_files:
                    break
                if duration is not None and now - started >= duration:
                    break
                await asyncio.sleep(self.tick)
        finally:
            self.writer.close()
            if uploader is not None:
                await self._drain(uploader)

    async def _drain(self, uploader: asyncio.Task[None]) -> None:
        """Let the uploader finish what is queued (bounded), then stop it."""
        try:
            async with asyncio.timeout(30):
                await self._closed.join()
        except TimeoutError:
            log.warning("%d closed files not uploaded", self._closed.qsize())
        await cancel_and_wait(uploader)


# -- command line ---------------------------------------------------------------------------------


def subscribers_from(spec: str) -> list[str]:
    """``491700000000-491700000299`` (a range), ``4917...,4917...`` (a list), or both."""
    out: list[str] = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        lo, sep, hi = item.partition("-")
        if not is_digits(lo) or (sep and not is_digits(hi)):
            raise ValueError(f"not an MSISDN or a range of them: {item!r}")
        if not sep:
            out.append(lo)
            continue
        if len(lo) != len(hi) or int(hi) < int(lo):
            raise ValueError(f"bad range {item!r}: both ends need as many digits, low first")
        if int(hi) - int(lo) >= 10_000_000:
            raise ValueError(f"range {item!r} is too large")
        out.extend(str(n).zfill(len(lo)) for n in range(int(lo), int(hi) + 1))
    if not out:
        raise ValueError("no subscribers")
    return out


def register(sub: Any) -> None:
    """Add ``ocs switch-sim`` to the command line (ocs/cli.py ``_COMMAND_MODULES``)."""
    p: argparse.ArgumentParser = sub.add_parser(
        "switch-sim",
        help="write CDR files like a switch: MOC/MTC/SMS records, a file a minute",
        description="Simulate an MSC that writes call records to files (hot billing): records "
        "of the given subscribers at a chosen rate, one closed file per interval named per "
        "TS 32.297, split into numbered parts past a size limit, ASN.1 BER (TS 32.298, with "
        "or without the TS 32.297 framing) or ASCII; written as <name>.tmp and renamed on "
        "close, into a directory and optionally uploaded to an FTP server. "
        "See docs/cdr-formats.md.",
    )
    p.add_argument("--dir", required=True, help="directory for the closed files (the spool)")
    p.add_argument("--ftp", help="also upload each closed file: ftp://user:pass@host:port/dir")
    p.add_argument("--no-keep", action="store_true",
                   help="with --ftp: remove the local file once uploaded")  # fmt: skip
    p.add_argument("--node", default="MSC01", help="the switch's node id (default MSC01)")
    p.add_argument("--format", choices=["ber", "ascii"], default="ber", help="default ber")
    p.add_argument("--plain", action="store_true",
                   help="BER without the TS 32.297 file framing")  # fmt: skip
    p.add_argument("--rate", type=ascii_float, default=200.0,
                   help="records per second (default 200)")  # fmt: skip
    p.add_argument("--rotate-seconds", type=ascii_float, default=60.0,
                   help="close a file every N seconds (default 60)")  # fmt: skip
    p.add_argument("--max-file-kb", type=ascii_int, default=1000,
                   help="split a file past this size, kB (default 1000)")  # fmt: skip
    p.add_argument("--subscribers", default="491700000000-491700000299",
                   help="MSISDNs: a range lo-hi and/or a comma list "
                   "(default: the demo's 300)")  # fmt: skip
    p.add_argument("--msc", default="491720000001", help="the MSC's own number")
    p.add_argument("--tz", default="Europe/Berlin", help="the switch's time zone")
    p.add_argument("--seed", type=ascii_int, default=1)
    p.add_argument("--first-rc", type=ascii_int,
                   help="the first running count "
                   "(default: on from the node's files in --dir)")  # fmt: skip
    p.add_argument("--duration", type=ascii_float, help="stop after N seconds")
    p.add_argument("--files", type=ascii_int, help="stop after N closed files")
    p.set_defaults(func=cmd_switch_sim)


def cmd_switch_sim(args: argparse.Namespace) -> int:
    from ocs.clikit import CliError

    try:
        tz = ZoneInfo(args.tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise CliError(f"unknown time zone {args.tz!r}") from None
    try:
        traffic = Traffic(subscribers_from(args.subscribers), rate=args.rate, msc=args.msc,
                          tz=tz)  # fmt: skip
        if args.rate <= 0:
            raise ValueError("--rate must be > 0")
        layout = Layout(
            node=args.node, fmt=args.format, framed=not args.plain,
            rotate_seconds=args.rotate_seconds, max_file_bytes=args.max_file_kb * 1000,
        )  # fmt: skip
        ftp = FtpTarget.parse(args.ftp) if args.ftp else None
    except ValueError as exc:
        raise CliError(str(exc)) from None

    def report(path: Path, count: int) -> None:
        print(f"closed {path.name}: {count} records, {path.stat().st_size:,} octets", flush=True)

    directory = Path(args.dir)
    first_rc = args.first_rc or next_running_count(directory, layout.node)
    sim = SwitchSimulator(
        traffic, layout, directory, seed=args.seed, ftp=ftp, keep_local=not args.no_keep,
        first_rc=first_rc, on_file=report,
    )  # fmt: skip
    print(
        f"switch {layout.node}: {traffic.rate:g} records/s for {len(traffic.subscribers)} "
        f"subscribers, a {layout.fmt} file every {layout.rotate_seconds:g} s into {args.dir}"
        + (f" and ftp://{ftp.host}:{ftp.port}{ftp.directory}" if ftp else ""),
        flush=True,
    )

    async def main() -> None:
        task = asyncio.create_task(sim.run(max_files=args.files, duration=args.duration))
        loop = asyncio.get_running_loop()
        if sys.platform != "win32":
            loop.add_signal_handler(signal.SIGINT, task.cancel)
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    s = sim.stats
    print(f"{s.records} records in {s.files} files" + (f", {s.uploaded} uploaded" if ftp else ""))
    return 0
