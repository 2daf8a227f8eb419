"""``ocs mediation run|status`` and ``ocs archive verify|extract`` (docs/hot-billing.md).

The mediation is a process of its own beside the OCS, on the same Redis: it builds the same
charging core as ``ocs serve`` (:func:`ocs.service.charging_core`) and debits through it.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

from ocs.clikit import CliError
from ocs.clikit import run as _run
from ocs.clikit import tune_gc as _tune_gc
from ocs.config import Settings, load_settings
from ocs.logs import setup as setup_logging
from ocs.mediation.archive import parse_key, read_entry, verify
from ocs.money import format_money
from tariffs.digits import ascii_float, ascii_int, is_digits


def _settings(args: argparse.Namespace) -> Settings:
    poll, window = getattr(args, "mediation_poll", None), getattr(args, "mediation_window", None)
    if poll is not None and poll <= 0:
        raise CliError("--poll: must be > 0 seconds")
    if window is not None and window < 1:
        raise CliError("--window: must be at least 1")
    overrides = {
        k: getattr(args, k, None)
        for k in (
            "redis_url",
            "plans_dir",
            "mediation_poll",
            "mediation_window",
            "warehouse_dir",
            "archive_dir",
            "archive_key",
        )
    }
    return load_settings(os.environ, getattr(args, "config", None), overrides)


def _key(text: str, where: str) -> bytes:
    try:
        return parse_key(text)
    except ValueError as exc:
        raise CliError(f"{where}: {exc}") from None


# -- ocs mediation run ---------------------------------------------------------------------------


async def _mediate(settings: Settings, source: str, args: argparse.Namespace) -> None:
    from ocs.mediation.collect import SourceUnavailable, open_source
    from ocs.mediation.pipeline import Mediation, MediationConfig
    from ocs.metrics import Metrics
    from ocs.service import charging_core
    from ocs.telemetry import count_file, serving

    config = MediationConfig(
        poll_interval=settings.mediation_poll,
        window=settings.mediation_window,
        max_call_duration=settings.mediation_max_call_duration,
        duration_tolerance=settings.mediation_duration_tolerance,
        stable_size=args.stable_size,
        warehouse_dir=None if args.no_warehouse else settings.warehouse_dir,
        archive_dir=None if args.no_archive else settings.archive_dir,
        archive_key=None if args.no_archive else _key(settings.archive_key, "OCS_ARCHIVE_KEY"),
        lineage_dir=settings.lineage_dir or None,
        lineage_url=settings.lineage_url,
    )
    try:
        src = open_source(source)
    except ValueError as exc:
        raise CliError(f"--source: {exc}") from None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await src.check()
    except SourceUnavailable as exc:
        raise CliError(f"--source: {exc}") from None
    try:
        async with charging_core(settings) as core, src:
            logging.getLogger("ocs").info(
                "mediation: %s -> redis %s (warehouse %s, archive %s)", src.label,
                core.redis_url, config.warehouse_dir or "off", config.archive_dir or "off",
            )  # fmt: skip
            metrics = Metrics()
            on_file = functools.partial(count_file, metrics)
            mediation = Mediation(core.engine, core.tariffs.rater, src, config, on_file=on_file)
            if args.metrics_port is None:
                await mediation.run(stop)
            else:
                async with serving(metrics, settings.bind, args.metrics_port) as port:
                    logging.getLogger("ocs").info("mediation: metrics on %s:%d/metrics",
                                                  settings.bind, port)  # fmt: skip
                    await mediation.run(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not settings.redis_url:
        raise CliError("the mediation charges through the OCS's Redis: give --redis-url or "
                       "OCS_REDIS_URL")  # fmt: skip
    if not args.no_archive and not settings.archive_key:
        raise CliError("the retention archive needs a key: set OCS_ARCHIVE_KEY (64 hex digits, "
                       "e.g. from `openssl rand -hex 32`) or give --no-archive")  # fmt: skip
    setup_logging(settings.log_level, settings.log_format)
    _tune_gc()
    _run(_mediate(settings, args.source, args))
    return 0


# -- ocs mediation status ------------------------------------------------------------------------


async def _status(url: str, limit: int) -> dict[str, Any]:
    from ocs.api.render import iso_time  # (times as the API gives them: one convention)
    from ocs.mediation.collect import Ledger
    from ocs.store.cluster import hot_client
    from ocs.store.redis_client import RedisClientError

    try:
        async with hot_client(url) as client:
            ledger = Ledger(client)
            totals = await ledger.totals()
            open_files = await ledger.open_files()
            recent = await ledger.recent(limit)
    except (RedisClientError, OSError) as exc:
        raise CliError(f"cannot read the mediation ledger at {url}: {exc}") from None
    return {
        "totals": {**totals, "amount": format_money(totals["amount"], 6)},
        "in_progress": open_files,
        "recent": [
            {
                "file": e.name,
                "state": str(e.state),
                "switch": e.switch,
                "source": e.source,
                "size": e.size,
                "records": e.records,
                "charged": e.charged,
                "rejected": e.rejected,
                "repeated": e.repeated,
                "amount": format_money(e.amount, 6),
                "attempts": e.attempts,
                "duplicate_of": e.duplicate_of or None,
                "collected_at": iso_time(e.collected_at),
                "done_at": iso_time(e.done_at),
            }
            for e in recent
        ],
    }


def cmd_status(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not settings.redis_url:
        raise CliError("give --redis-url or OCS_REDIS_URL (the Redis the mediation uses)")
    status = _run(_status(settings.redis_url, args.limit))
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    t = status["totals"]
    print(f"files done {t['files']}, records {t['records']} ({t['charged']} charged, "
          f"{t['rejected']} rejected, {t['repeated']} charged before), amount {t['amount']}, "
          f"duplicate files {t['duplicates']} (not charged)")  # fmt: skip
    if status["in_progress"]:
        print("in progress: " + ", ".join(status["in_progress"]))
    for e in status["recent"]:
        print(f"  {e['file']}  {e['state']:<9} {e['records']:>6} records  {e['charged']:>6} "
              f"charged  {e['rejected']:>4} rejected  {e['amount']:>14}  collected "
              f"{e['collected_at'] or '-'}  done {e['done_at'] or '-'}"
              + (f"  duplicate of {e['duplicate_of']}" if e["duplicate_of"] else ""))  # fmt: skip
    return 0


# -- ocs archive ---------------------------------------------------------------------------------


def cmd_archive(args: argparse.Namespace) -> int:
    settings = _settings(args)
    root = Path(args.dir or settings.archive_dir)
    text = args.key or settings.archive_key
    key = _key(text, "--key" if args.key else "OCS_ARCHIVE_KEY") if text else None
    if args.action == "verify":
        if not root.is_dir():
            raise CliError(f"no archive at {root}")
        result = verify(root, key)
        if result.problem is not None:
            raise CliError(f"archive {root}: {result.problem}")
        how = "decrypted and authenticated" if key else "chain only, not decrypted (no key)"
        print(f"OK {root}: {result.entries} entries, {how}; head {result.head}")
        return 0
    # extract
    if key is None:
        raise CliError("extract needs the key: --key or OCS_ARCHIVE_KEY")
    matches = sorted(root.glob(f"*/{int(args.seq):010d}.*.arc")) if is_digits(args.seq) else []
    if not matches:
        matches = sorted(p for p in root.glob("*/*.arc") if p.name.split(".", 1)[1][:-4]
                         == args.seq)  # fmt: skip
    if not matches:
        raise CliError(f"no archive entry {args.seq!r} in {root}")
    try:
        manifest, plain = read_entry(matches[0], key)
    except (OSError, ValueError) as exc:
        raise CliError(f"{matches[0]}: {exc}") from None
    out = Path(args.out or manifest["source"])
    out.write_bytes(plain)
    print(f"entry {manifest['seq']}: {manifest['source']} ({len(plain)} bytes) -> {out}")
    return 0


# -- parser ----------------------------------------------------------------------------------


def register(sub: Any) -> None:
    """Add ``mediation`` and ``archive`` to the ``ocs`` command line."""
    p = sub.add_parser("mediation", help="hot billing: charge CDR files from switches")
    acts = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = acts.add_parser(
        "run",
        help="collect, charge, export and archive CDR files until Ctrl-C",
        description="Poll a directory or an FTP server for closed CDR files and charge their "
        "records through the OCS's Redis (docs/hot-billing.md).",
    )
    a.add_argument("--source", required=True,
                   help="a directory, or ftp://user:password@host:port/path")  # fmt: skip
    a.add_argument("--config", help="TOML config file (or OCS_CONFIG)")
    a.add_argument("--redis-url", help="the OCS's Redis (or OCS_REDIS_URL); required")
    a.add_argument("--plans-dir", help="extra directory of TOML tariff plans")
    a.add_argument("--poll", dest="mediation_poll", type=ascii_float, metavar="S",
                   help="seconds between polls (OCS_MEDIATION_POLL, default 1)")  # fmt: skip
    a.add_argument("--window", dest="mediation_window", type=ascii_int, metavar="N",
                   help="debits in flight (OCS_MEDIATION_WINDOW, default 256)")  # fmt: skip
    a.add_argument("--metrics-port", type=ascii_int, metavar="PORT",
                   help="serve Prometheus /metrics on this port (0: any free one)")  # fmt: skip
    a.add_argument(
        "--stable-size",
        action="store_true",
        help="take a closed file only when its size is the same in two polls",
    )
    a.add_argument(
        "--warehouse",
        dest="warehouse_dir",
        metavar="DIR",
        help="Parquet warehouse directory (OCS_WAREHOUSE_DIR, .ocs/warehouse)",
    )
    a.add_argument("--no-warehouse", action="store_true", help="do not write Parquet")
    a.add_argument("--archive", dest="archive_dir", metavar="DIR",
                   help="retention archive directory (OCS_ARCHIVE_DIR, .ocs/archive)")  # fmt: skip
    a.add_argument("--no-archive", action="store_true",
                   help="run without the retention archive (no key needed)")  # fmt: skip
    a.set_defaults(func=cmd_run)
    a = acts.add_parser("status", help="the ledger: totals, files in progress, recent files")
    a.add_argument("--config", help="TOML config file (or OCS_CONFIG)")
    a.add_argument("--redis-url", help="the Redis the mediation uses (or OCS_REDIS_URL)")
    a.add_argument("--limit", type=ascii_int, default=20, help="recent files to show (default 20)")
    a.add_argument("--json", action="store_true", help="print JSON")
    a.set_defaults(func=cmd_status)

    p = sub.add_parser("archive", help="check or read the CDR retention archive")
    acts = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (
        ("verify", "check the hash chain, HEAD and (with the key) every entry"),
        ("extract", "decrypt one entry (by sequence number or file name)"),
    ):
        a = acts.add_parser(name, help=text)
        a.add_argument("--config", help="TOML config file (or OCS_CONFIG)")
        a.add_argument("--dir", help="archive directory (OCS_ARCHIVE_DIR, default .ocs/archive)")
        a.add_argument("--key", help="AES-256 key, 64 hex digits (or OCS_ARCHIVE_KEY)")
        if name == "extract":
            a.add_argument("seq", help="sequence number or source file name")
            a.add_argument("--out", help="where to write it (default: the source file's name)")
        a.set_defaults(func=cmd_archive)
