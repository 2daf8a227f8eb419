"""indexes for a bill run's per-account look-ups: invoices by account, fixed services by
account, orders by service

Without them each account's draft scanned every fixed service, every order and, joined to
their invoices, every invoice line written so far (what earlier invoices credited): a run's
cost grew with the square of the accounts (bench/billing.py, 1,000 accounts: ~20 % of the
SQLite run's CPU).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_billing_invoice_account", "billing_invoice", ["account_id", "kind"])
    op.create_index("ix_billing_fixed_service_account", "billing_fixed_service", ["account_id"])
    op.create_index("ix_billing_order_service", "billing_order", ["service_id"])


def downgrade() -> None:
    op.drop_index("ix_billing_order_service", table_name="billing_order")
    op.drop_index("ix_billing_fixed_service_account", table_name="billing_fixed_service")
    op.drop_index("ix_billing_invoice_account", table_name="billing_invoice")
