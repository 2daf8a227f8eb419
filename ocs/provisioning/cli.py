"""``ocs provisioning ...`` (clients of the admin API) and ``ocs hlr-sim``."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

from ocs.clikit import CliError
from ocs.clikit import api_url as _api
from ocs.clikit import print_json as _print
from ocs.clikit import request as _request
from ocs.clikit import run as _run
from tariffs.digits import ascii_float, ascii_int

#: Seconds between two looks at a reconciliation job's progress.
RECONCILE_POLL = 0.5


def cmd_provisioning(args: argparse.Namespace) -> int:
    base = f"{_api(args)}/v1"
    if args.action == "show":
        _print(_run(_request("GET", f"{base}/subscribers/{args.msisdn}/provisioning")))
    elif args.action == "dead-letters":
        params = {"limit": str(args.limit)}
        _print(_run(_request("GET", f"{base}/provisioning/dead-letters", params=params)))
    elif args.action == "replay":
        _print(_run(_request("POST", f"{base}/provisioning/dead-letters/{args.id}/replay")))
    elif args.action == "reconcile":
        report: dict[str, Any] = _run(_reconcile(base, quiet=args.json))
        if args.json:
            _print(report)
        else:
            print(f"checked {report['checked']} subscribers; "
                  f"{report['resent']} differed and were re-sent; "
                  f"{report['failures']} could not be checked")  # fmt: skip
            for d in report["differing"]:
                print(f"  {d['msisdn']}: OCS wants {d['desired']}, HLR has {d['hlr']}")
            for d in report["failed"]:
                print(f"  {d['msisdn']}: not checked: {d['error']}")
        if report["state"] != "done":
            raise CliError(f"reconcile {report['id']} {report['state']}: {report['detail']}")
    return 0


async def _reconcile(base: str, *, quiet: bool) -> dict[str, Any]:
    """Start a reconciliation job and wait for its result, saying its progress on stderr."""
    job: dict[str, Any] = await _request("POST", f"{base}/provisioning/reconcile")
    said = -1
    while job["state"] == "running":
        if not quiet and job["checked"] != said:
            said = job["checked"]
            print(f"reconcile {job['id']}: {said} checked so far", file=sys.stderr, flush=True)
        await asyncio.sleep(RECONCILE_POLL)
        job = await _request("GET", f"{base}/provisioning/reconcile/{job['id']}")
    return job


def cmd_hlr_sim(args: argparse.Namespace) -> int:
    from ocs.sims.hlr import Behaviour, HlrSimulator, bound_port, serve

    secret = args.secret if args.secret is not None else os.environ.get(
        "OCS_PROVISIONING_SECRET", ""
    )  # fmt: skip
    behaviour = Behaviour(fail_rate=args.fail_rate, delay_ms=args.delay_ms, async_=args.async_mode)

    async def main() -> None:
        sim = HlrSimulator(secret=secret, behaviour=behaviour)
        runner = await serve(sim, args.bind, args.port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(
            f"HLR simulator on http://{args.bind}:{bound_port(runner)} "
            f"({'signed' if secret else 'unsigned'} commands); Ctrl-C to stop",
            flush=True,
        )
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    _run(main())
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "provisioning",
        help="barring in the HLR: a subscriber's view, dead letters, replay, reconcile",
    )
    p.add_argument("--api", help="admin API URL (or OCS_API_URL)")
    acts = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = acts.add_parser("show", help="desired and confirmed barring, command history")
    a.add_argument("msisdn")
    a = acts.add_parser("dead-letters", help="commands and webhooks that failed for good")
    a.add_argument("--limit", type=ascii_int, default=50)
    a = acts.add_parser("replay", help="send a dead letter again")
    a.add_argument("id")
    a = acts.add_parser(
        "reconcile", help="compare every account's barring with the HLR's; re-send differences"
    )
    a.add_argument("--json", action="store_true", help="print the JSON answer")
    p.set_defaults(func=cmd_provisioning)

    p = sub.add_parser("hlr-sim", help="run the HLR simulator (the provisioning protocol)")
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--port", type=ascii_int, default=8090, help="port (default 8090)")
    p.add_argument("--secret", help="HMAC key checking commands and signing callbacks "
                   "(default OCS_PROVISIONING_SECRET)")  # fmt: skip
    p.add_argument("--fail-rate", type=ascii_float, default=0.0, help="share of commands to fail")
    p.add_argument("--delay-ms", type=ascii_int, default=0, help="answer this much later")
    p.add_argument("--async", dest="async_mode", action="store_true",
                   help="answer 202 and confirm by callback")  # fmt: skip
    p.set_defaults(func=cmd_hlr_sim)
