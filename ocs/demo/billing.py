"""The demo's enterprise billing: the gov-payu subscribers of the demo data become a national
hierarchy (3 regions, 8 agencies, 24 accounts, their mobile lines and fixed services, with
contracts); at the end of the demo the feed simulators run, the period is billed, a summary
per agency is printed and each invoice is written as a PDF under ``<data>/invoices/``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from ocs.billing import exports, feeds, runs
from ocs.billing import model as M
from ocs.billing.cli import summary
from ocs.billing.lineage import invoice_exported
from ocs.demo.dataset import DemoSubscriber
from ocs.lineage import Lineage, file_dataset
from ocs.sims import feeds as feedsim

ZONE = "Europe/Berlin"
REGIONS = (("RG-N", "North"), ("RG-C", "Centre"), ("RG-S", "South"))
AGENCIES = (
    ("MIN-INT", "Ministry of the Interior", "RG-C", "VAT19"),
    ("MIN-FIN", "Ministry of Finance", "RG-C", "VAT19"),
    ("MIN-HEA", "Ministry of Health", "RG-N", "VAT19-INCL"),
    ("MIN-EDU", "Ministry of Education", "RG-N", "VAT19"),
    ("AG-POL", "Federal Police", "RG-S", "EXEMPT"),
    ("AG-STAT", "Statistics Office", "RG-S", "VAT19"),
    ("AG-MET", "Weather Service", "RG-N", "VAT19"),
    ("AG-ARCH", "National Archives", "RG-S", "VAT19"),
)
ACCOUNTS_PER_AGENCY = 3
SERVICES = (
    ("leased line", "450.00", "gold"),
    ("VPN site", "180.00", "silver"),
    ("broadband circuit", "89.90", "bronze"),
)


def load_hierarchy(engine: Engine, subs: Sequence[DemoSubscriber], now: datetime) -> int:
    """The hierarchy, its lines (the demo's gov-payu subscribers, shared out round-robin) and
    services starting mid last month; how many accounts."""
    lines = [s.msisdn for s in subs if s.plan == "gov-payu"]
    first = now.replace(day=1) - timedelta(days=1)
    start = first.replace(day=min(12, first.day)).date().isoformat()
    with engine.begin() as c:
        M.create_org(c, "national", {"code": "NAT", "name": "Government of the Republic"})
        for code, name in REGIONS:
            M.create_org(c, "region", {"code": code, "name": name, "parent": "NAT"})
        M.put_tax_profile(c, "VAT19", {"rate": "19", "mode": "exclusive"})
        M.put_tax_profile(c, "VAT19-INCL", {"rate": "19", "mode": "inclusive"})
        M.put_tax_profile(c, "EXEMPT", {"mode": "exempt"})
        n = 0
        for code, name, region, tax in AGENCIES:
            M.create_org(c, "agency", {"code": code, "name": name, "parent": region})
            for k in range(ACCOUNTS_PER_AGENCY):
                acc = f"{code}-{k + 1:02d}"
                M.create_account(
                    c,
                    {
                        "code": acc,
                        "name": f"{name}, site {k + 1}",
                        "agency": code,
                        "tax_profile": tax,
                        "timezone": ZONE,
                    },
                    None,
                )
                for j, (what, monthly, tier) in enumerate(SERVICES[: 1 + (n % 3)]):
                    M.put_service(
                        c,
                        acc,
                        f"{acc}-S{j + 1}",
                        {
                            "description": f"{what.capitalize()} {acc}-S{j + 1}",
                            "monthly_charge": monthly,
                            "start_date": start,
                            "sla_tier": tier,
                            "charging": "advance" if j == 1 else "arrears",
                        },
                        None,
                    )
                M.put_contract(
                    c,
                    acc,
                    {
                        "start_date": start,
                        "lad": {
                            "rate_kind": "percent",
                            "rate_percent": "2",
                            "grace_days": 2,
                            "cap_kind": "percent",
                            "cap_percent": "10",
                        },
                    },
                    None,
                )
                n += 1
        for i, m in enumerate(lines):
            acc = f"{AGENCIES[i % len(AGENCIES)][0]}-{(i // len(AGENCIES)) % 3 + 1:02d}"
            M.assign_line(c, acc, {"msisdn": m, "valid_from": 0}, None)
    return n


def bill_period(
    engine: Engine, data_dir: Path, now: datetime, out: TextIO, lineage: Lineage | None = None
) -> None:
    """Feeds simulated for this month, imported; this month drafted; a summary; PDFs (with
    their lineage records)."""
    period = f"{now.year:04d}-{now.month:02d}"
    svcs = feedsim.services(engine)
    feeds_dir = data_dir / "feeds"
    feedsim.write_feed(
        feeds_dir, "orders", f"sim-orders-{period}", feedsim.simulate_orders(svcs, period), "csv"
    )
    feedsim.write_feed(
        feeds_dir,
        "tickets",
        f"sim-tickets-{period}",
        feedsim.simulate_tickets(svcs, period),
        "jsonl",
    )
    results = feeds.import_dir(engine, feeds_dir, int(now.timestamp() * 1000))
    for name, r in results.items():
        print(f"BILLING   feed {name}: {r.stored} stored, {len(r.rejected)} rejected", file=out)
    runs.run(engine, period, now_ms=int(now.timestamp() * 1000))
    print(summary(engine, period), file=out)
    folder = data_dir / "invoices"
    folder.mkdir(parents=True, exist_ok=True)
    items = runs.list_invoices(
        engine, period=period, account=None, status=None, scope=None, offset=0, limit=1000
    )
    for item in items:
        inv = runs.get_invoice(engine, str(item["id"]), None)
        path = folder / f"{inv['account']}-{period}-draft.pdf"
        path.write_bytes(exports.invoice_pdf(inv, exports.parties(engine, inv)))
        invoice_exported(lineage, engine, "pdf", file_dataset(path))
    print(
        f"BILLING   {len(items)} draft invoices as PDF in {folder} (ocs billing --db "
        f"sqlite:///{data_dir}/billing.db invoices --period {period})",
        file=out,
        flush=True,
    )


def now_in_zone() -> datetime:
    return datetime.now(ZoneInfo(ZONE))
