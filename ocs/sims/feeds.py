"""Simulators of the two outside feeds (``ocs billing sim-orders``, ``sim-tickets``): an
ordering system that delivers some services late and leaves some open, and a ticketing
system with outages (some overlapping, some excluded as maintenance or the customer's own
fault). They write feed files (schema version 1, docs/billing.md) into the feeds directory,
or post them to the signed webhooks. A tool around the system, like the switch and HLR
simulators: production code never imports it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import urllib.request
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from ocs.billing.formulas import next_month, parse_period
from ocs.config import load_settings
from ocs.provisioning.signing import sign

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from ocs.billing.feeds import Feed

# (the billing database's modules are imported where they are used: `ocs` registers these
# commands whatever command it runs, and SQLAlchemy costs ~0.3 s to import)


def services(engine: Engine) -> list[tuple[str, str, str, str]]:
    """(service id, account code, its zone, SLA target or "") of every fixed service."""
    from sqlalchemy import select

    from ocs.billing import schema as S

    with engine.connect() as c:
        rows = c.execute(
            select(
                S.fixed_service.c.service_id,
                S.account.c.code,
                S.account.c.timezone,
                S.fixed_service.c.sla_target,
            )
            .select_from(S.fixed_service.join(S.account))
            .order_by(S.fixed_service.c.service_id)
        ).all()
    return [(r[0], r[1], r[2], r[3] or "") for r in rows]


def _month(period: str, tz: str) -> tuple[datetime, datetime]:
    y, m = parse_period(period)
    ny, nm = next_month(y, m)
    zone = ZoneInfo(tz)
    return datetime(y, m, 1, tzinfo=zone), datetime(ny, nm, 1, tzinfo=zone)


def simulate_orders(
    svcs: Sequence[tuple[str, str, str, str]], period: str, seed: int = 11
) -> list[dict[str, Any]]:
    """One order per service, committed in ``period``: ~40 % on time or early, ~40 % late by
    1-15 days (some delivered after the month), ~20 % still open."""
    rng = random.Random(f"{seed}:{period}")
    out = []
    for service_id, account, tz, _ in svcs:
        lo, _hi = _month(period, tz)
        committed = lo + timedelta(days=rng.randrange(0, 20), hours=rng.randrange(8, 17))
        ordered = committed - timedelta(days=rng.randrange(20, 60))
        roll = rng.random()
        delivered: datetime | None
        if roll < 0.4:
            delivered = committed - timedelta(days=rng.randrange(0, 3))
        elif roll < 0.8:
            delivered = committed + timedelta(days=rng.randrange(1, 16), hours=rng.randrange(4))
        else:
            delivered = None
        rec = {
            "order_id": f"ORD-{period}-{service_id}",
            "version": 1,
            "service_id": service_id,
            "account": account,
            "ordered_at": ordered.isoformat(),
            "committed_at": committed.isoformat(),
            "delivered_at": None,
            "status": "open",
        }
        out.append(rec)
        if delivered is not None:  # the delivery arrives as a second version
            out.append(
                {**rec, "version": 2, "delivered_at": delivered.isoformat(), "status": "delivered"}
            )
    return out


def simulate_tickets(
    svcs: Sequence[tuple[str, str, str, str]], period: str, seed: int = 13
) -> list[dict[str, Any]]:
    """0-3 outages per service with an SLA in ``period``, 10 minutes to 8 hours each; some
    overlap the one before; ~15 % are maintenance or the customer's own fault."""
    rng = random.Random(f"{seed}:{period}")
    out = []
    for service_id, _, tz, target in svcs:
        if not target:
            continue
        lo, hi = _month(period, tz)
        start = lo
        for n in range(rng.randrange(0, 4)):
            start = start + timedelta(hours=rng.randrange(1, 200))
            if start >= hi:
                break
            end = start + timedelta(minutes=rng.randrange(10, 480))
            roll = rng.random()
            excluded = "maintenance" if roll < 0.1 else "customer" if roll < 0.15 else ""
            out.append(
                {
                    "ticket_id": f"TT-{period}-{service_id}-{n}",
                    "version": 1,
                    "service_id": service_id,
                    "fault_start": start.isoformat(),
                    "restored_at": end.isoformat(),
                    "cause": "simulated fault",
                    "excluded": excluded,
                }
            )
            if rng.random() < 0.3:  # overlapping: starts before the last one is restored
                start = start + (end - start) / 2
    return out


def write_feed(
    directory: Path, feed: Feed, name: str, records: Sequence[dict[str, Any]], fmt: str
) -> Path:
    from ocs.billing.feeds import FIELDS

    folder = directory / feed
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.{fmt}"
    tmp = folder / f".{path.name}.tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        if fmt == "csv":
            w = csv.DictWriter(f, fieldnames=FIELDS[feed], lineterminator="\n")
            w.writeheader()
            for r in records:
                w.writerow({k: "" if v is None else v for k, v in r.items()})
        else:
            for r in records:
                f.write(json.dumps({"schema": f"{feed}/1", **r}) + "\n")
    os.replace(tmp, path)  # the importer never sees half a file
    return path


def post_feed(url: str, secret: str, records: Sequence[dict[str, Any]]) -> int:
    body = json.dumps(list(records)).encode()
    headers = {"Content-Type": "application/json", **sign(secret, body)}
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return int(resp.status)


def _cmd(args: argparse.Namespace) -> int:
    from ocs.billing.db import open_billing_db

    overrides = {
        "billing_db_url": getattr(args, "billing_db_url", None),
        "data_dir": getattr(args, "data_dir", None),
    }
    settings = load_settings(os.environ, getattr(args, "config", None), overrides)
    engine = open_billing_db(settings.billing_url)
    try:
        svcs = services(engine)
    finally:
        engine.dispose()
    feed: Feed = "orders" if args.action == "sim-orders" else "tickets"
    make = simulate_orders if feed == "orders" else simulate_tickets
    records = make(svcs, args.period, args.seed)
    if args.webhook:
        status = post_feed(args.webhook, args.secret or settings.billing_feed_secret, records)
        print(f"posted {len(records)} {feed} records: HTTP {status}")
        return 0
    path = write_feed(
        Path(args.dir or settings.billing_feeds_dir),
        feed,
        f"sim-{feed}-{args.period}",
        records,
        args.format,
    )
    print(f"{path}: {len(records)} {feed} records")
    return 0


def register(acts: Any) -> None:
    for name, what in (
        ("sim-orders", "simulated ordering feed (late deliveries)"),
        ("sim-tickets", "simulated ticketing feed (outages)"),
    ):
        a = acts.add_parser(name, help=what)
        a.add_argument("--period", required=True, help="YYYY-MM")
        a.add_argument("--dir", help="feeds directory (default .ocs/feeds)")
        a.add_argument("--format", choices=("csv", "jsonl"), default="csv")
        a.add_argument("--seed", type=int, default=11)
        a.add_argument("--webhook", help="post to this URL instead (signed)")
        a.add_argument("--secret", help="HMAC key for --webhook (or OCS_BILLING_FEED_SECRET)")
        a.set_defaults(func=_cmd)
