"""The ``ocs`` command line: serve, demo, subscriber administration, events, embedded Redis.

Administration commands are clients of the admin HTTP API of a running OCS (``--api``, or
``OCS_API_URL``, default ``http://127.0.0.1:8080``). Errors print as one line on stderr and
exit non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from ocs import __version__
from ocs.config import ConfigError, Settings, load_settings


class CliError(Exception):
    """One line for the user; exit status 1."""


def _tune_gc() -> None:
    """For a long-running server: move what start-up allocated out of the collector's sight
    and collect the youngest generation less often (the allocation rate of the request path
    otherwise triggers a gen-0 collection every few requests: ~5% of the CPU, bench/)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def _use_uvloop() -> None:
    # uvloop is chosen here, at the entry point, and nowhere else (STYLE.md).
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        k: getattr(args, k, None)
        for k in ("redis_url", "native_port", "http_port", "bind", "data_dir", "plans_dir")
    }
    return load_settings(os.environ, getattr(args, "config", None), overrides)


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    _use_uvloop()
    return asyncio.run(coro)


# -- serve / demo / redis ---------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from ocs.service import serve_forever

    settings = _settings(args)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(message)s")
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


# -- admin API client -------------------------------------------------------------------------


def _api(args: argparse.Namespace) -> str:
    return str(args.api or os.environ.get("OCS_API_URL") or "http://127.0.0.1:8080").rstrip("/")


async def _request(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    try:
        async with aiohttp.ClientSession() as http, http.request(method, url, json=body) as resp:
            text = await resp.text()
            data = json.loads(text) if text else None
            if resp.status >= 400:
                detail = data.get("detail") or data.get("title") if isinstance(data, dict) else text
                raise CliError(f"{method} {url}: {resp.status} {detail}")
            return data
    except aiohttp.ClientConnectionError as exc:
        raise CliError(f"cannot reach the OCS admin API at {url}: {exc} "
                       "(is `ocs serve` running? see --api)") from None  # fmt: skip


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def cmd_subscriber(args: argparse.Namespace) -> int:
    base = f"{_api(args)}/v1/subscribers"
    if args.action == "add":
        body: dict[str, Any] = {
            "msisdn": args.msisdn,
            "balance": args.balance,
            "plan": args.plan,
            "credit_limit": args.credit_limit,
        }
        if args.state:
            body["state"] = args.state
        _print(_run(_request("POST", base, body)))
    elif args.action == "show":
        _print(_run(_request("GET", f"{base}/{args.msisdn}")))
    elif args.action == "topup":
        body = {"amount": args.amount, "reference": args.reference}
        _print(_run(_request("POST", f"{base}/{args.msisdn}/topups", body)))
    elif args.action == "list":
        _print(_run(_request("GET", f"{base}?count={args.count}")))
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    url = f"{_api(args)}/v1/subscribers/{args.msisdn}/events?limit={args.limit}"
    _print(_run(_request("GET", url)))
    return 0


# -- parser -------------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config file (or OCS_CONFIG)")
    p.add_argument("--redis-url", help="Redis URL (or OCS_REDIS_URL); default: embedded Redis")
    p.add_argument("--data-dir", help="where the embedded Redis keeps its data (default .ocs)")


def _listeners(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bind", help="address to listen on (or OCS_BIND; default 127.0.0.1)")
    p.add_argument("--native-port", type=int, help="native protocol port (OCS_NATIVE_PORT, 3869)")
    p.add_argument("--http-port", type=int, help="admin HTTP port (OCS_HTTP_PORT, 8080)")
    p.add_argument("--plans-dir", help="extra directory of TOML tariff plans")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ocs", description="A real-time prepaid Online Charging System on Redis."
    )
    parser.add_argument("--version", action="version", version=f"ocs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the OCS: native protocol, admin API, sweeper")
    _common(p)
    _listeners(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="embedded Redis + demo data + OCS + switch simulator")
    _common(p)
    _listeners(p)
    p.add_argument("--subscribers", type=int, default=300, help="how many (default 300)")
    p.add_argument("--callers", type=int, default=48, help="concurrent lines (default 48)")
    p.add_argument("--speed", type=float, default=200.0,
                   help="simulated seconds per real second (default 200)")  # fmt: skip
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.set_defaults(func=cmd_demo, native_port=0)

    p = sub.add_parser("redis", help="run the embedded Redis alone, until Ctrl-C")
    _common(p)
    p.add_argument("--port", type=int, default=6380, help="port (default 6380)")
    p.set_defaults(func=cmd_redis)

    p = sub.add_parser("subscriber", help="add, show, top up or list subscribers (admin API)")
    p.add_argument("--api", help="admin API URL (or OCS_API_URL; default http://127.0.0.1:8080)")
    acts = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = acts.add_parser("add", help="create a subscriber")
    a.add_argument("msisdn")
    a.add_argument("--balance", required=True, help='opening balance, e.g. "10.00"')
    a.add_argument("--plan", required=True, help="tariff plan name")
    a.add_argument("--credit-limit", default="0", help="how far below zero it may go")
    a.add_argument("--state", help="active | barred-outgoing | barred-all | suspended")
    a = acts.add_parser("show", help="balance, buckets and open sessions")
    a.add_argument("msisdn")
    a = acts.add_parser("topup", help="add money, idempotent by reference")
    a.add_argument("msisdn")
    a.add_argument("amount", help='e.g. "5.00"')
    a.add_argument("--reference", required=True, help="idempotency reference (voucher, receipt)")
    a = acts.add_parser("list", help="list subscribers")
    a.add_argument("--count", type=int, default=100)
    p.set_defaults(func=cmd_subscriber)

    p = sub.add_parser("events", help="a subscriber's ledger, newest first (admin API)")
    p.add_argument("msisdn")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--api", help="admin API URL (or OCS_API_URL)")
    p.set_defaults(func=cmd_events)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (CliError, ConfigError) as exc:
        print(f"ocs: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"ocs: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
