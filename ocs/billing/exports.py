"""Invoices out: a PDF a finance office would file (reportlab), the lines as CSV, and the
period's billing dataset to the Parquet warehouse beside the CDRs.

Warehouse layout (Hive-style, one dataset with the CDRs' ``date=`` partitions beside it)::

    <warehouse>/billing/period=2026-11/invoices.parquet
    <warehouse>/billing/period=2026-11/invoice_lines.parquet

Money columns are int64 micro-units; a file is written aside and renamed into place, so a
re-export replaces it whole.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Engine, select

from ocs.billing import schema as S
from ocs.billing.lineage import period_exported
from ocs.lineage import Lineage

CSV_COLUMNS: Final = (
    "invoice",
    "period",
    "account",
    "seq",
    "kind",
    "service_id",
    "ref",
    "description",
    "quantity",
    "amount",
    "amount_micro",
)


def lines_csv(inv: dict[str, Any]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for x in inv["lines"]:
        w.writerow(
            [
                inv["number"] or inv["id"],
                inv["period"],
                inv["account"],
                x["seq"],
                x["kind"],
                x["service_id"],
                x["ref"],
                x["description"],
                x["quantity"],
                x["amount"],
                x["amount_micro"],
            ]
        )
    return out.getvalue()


def _evidence_summary(x: dict[str, Any]) -> str:
    ev = x["evidence"]
    kind = x["kind"]
    if kind.startswith("usage"):
        return f"{ev['events']} events {ev['first_event']} .. {ev['last_event']}"
    if kind == "fixed":
        return f"{ev['days']}/{ev['days_in_month']} days of {ev['month']}, {ev['charging']}"
    if kind == "lad":
        return (
            f"order {ev['order_id']} v{ev['order_version']}: committed {ev['committed']}, "
            f"{ev['days_late']} days after {ev['grace_days']} grace"
        )
    if kind.startswith("penalty"):
        tickets = ", ".join(t[2] for t in ev["tickets"]) or "-"
        return f"availability {ev['availability']} % (target {ev['target']} %); tickets {tickets}"
    return str(ev.get("reason", ""))


def invoice_pdf(inv: dict[str, Any], parties: dict[str, str]) -> bytes:
    """The invoice as a one-or-more-page A4 PDF: header, parties, lines, tax, totals and a
    summary of the evidence behind each line."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    buf = io.BytesIO()
    title = {"invoice": "Invoice", "credit-note": "Credit note", "debit-note": "Debit note"}
    number = inv["number"] or f"DRAFT {inv['id']}"
    doc = SimpleDocTemplate(
        buf,
        pagesize=A4,
        title=f"{title[inv['kind']]} {number}",
        leftMargin=15 * mm,
        rightMargin=15 * mm,
        topMargin=15 * mm,
        bottomMargin=15 * mm,
        invariant=True,
    )
    st = getSampleStyleSheet()
    small = st["BodyText"].clone("small", fontSize=7.5, leading=9)
    story: list[Any] = [
        Paragraph(f"{title[inv['kind']]} {number}", st["Title"]),
        Paragraph(
            f"Period {inv['period']} &nbsp; Status {inv['status']} &nbsp; Currency "
            f"{inv['currency']}"
            + (f" &nbsp; Refers to {inv['refers_to']}" if inv["refers_to"] else ""),
            st["BodyText"],
        ),
        Spacer(1, 4 * mm),
    ]
    party = Table(
        [
            [
                Paragraph(f"<b>From</b><br/>{parties['seller']}", st["BodyText"]),
                Paragraph(f"<b>Bill to</b><br/>{parties['buyer']}", st["BodyText"]),
            ]
        ],
        colWidths=[90 * mm, 90 * mm],
    )
    story += [party, Spacer(1, 5 * mm)]
    if inv["reason"]:
        story += [Paragraph(f"Reason: {inv['reason']}", st["BodyText"]), Spacer(1, 3 * mm)]
    rows: list[list[Any]] = [["#", "Description", "Qty", f"Amount {inv['currency']}"]]
    for x in inv["lines"]:
        rows.append(
            [str(x["seq"]), Paragraph(x["description"], small), str(x["quantity"]), x["amount"]]
        )
    table = Table(rows, colWidths=[10 * mm, 120 * mm, 18 * mm, 32 * mm], repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#dde3ea")),
                ("ALIGN", (2, 0), (-1, -1), "RIGHT"),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.grey),
                ("FONTSIZE", (0, 0), (-1, -1), 8),
            ]
        )
    )
    story += [table, Spacer(1, 4 * mm)]
    tax_label = (
        "Tax (exempt)"
        if inv["tax_mode"] == "exempt"
        else f"Tax {inv['tax_rate']} % ({inv['tax_mode']})"
    )
    sums = Table(
        [
            ["Sum of lines", inv["net"]],
            ["Rounding to the minor unit", inv["rounding"]],
            ["Net" if inv["tax_mode"] != "inclusive" else "Gross", inv["net_rounded"]],
            [tax_label, inv["tax"]],
            ["Total", inv["total"]],
        ],
        colWidths=[148 * mm, 32 * mm],
    )
    sums.setStyle(
        TableStyle(
            [
                ("ALIGN", (1, 0), (1, -1), "RIGHT"),
                ("FONTSIZE", (0, 0), (-1, -1), 9),
                ("FONTNAME", (0, -1), (-1, -1), "Helvetica-Bold"),
                ("LINEABOVE", (0, -1), (-1, -1), 0.75, colors.black),
            ]
        )
    )
    story += [sums, Spacer(1, 6 * mm), Paragraph("Evidence", st["Heading3"])]
    ev_rows = [[str(x["seq"]), Paragraph(_evidence_summary(x), small)] for x in inv["lines"]]
    if ev_rows:
        story.append(Table(ev_rows, colWidths=[10 * mm, 170 * mm]))
    story.append(
        Paragraph(
            f"Every line can be recomputed: ocs billing explain {inv['number'] or inv['id']} LINE. "
            f"Amounts are exact to "
            f"10^-6 {inv['currency']}; the net is rounded once ({inv['rounding_method']}).",
            small,
        )
    )
    doc.build(story)
    return buf.getvalue()


INVOICE_SCHEMA: Final = pa.schema(
    [
        ("invoice_id", pa.int64()),
        ("number", pa.string()),
        ("kind", pa.string()),
        ("status", pa.string()),
        ("account", pa.string()),
        ("agency", pa.string()),
        ("period", pa.string()),
        ("currency", pa.string()),
        ("net", pa.int64()),
        ("net_rounded", pa.int64()),
        ("tax", pa.int64()),
        ("total", pa.int64()),
        ("issued_at", pa.int64()),
    ],
    metadata={b"ocs.money": b"net, net_rounded, tax, total: int64 micro-units"},
)

LINE_SCHEMA: Final = pa.schema(
    [
        ("invoice_id", pa.int64()),
        ("seq", pa.int64()),
        ("kind", pa.string()),
        ("service_id", pa.string()),
        ("ref", pa.string()),
        ("description", pa.string()),
        ("quantity", pa.int64()),
        ("amount", pa.int64()),
        ("evidence", pa.string()),
    ],
    metadata={b"ocs.money": b"amount: int64 micro-units"},
)


def _write(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def export_period(
    engine: Engine, warehouse: str | Path, period: str, lineage: Lineage | None = None
) -> list[Path]:
    """The period's invoices and notes and their lines to the warehouse; the files written
    (and their OpenLineage record, with ``lineage``)."""
    inv, acc, org, ln = S.invoice, S.account, S.org, S.invoice_line
    with engine.connect() as c:
        heads = c.execute(
            select(
                inv.c.id,
                inv.c.number,
                inv.c.kind,
                inv.c.status,
                acc.c.code,
                org.c.code,
                inv.c.period,
                inv.c.currency,
                inv.c.net,
                inv.c.net_rounded,
                inv.c.tax,
                inv.c.total,
                inv.c.issued_at,
            )
            .select_from(inv.join(acc).join(org))
            .where(inv.c.period == period)
            .order_by(inv.c.id)
        ).all()
        ids = [h[0] for h in heads]
        lines = (
            c.execute(
                select(
                    ln.c.invoice_id,
                    ln.c.seq,
                    ln.c.kind,
                    ln.c.service_id,
                    ln.c.ref,
                    ln.c.description,
                    ln.c.quantity,
                    ln.c.amount,
                    ln.c.evidence,
                )
                .where(ln.c.invoice_id.in_(ids))
                .order_by(ln.c.invoice_id, ln.c.seq)
            ).all()
            if ids
            else []
        )
    folder = Path(warehouse) / "billing" / f"period={period}"
    t1 = pa.Table.from_pylist(
        [dict(zip(INVOICE_SCHEMA.names, h, strict=True)) for h in heads], schema=INVOICE_SCHEMA
    )
    t2 = pa.Table.from_pylist(
        [dict(zip(LINE_SCHEMA.names, x, strict=True)) for x in lines], schema=LINE_SCHEMA
    )
    _write(t1, folder / "invoices.parquet")
    _write(t2, folder / "invoice_lines.parquet")
    written = [
        (folder / "invoices.parquet", INVOICE_SCHEMA),
        (folder / "invoice_lines.parquet", LINE_SCHEMA),
    ]
    period_exported(lineage, engine, written)
    return [p for p, _ in written]


def parties(engine: Engine, inv: dict[str, Any]) -> dict[str, str]:
    """Seller and buyer blocks of an invoice's header."""
    with engine.connect() as c:
        r = c.execute(
            select(S.account.c.name, S.org.c.name)
            .select_from(S.account.join(S.org))
            .where(S.account.c.code == inv["account"])
        ).one()
    return {
        "seller": "National Operator plc<br/>Enterprise Billing",
        "buyer": f"{r[1]}<br/>{r[0]} (account {inv['account']})",
    }
