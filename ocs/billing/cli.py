"""``ocs billing ...``: bill runs, issuing, invoices, explain, notes, exports, feeds, usage
ingestion, pending sums and aggregates (docs/billing.md).

These commands work on the billing database directly (``--db``, ``OCS_BILLING_DB_URL``, or
the SQLite file under ``--data-dir``), so a bill run needs no running OCS; ``ingest`` reads
the OCS's Redis. Every command prints one line per object, or JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ocs.clikit import CliError
from ocs.config import Settings, load_settings
from ocs.constants import SCOPE_LEVELS

if TYPE_CHECKING:
    from sqlalchemy import Engine

# The billing modules (SQLAlchemy, Alembic, reportlab: ~0.3 s) are imported by the commands
# that use them, not when `ocs` builds its parser: every other command would pay for them.


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        k: getattr(args, k, None)
        for k in ("redis_url", "data_dir", "billing_db_url", "billing_feeds_dir", "warehouse_dir")
    }
    return load_settings(os.environ, getattr(args, "config", None), overrides)


def _engine(args: argparse.Namespace) -> Engine:
    from ocs.billing.db import open_billing_db

    return open_billing_db(_settings(args).billing_url)


def _write_export(args: argparse.Namespace, e: Engine, fmt: str, data: str | bytes) -> None:
    """An invoice exported to ``args.output``, with its OpenLineage record."""
    from ocs.billing.lineage import invoice_exported, lineage_of
    from ocs.lineage import file_dataset

    path = Path(args.output)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    invoice_exported(lineage_of(_settings(args)), e, fmt, file_dataset(path))
    print(path)


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)


def _lines(inv: dict[str, Any]) -> str:
    head = (
        f"{inv['number'] or 'draft ' + str(inv['id'])}  {inv['kind']}  {inv['account']}  "
        f"{inv['period']}  {inv['status']}  net {inv['net']}  tax {inv['tax']}  "
        f"total {inv['total']} {inv['currency']}"
    )
    rows = [head]
    for x in inv.get("lines", []):
        rows.append(f"  {x['seq']:>3}  {x['kind']:<18} {x['amount']:>16}  {x['description']}")
    return "\n".join(rows)


def cmd_billing(args: argparse.Namespace) -> int:
    from ocs.billing.errors import BillingError, Invalid

    try:
        return _dispatch(args)
    except Invalid as exc:
        raise CliError("; ".join(f"{e.field}: {e.detail}" for e in exc.errors)) from None
    except BillingError as exc:
        raise CliError(str(exc)) from None


def _dispatch(args: argparse.Namespace) -> int:
    from ocs.billing import exports, feeds, runs
    from ocs.billing.lineage import lineage_of

    act = args.action
    if act == "migrate":
        _engine(args).dispose()
        print("billing database at the newest schema")
        return 0
    if act == "ingest":
        return _ingest(args)
    e = _engine(args)
    try:
        if act == "run":
            r = runs.run(e, args.period, account=args.account, now_ms=_now_ms())
            _print(
                args,
                {"period": r.period, "drafted": r.drafted, "already_issued": r.skipped_issued},
                f"{r.period}: {len(r.drafted)} draft(s), {len(r.skipped_issued)} already issued",
            )
            if args.summary:
                print(summary(e, args.period))
        elif act == "issue":
            numbers = runs.issue(e, args.period, account=args.account, now_ms=_now_ms())
            _print(args, {"issued": numbers}, "\n".join(numbers) or "nothing to issue")
        elif act == "invoices":
            items = runs.list_invoices(
                e,
                period=args.period,
                account=args.account,
                status=args.status,
                scope=None,
                offset=0,
                limit=args.limit,
            )
            _print(args, items, "\n".join(_lines(i) for i in items) or "no invoices")
        elif act == "show":
            inv = runs.get_invoice(e, args.invoice, None)
            if args.output:  # the invoice as JSON, to a file
                _write_export(args, e, "json", json.dumps(inv, indent=2) + "\n")
            else:
                _print(args, inv, _lines(inv))
        elif act == "explain":
            out = runs.explain(e, args.invoice, args.line, None)
            text = "\n".join(
                [
                    f"{out['invoice']} line {out['line']}: {out['description']}",
                    *(f"  {s}" for s in out["steps"]),
                    f"  = {out['recomputed']} (on the invoice: {out['amount']}; "
                    f"{'matches' if out['matches'] else 'DOES NOT MATCH'})",
                ]
            )
            _print(args, out, text)
            return 0 if out["matches"] or out["recomputed_micro"] is None else 2
        elif act == "pdf":
            inv = runs.get_invoice(e, args.invoice, None)
            pdf = exports.invoice_pdf(inv, exports.parties(e, inv))
            args.output = args.output or f"{inv['number'] or 'draft-' + str(inv['id'])}.pdf"
            _write_export(args, e, "pdf", pdf)
        elif act == "csv":
            text = exports.lines_csv(runs.get_invoice(e, args.invoice, None))
            if args.output:
                _write_export(args, e, "csv", text)
            else:
                sys.stdout.write(text)
        elif act == "note":
            items = []
            for spec in args.line:
                desc, sep, amount = spec.rpartition("=")
                if not sep or not desc:
                    raise CliError(f"--line {spec!r}: write DESCRIPTION=AMOUNT")
                items.append({"description": desc, "amount": amount})
            note = runs.create_note(
                e,
                args.invoice,
                {"kind": args.kind, "reason": args.reason, "lines": items},
                now_ms=_now_ms(),
                scope=None,
            )
            _print(args, note, _lines(note))
        elif act == "export":
            settings = _settings(args)
            paths = exports.export_period(
                e, settings.warehouse_dir, args.period, lineage_of(settings)
            )
            _print(args, [str(p) for p in paths], "\n".join(map(str, paths)))
        elif act == "feeds":
            directory = Path(args.dir or _settings(args).billing_feeds_dir)
            results = feeds.import_dir(e, directory, _now_ms())
            data = {
                k: {"stored": r.stored, "replays": r.replays, "rejected": len(r.rejected)}
                for k, r in results.items()
            }
            _print(
                args,
                data,
                "\n".join(
                    f"{k}: {v['stored']} stored, {v['replays']} replays, {v['rejected']} rejected"
                    for k, v in data.items()
                )
                or f"no feed files in {directory}",
            )
        elif act == "pending":
            p = runs.pending(e, args.account, now_ms=_now_ms(), scope=None)
            _print(
                args,
                p,
                f"{p['account']} {p['period']} as of {p['as_of']}: usage "
                f"{p['usage']}, fixed {p['fixed']}, LAD {p['lad']}, penalties "
                f"{p['penalty']}, total {p['total']} {p['currency']}",
            )
        elif act == "check":
            return _check(args, e)
        elif act == "aggregates":
            rows = runs.aggregates(
                e, args.level, args.period, scope=None, offset=0, limit=args.limit
            )
            _print(
                args,
                rows,
                "\n".join(
                    f"{r['code']:<12} billed {r['billed']:>12} drafted {r['drafted']:>12} usage "
                    f"{r['usage']:>10} LAD {r['lad']:>10} penalties {r['penalties']:>10} pending "
                    f"{r['pending']:>10} accounts {r['accounts']} invoices {r['invoices']}"
                    for r in rows
                ),
            )
        return 0
    finally:
        e.dispose()


def summary(engine: Engine, period: str) -> str:
    """A short bill summary per agency for ``period`` (the demo prints it)."""
    from ocs.billing import runs

    rows = runs.aggregates(engine, "agency", period, scope=None, offset=0, limit=1000)
    out = [f"bill summary {period}  (agency: invoices, usage, LAD, penalties, total)"]
    for r in rows:
        total = r["billed"] if r["micro"]["billed"] else r["drafted"]
        out.append(
            f"  {r['code']:<14} {r['invoices']:>3} inv  usage {r['usage']:>10}  LAD "
            f"{r['lad']:>10}  penalties {r['penalties']:>10}  total {total:>12}"
        )
    return "\n".join(out)


def _ingest(args: argparse.Namespace) -> int:
    from ocs.billing.db import open_billing_db
    from ocs.billing.usage import UsageConsumer
    from ocs.store.notify import NotifyStore

    settings = _settings(args)
    if not settings.redis_url:
        raise CliError("ingest reads the OCS's Redis: give --redis-url (or OCS_REDIS_URL)")
    engine = open_billing_db(settings.billing_url)

    async def main() -> int:
        outbox = NotifyStore(settings.redis_url or "", outbox=True)
        try:
            consumer = UsageConsumer(outbox, engine, clock=_now_ms)
            if args.once:
                n = await consumer.drain()
                print(f"read {n} outbox entries, {consumer.stats.stored} new usage events")
                return 0
            await consumer.run()
            return 0
        finally:
            await outbox.close()

    try:
        return asyncio.run(main())
    finally:
        engine.dispose()


def _check(args: argparse.Namespace, e: Engine) -> int:
    """The usage rollup against the events (exit 2: it drifted, and was not repaired)."""
    from ocs.billing import rollup

    found, rebuilt = rollup.check(e, repair=args.repair)
    lines = [
        f"{d['account'] if 'account' in d else d['agency'] + ' day ' + str(d['billing_day'])} "
        f"{d['day']} {d['service'] or '-'}: rollup {d['rollup']} != events {d['scanned']}"
        for d in found
    ]
    if not found:
        lines.append("usage rollup: exact (it equals the sums of the usage events)")
    elif rebuilt is not None:
        lines.append(f"usage rollup: {len(found)} row(s) drifted; rebuilt ({rebuilt} rows)")
    else:
        lines.append(f"usage rollup: {len(found)} row(s) drifted (--repair rebuilds it)")
    _print(args, {"drift": found, "rebuilt": rebuilt}, "\n".join(lines))
    return 2 if found and rebuilt is None else 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "billing", help="enterprise billing: runs, invoices, feeds, explain", description=__doc__
    )
    p.add_argument("--config", help="TOML config file (or OCS_CONFIG)")
    p.add_argument(
        "--db",
        dest="billing_db_url",
        help="billing database URL (or OCS_BILLING_DB_URL; default SQLite under --data-dir)",
    )
    p.add_argument("--data-dir", help="where the default SQLite file is (default .ocs)")
    p.add_argument("--json", action="store_true", help="print JSON")
    acts = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    acts.add_parser("migrate", help="create or upgrade the billing database")
    a = acts.add_parser("run", help="draft (or re-draft) the period's invoices")
    a.add_argument("--period", required=True, help="YYYY-MM")
    a.add_argument("--account", help="only this account")
    a.add_argument("--summary", action="store_true", help="print a summary per agency")
    a = acts.add_parser("issue", help="make the period's drafts final, numbered")
    a.add_argument("--period", required=True)
    a.add_argument("--account")
    a = acts.add_parser("invoices", help="list invoices")
    a.add_argument("--period")
    a.add_argument("--account")
    a.add_argument("--status", choices=("draft", "issued"))
    a.add_argument("--limit", type=int, default=100)
    for name, what in (
        ("show", "an invoice and its lines"),
        ("pdf", "an invoice as PDF"),
        ("csv", "an invoice's lines as CSV"),
    ):
        a = acts.add_parser(name, help=what)
        a.add_argument("invoice", help="number (INV-2026-000001) or id of a draft")
        a.add_argument(
            "-o",
            "--output",
            help="file (pdf: default NUMBER.pdf; show writes the JSON, csv the CSV there)",
        )
    a = acts.add_parser("explain", help="the calculation of one line, recomputed")
    a.add_argument("invoice")
    a.add_argument("line", type=int)
    a = acts.add_parser("note", help="a credit or debit note on an issued invoice")
    a.add_argument("invoice")
    a.add_argument("--kind", choices=("credit", "debit"), required=True)
    a.add_argument("--reason", required=True)
    a.add_argument("--line", action="append", required=True, help='"DESCRIPTION=AMOUNT"')
    a = acts.add_parser("export", help="the period's dataset to the Parquet warehouse")
    a.add_argument("--period", required=True)
    a.add_argument("--warehouse-dir", help="(default .ocs/warehouse)")
    a = acts.add_parser("feeds", help="import the order and ticket files of the feeds dir")
    a.add_argument("--dir", help="(default OCS_BILLING_FEEDS_DIR, .ocs/feeds)")
    a = acts.add_parser("ingest", help="read the OCS outbox into the billing store")
    a.add_argument("--redis-url", help="the OCS's Redis (or OCS_REDIS_URL)")
    a.add_argument("--once", action="store_true", help="read what is there, then exit")
    a = acts.add_parser("pending", help="accrued, not yet invoiced, for an account")
    a.add_argument("account")
    a = acts.add_parser("check", help="the usage rollup against the events (exit 2: drift)")
    a.add_argument("--repair", action="store_true", help="rebuild it from the events if it drifted")
    a = acts.add_parser("aggregates", help="figures per level for a period")
    a.add_argument("--level", choices=SCOPE_LEVELS, default="agency")
    a.add_argument("--period", required=True)
    a.add_argument("--limit", type=int, default=1000)
    p.set_defaults(func=cmd_billing)
    from ocs.sims import feeds as feedsim

    feedsim.register(acts)
