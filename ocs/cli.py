# PYTHON_ARGCOMPLETE_OK
"""The ``ocs`` command line: serve, demo, subscriber administration, events, tariffs and
rating, embedded Redis.

Administration commands are clients of the admin HTTP API of a running OCS (``--api``, or
``OCS_API_URL``, default ``http://127.0.0.1:8080``), sending ``--token`` (or
``OCS_API_TOKEN``) as their bearer token; ``ocs rate --local`` and ``ocs tariffs
check`` need no server. Errors print as one line on stderr (a plan file's problems, one line
each) and exit non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ocs import __version__
from ocs.clikit import CliError, PlanProblems, completion, set_token, spread_option
from ocs.clikit import api_url as _api
from ocs.clikit import common_options as _common
from ocs.clikit import print_json as _print
from ocs.clikit import request as _request
from ocs.clikit import run as _run
from ocs.clikit import settings as _settings
from ocs.clikit import tune_gc as _tune_gc
from ocs.config import ConfigError
from ocs.logs import setup as setup_logging
from ocs.redis_server import RedisServerError
from ocs.store.errors import StoreUnavailable
from tariffs.digits import ascii_float, ascii_int

#: Modules with a ``register(subparsers)`` that adds their command group to ``ocs``.
_COMMAND_MODULES: tuple[str, ...] = (
    "ocs.subscriber_cli",
    "ocs.config_cli",
    "ocs.provisioning.cli",
    "ocs.mediation.cli",
    "ocs.sims.switch",
    "ocs.sims.msc",
    "ocs.billing.cli",
    "ocs.auth.cli",
)


# -- serve / demo / redis ---------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from ocs.service import serve_forever

    settings = _settings(args)
    workers = settings.workers
    # With workers, every line says which process wrote it.
    several = workers > 1 or args.ready_fd is not None
    setup_logging(settings.log_level, settings.log_format, pid=several)
    if args.ready_fd is not None:  # a worker started by the supervisor (ocs/supervisor.py)
        from ocs.supervisor import serve_worker

        _tune_gc()
        _run(serve_worker(settings, args.ready_fd))
        return 0
    if workers > 1:
        from ocs.supervisor import supervise

        names = ("config", "data_dir", "plans_dir")
        extra = [f"--{n.replace('_', '-')}={getattr(args, n)}" for n in names if getattr(args, n)]
        return supervise(settings, workers, extra)
    _tune_gc()
    _run(serve_forever(settings))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ocs.demo.run import run_demo

    settings = _settings(args)
    logging.basicConfig(level="WARNING", format="%(levelname)s %(message)s")
    _run(
        run_demo(
            settings,
            subscribers=args.subscribers,
            callers=args.callers,
            speed=args.speed,
            duration=args.duration,
        )
    )
    return 0


def cmd_redis(args: argparse.Namespace) -> int:
    from ocs.redis_server import EmbeddedRedis

    settings = _settings(args)
    server = EmbeddedRedis(Path(settings.data_dir) / "redis", port=args.port)
    server.start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"redis-server {server.version} at {server.url} (data in {server.data_dir}); "
          "Ctrl-C to stop", flush=True)  # fmt: skip
    try:
        stop.wait()
    finally:
        server.stop()
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    """Export the outbox streams to JSON-lines files and trim what was exported."""
    from ocs.store.journal import Journal

    settings = _settings(args)
    if not settings.redis_url:
        raise CliError("--redis-url (or OCS_REDIS_URL) is required: the OCS's Redis")
    url = settings.redis_url
    keep_ms = int(args.keep_hours * 3_600_000)

    from ocs.lineage import DatasetRef, Lineage, file_dataset

    lineage = Lineage(settings.lineage_dir or None, settings.lineage_url)
    streams = DatasetRef(_redis_namespace(url), "ocs:{b*}:outbox")

    async def main() -> None:
        journal = Journal(url, args.dir)
        try:
            while True:
                now = int(datetime.now(UTC).timestamp() * 1000)
                try:
                    stats = await journal.export(keep_ms=keep_ms, now_ms=now)
                except StoreUnavailable as exc:
                    if args.once:
                        raise CliError(str(exc)) from None
                    print(f"ocs: {exc}; trying again", file=sys.stderr, flush=True)
                else:
                    print(f"exported {stats.exported} events to {args.dir}, trimmed "
                          f"{stats.trimmed} from Redis", flush=True)  # fmt: skip
                    if stats.exported:
                        await asyncio.to_thread(lineage.emit, "ocs.outbox.export", [streams],
                                                [file_dataset(args.dir)])  # fmt: skip
                if args.once:
                    return
                await asyncio.sleep(args.interval)
        finally:
            await journal.close()

    _run(main())
    return 0


def _redis_namespace(url: str) -> str:
    """An OpenLineage namespace for a Redis: its URL without credentials or database (for a
    cluster, its nodes, sorted)."""
    from urllib.parse import urlsplit

    from ocs.store.cluster import is_cluster_url, parse_cluster_url
    from ocs.store.sentinel import is_sentinel_url, parse_sentinel_url

    if is_cluster_url(url):
        nodes = sorted(f"{h}:{p}" for h, p in parse_cluster_url(url).nodes)
        return "redis+cluster://" + ",".join(nodes)
    if is_sentinel_url(url):
        sentinel = parse_sentinel_url(url)
        nodes = sorted(f"{h}:{p}" for h, p in sentinel.sentinels)
        return "redis+sentinel://" + ",".join(nodes) + "/" + sentinel.master
    u = urlsplit(url)
    return f"{u.scheme}://{u.hostname or ''}" + (f":{u.port}" if u.port else "")


def cmd_lineage(args: argparse.Namespace) -> int:
    from ocs.lineage import show

    directory = args.dir or _settings(args).lineage_dir
    wanted = args.dataset if ":" in args.dataset else str(Path(args.dataset).absolute())
    lines = show(directory, wanted)
    if not lines:
        raise CliError(f"no lineage record of {args.dataset} in {directory}")
    print("\n".join(lines))
    return 0


# -- admin API client (ocs.clikit) ----------------------------------------------------------


# -- rating and tariffs -------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _rate_time(text: str | None) -> datetime | None:
    """``--at``: ISO 8601 with an offset (``Z`` or ``+01:00``), as the API wants it: a time
    without one is refused, here as there, rather than read in some zone."""
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"--at: not a time: {text!r} (e.g. 2026-11-23T08:59:30+01:00)") from None
    if t.tzinfo is None:
        raise CliError(f"--at: {text!r} has no UTC offset: add one, e.g. {text}Z or "
                       f"{text}+01:00")  # fmt: skip
    return t


def _explain(answer: Mapping[str, Any]) -> str:
    """The text of ``Rating.explain()``, from the JSON of ``POST /v1/rate``."""
    cur = answer["currency"]
    out = [
        f"{answer['plan']} v{answer['version']}  {answer['service']}  "
        f"{answer['number'] or '-'} ({answer['destination'] or 'no destination'})  "
        f"{answer['place']}  start {answer['started_at']} ({answer['band_at_start']})",
        f"units {answer['units']}, billed {answer['billed_units']}",
    ]
    for ln in answer["lines"]:
        amount = ln["amount"] + (f" (= {ln['exact']})" if "exact" in ln else "")
        mark = "" if ln.get("counted", True) else "  (included, not added)"
        out.append(f"  {ln['kind']:<10} {ln['text']:<52} {amount:>16} {cur}{mark}")
    out.append(f"  {'total':<10} {answer['rounding']:<52} {answer['total']:>16} {cur}")
    return "\n".join(out)


def _explain_more(answer: Mapping[str, Any]) -> str:
    """What ``used`` and ``money`` add to the breakdown: the charge for the units after
    ``used``, and how many units ``money`` buys."""
    cur, used, units = answer["currency"], answer["used"], answer["units"]
    out = []
    if used:
        out.append(f"  {'used':<10} {f'units 1 to {used}':<52} {answer['total_used']:>16} {cur}")
        span = f"units {used + 1} to {units}" if units > used else "no more units"
        out.append(f"  {'charge':<10} {span:<52} {answer['charge']:>16} {cur}")
    if "affordable" in answer:
        out.append(
            f"affordable: {answer['affordable']} units for {answer['money']} {cur}"
            + (f" after the first {used}" if used else "")
        )
    return "\n".join(out)


def _rate_local(args: argparse.Namespace, at: datetime | None) -> dict[str, Any]:
    from ocs.api.app import MAX_RATED_SECONDS, rating_answer
    from ocs.money import MoneyFormatError, parse_money
    from tariffs import (
        PlanBook,
        PlanFileError,
        RatingError,
        TariffRater,
        UnitKind,
        UsageContext,
        load_plans,
    )

    units = args.units if args.duration is None else args.duration
    for name, value in (("--units", args.units), ("--duration", args.duration),
                        ("--used", args.used)):  # fmt: skip
        if value is not None and value < 0:
            raise CliError(f"{name} must not be negative")
    money = None
    if args.money is not None:
        try:
            money = parse_money(args.money, allow_negative=False)
        except MoneyFormatError as exc:
            raise CliError(f"--money {exc}") from None
    plans_dir = _settings(args).plans_dir  # --plans-dir, OCS_PLANS_DIR or the config file
    try:
        book = PlanBook(load_plans([plans_dir] if plans_dir else []))
    except PlanFileError as exc:
        raise PlanProblems(exc.problems) from None
    if args.plan not in book:
        raise CliError(f"no plan named {args.plan!r} (known: {', '.join(book.names())})")
    t_ms = int(datetime.now(UTC).timestamp() * 1000) if at is None else (at - _EPOCH) // _MS
    rater = TariffRater(book)
    ctx = UsageContext(args.plan, args.service, started_at=t_ms, destination=args.to or "",
                       location=args.location or "")  # fmt: skip
    try:
        svc = rater.service(ctx)
        if args.duration is not None and svc.unit is not UnitKind.SECONDS:
            raise CliError(f"--duration is for services counted in seconds; {svc.name} counts "
                           f"{svc.unit.value}: use --units")  # fmt: skip
        if svc.unit is UnitKind.SECONDS and args.used + units > MAX_RATED_SECONDS:
            raise CliError(f"at most {MAX_RATED_SECONDS} seconds can be rated at once")
        answer = rating_answer(rater, ctx, units, used=args.used, money=money)
        answer["explain"] = rater.rate(ctx, args.used + units).explain()
    except RatingError as exc:
        raise CliError(str(exc)) from None
    return answer


def cmd_rate(args: argparse.Namespace) -> int:
    if (args.duration is None) == (args.units is None):
        raise CliError("give the usage as --duration SECONDS or --units N (one of them)")
    at = _rate_time(args.at)
    if args.local:
        answer = _rate_local(args, at)
        text = answer.pop("explain")
    else:
        body: dict[str, Any] = {"plan": args.plan, "service": args.service}
        if args.duration is not None:
            body["duration"] = args.duration
        else:
            body["units"] = args.units
        if args.to is not None:
            body["to"] = args.to
        if at is not None:
            body["at"] = at.isoformat()
        if args.location is not None:
            body["location"] = args.location
        if args.used:
            body["used"] = args.used
        if args.money is not None:
            body["money"] = args.money
        answer = _run(_request("POST", f"{_api(args)}/v1/rate", body))
        text = _explain(answer)
    if args.json:
        _print(answer)
        return 0
    more = _explain_more(answer)
    print(text + ("\n" + more if more else ""))
    return 0


def cmd_tariffs(args: argparse.Namespace) -> int:
    base = f"{_api(args)}/v1/tariffs"
    if args.action == "check":
        from tariffs import PlanFileError, load_plan_file

        try:
            version = load_plan_file(args.file)
        except PlanFileError as exc:
            raise PlanProblems(exc.problems) from None
        print(f"OK {args.file}: plan {version.name} v{version.version}")
    elif args.action == "load":
        content = Path(args.file).read_bytes()
        _print(_run(_request("POST", base, content=content, content_type="application/toml",
                             params={"source": args.file})))  # fmt: skip
    elif args.action == "list":
        answer = _run(_request("GET", base))
        if args.json:
            _print(answer)
            return 0
        for plan in answer["plans"]:
            for v in plan["versions"]:
                since = v["effective_from"] or "always"
                now = "  in force" if v["in_force"] else ""
                print(f"{plan['name']} v{v['version']}  from {since}{now}  {v['currency']}  "
                      f"{', '.join(v['services'])}  {v['description']}")  # fmt: skip
    elif args.action == "show":
        _print(_run(_request("GET", f"{base}/{args.name}")))
    return 0


# -- parser -------------------------------------------------------------------------------------


_MS = timedelta(milliseconds=1)


def _listeners(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bind", help="address to listen on (or OCS_BIND; default 127.0.0.1)")
    p.add_argument("--native-port", type=ascii_int,
                   help="native protocol port (OCS_NATIVE_PORT, 3869)")  # fmt: skip
    p.add_argument("--http-port", type=ascii_int, help="admin HTTP port (OCS_HTTP_PORT, 8080)")
    p.add_argument(
        "--diameter-port", type=ascii_int, help="Diameter Gy/Ro port (OCS_DIAMETER_PORT, 3868)"
    )
    p.add_argument("--plans-dir", help="extra directory of TOML tariff plans")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ocs", description="A real-time prepaid Online Charging System on Redis."
    )
    parser.add_argument("--version", action="version", version=f"ocs {__version__}")
    parser.add_argument("--token", help="bearer token for the admin API (or OCS_API_TOKEN): an "
                        "API key (ocs auth key create) or OCS_ADMIN_TOKEN")  # fmt: skip
    parser.add_argument("--api", help="admin API URL (or OCS_API_URL; default "
                        "http://127.0.0.1:8080); also after the command")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the OCS: native protocol, admin API, sweeper")
    _common(p)
    _listeners(p)
    p.add_argument("--workers", type=ascii_int,
                   help="OCS processes sharing the ports (SO_REUSEPORT) under one supervisor "
                   "that restarts them (or OCS_WORKERS; default 1: this process)")  # fmt: skip
    # Internal: set by the supervisor for its workers (a pipe to say "ready" on).
    p.add_argument("--ready-fd", type=ascii_int, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="embedded Redis + demo data + OCS + switch simulator")
    _common(p)
    _listeners(p)
    p.add_argument("--subscribers", type=ascii_int, default=300, help="how many (default 300)")
    p.add_argument("--callers", type=ascii_int, default=48, help="concurrent lines (default 48)")
    p.add_argument("--speed", type=ascii_float, default=200.0,
                   help="simulated seconds per real second (default 200)")  # fmt: skip
    p.add_argument("--duration", type=ascii_float, help="stop after this many seconds")
    # The demo's native and Diameter listeners take free ports: it must run beside anything.
    p.set_defaults(func=cmd_demo, native_port=0, diameter_port=0)

    p = sub.add_parser("redis", help="run the embedded Redis alone, until Ctrl-C")
    _common(p)
    p.add_argument("--port", type=ascii_int, default=6380, help="port (default 6380)")
    p.set_defaults(func=cmd_redis)

    p = sub.add_parser(
        "rate",
        help="what some usage would cost, itemised (admin API, or --local)",
        description="Price a call, a data session or events with the rating engine, "
        "through the admin API of a running OCS or, with --local, with the shipped plans and "
        "--plans-dir. Changes nothing.",
    )
    p.add_argument("--plan", required=True, help="tariff plan name")
    p.add_argument("--service", required=True, help="service of the plan: voice, sms, data...")
    p.add_argument("--to", help="called number (any form the plan reads: 030..., 0049..., +49...)")
    p.add_argument("--at", help="start time, ISO 8601 with its UTC offset, e.g. "
                   "2026-11-23T08:59:30+01:00 or ...Z; default now")  # fmt: skip
    p.add_argument("--duration", type=ascii_int, help="seconds (for services counted in seconds)")
    p.add_argument("--units", type=ascii_int, help="units: seconds, octets or events")
    p.add_argument("--location", help="visited network id (MCC+MNC); default home")
    p.add_argument("--used", type=ascii_int, default=0,
                   help="units the session used already: price the units after them")  # fmt: skip
    p.add_argument("--money", help='also say how many units this buys, e.g. "5.00"')
    p.add_argument("--json", action="store_true", help="print the JSON answer")
    p.add_argument("--local", action="store_true", help="rate here, without a server")
    p.add_argument("--plans-dir", help="with --local: extra directory of TOML plans "
                   "(or OCS_PLANS_DIR)")  # fmt: skip
    p.add_argument("--api", help="admin API URL (or OCS_API_URL)")
    p.set_defaults(func=cmd_rate)

    p = sub.add_parser("tariffs", help="check, load, list and show tariff plans")
    p.add_argument("--api", help="admin API URL (or OCS_API_URL)")
    acts = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = acts.add_parser("check", help="validate a plan file here, without a server")
    a.add_argument("file")
    a = acts.add_parser("load", help="validate a plan file and make it live (admin API)")
    a.add_argument("file")
    a = acts.add_parser("list", help="the plans and their versions (admin API)")
    a.add_argument("--json", action="store_true", help="print the JSON answer")
    a = acts.add_parser("show", help="one plan's versions in detail (admin API)")
    a.add_argument("name")
    p.set_defaults(func=cmd_tariffs)

    p = sub.add_parser(
        "outbox",
        help="export the outbox (the journal of every balance change) to files; trim Redis",
        description="Append every outbox event not exported yet to <dir>/date=YYYY-MM-DD/"
        "outbox-b<NN>.jsonl (one JSON object per event, with its stream id), then remove from "
        "Redis the events exported and older than --keep-hours. At least once: after a "
        "crash an event may be written twice, with the same id.",
    )
    acts = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = acts.add_parser("export", help="export, then trim (every --interval seconds)")
    _common(a, embedded=False)
    a.add_argument("--dir", default=".ocs/journal", help="where the files go (.ocs/journal)")
    a.add_argument("--keep-hours", type=ascii_float, default=24.0,
                   help="hours of events Redis keeps after export (default 24)")  # fmt: skip
    a.add_argument("--interval", type=ascii_float, default=10.0, help="seconds between exports")
    a.add_argument("--once", action="store_true", help="export once and exit")
    p.set_defaults(func=cmd_outbox)

    p = sub.add_parser("lineage", help="where a dataset came from (OpenLineage records)")
    acts = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = acts.add_parser("show", help="the runs that wrote DATASET and, recursively, its inputs")
    _common(a)
    a.add_argument("dataset", help="a path (file or directory) or namespace:name")
    a.add_argument("--dir", help="the lineage file sink (default OCS_LINEAGE_DIR, .ocs/lineage)")
    p.set_defaults(func=cmd_lineage)

    # Command groups that live beside the code they drive: each module has register(sub).
    for module in _COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    spread_option(parser, "--api")
    spread_option(parser, "--token")
    completion(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    token = args.token or os.environ.get("OCS_API_TOKEN")
    set_token(token)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except PlanProblems as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 1
    except (CliError, ConfigError, StoreUnavailable, RedisServerError) as exc:
        # Start-up failures a user can act on: one line, no traceback (README).
        print(f"ocs: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`ocs subscriber list --all | head`): stop quietly, with the
        # status a command killed by SIGPIPE has, and point stdout at /dev/null so that the
        # interpreter's last flush does not complain either (Python's signal docs).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except OSError as exc:
        print(f"ocs: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    # `python -m ocs.cli` runs this file as __main__, a second copy of the module: run the
    # ocs.cli that command modules import, so the CliError they raise is the one caught.
    from ocs.cli import main as _main

    sys.exit(_main())
