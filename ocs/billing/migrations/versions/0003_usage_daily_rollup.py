"""the usage rollup: per account, local day and service, the usage and the pending sums; the
invoice lines' sums by kind indexed (the aggregates read the index, not the lines' evidence)

Created and filled from the stored events: every event joined to the lines that owned its
MSISDN at its time, by the account's local day (billing's day rule, ocs/billing/rollup.py).
From then on the statements that store, mark, free or move usage keep it (docs/billing.md,
"The usage rollup").

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import op

from ocs.billing.rollup import RULE

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_PENDING = sa.text("pending_events <> 0")
_BATCH = 10_000


def upgrade() -> None:
    op.create_table(
        "billing_usage_daily",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("service", sa.String(length=32), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("pending_events", sa.BigInteger(), nullable=False),
        sa.Column("pending", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["billing_account.id"]),
        sa.PrimaryKeyConstraint("account_id", "day", "service"),
        sqlite_with_rowid=False,
    )
    op.create_index(
        "ix_billing_usage_daily_pending",
        "billing_usage_daily",
        ["account_id", "pending"],
        sqlite_where=_PENDING,
        postgresql_where=_PENDING,
    )
    op.create_table(
        "billing_usage_daily_agency",
        sa.Column("agency_id", sa.Integer(), nullable=False),
        sa.Column("billing_day", sa.Integer(), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("service", sa.String(length=32), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("pending_events", sa.BigInteger(), nullable=False),
        sa.Column("pending", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["agency_id"], ["billing_org.id"]),
        sa.PrimaryKeyConstraint("agency_id", "billing_day", "day", "service"),
        sqlite_with_rowid=False,
    )
    op.create_index(
        "ix_billing_invoice_line_sums", "billing_invoice_line", ["invoice_id", "kind", "amount"]
    )
    _backfill()


def _backfill() -> None:
    """The rollup of the events stored so far (the tables as this revision knows them)."""
    conn = op.get_bind()
    sums: dict[tuple[int, str, str], list[int]] = {}
    zones: dict[str, ZoneInfo] = {}
    rows = conn.execute(
        sa.text(
            "SELECT l.account_id, a.timezone, u.ts, u.service, u.amount, u.line_id IS NULL, "
            "a.agency_id, a.billing_day "
            "FROM billing_usage u JOIN billing_line l ON u.msisdn = l.msisdn "
            "AND u.ts >= l.valid_from AND (l.valid_to IS NULL OR u.ts < l.valid_to) "
            "JOIN billing_account a ON a.id = l.account_id"
        )
    )
    by_agency: dict[tuple[int, int, str, str], list[int]] = {}
    for account_id, tz, ts, service, amount, free, agency_id, billing_day in rows:
        zone = zones.get(tz) or zones.setdefault(tz, ZoneInfo(tz))
        day = RULE.day(zone, int(ts))
        for s in (
            sums.setdefault((account_id, day, service), [0, 0, 0, 0]),
            by_agency.setdefault((agency_id, billing_day, day, service), [0, 0, 0, 0]),
        ):
            s[0] += 1
            s[1] += int(amount)
            if free:
                s[2] += 1
                s[3] += int(amount)
    table = sa.table(
        "billing_usage_daily",
        *(sa.column(c) for c in ("account_id", "day", "service", "events", "amount",
                                 "pending_events", "pending")),
    )  # fmt: skip
    out = [
        {"account_id": a, "day": d, "service": svc, "events": s[0], "amount": s[1],
         "pending_events": s[2], "pending": s[3]}
        for (a, d, svc), s in sorted(sums.items())
    ]  # fmt: skip
    for i in range(0, len(out), _BATCH):
        conn.execute(table.insert(), out[i : i + _BATCH])
    agencies = sa.table(
        "billing_usage_daily_agency",
        *(sa.column(c) for c in ("agency_id", "billing_day", "day", "service", "events",
                                 "amount", "pending_events", "pending")),
    )  # fmt: skip
    out = [
        {"agency_id": a, "billing_day": bd, "day": d, "service": svc, "events": s[0],
         "amount": s[1], "pending_events": s[2], "pending": s[3]}
        for (a, bd, d, svc), s in sorted(by_agency.items())
    ]  # fmt: skip
    for i in range(0, len(out), _BATCH):
        conn.execute(agencies.insert(), out[i : i + _BATCH])


def downgrade() -> None:
    op.drop_index("ix_billing_invoice_line_sums", table_name="billing_invoice_line")
    op.drop_table("billing_usage_daily_agency")
    op.drop_index("ix_billing_usage_daily_pending", table_name="billing_usage_daily")
    op.drop_table("billing_usage_daily")
