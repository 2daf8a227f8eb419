"""the lines' revision: a value every change of who owns which line changes (in the same
transaction), so ingestion keeps the owners of the lines between batches and reads them again
only after a change (ocs/billing/rollup.py, ``owners``).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "billing_revision",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    # (random: a database created again at the same address does not look unchanged)
    op.bulk_insert(table, [{"name": "lines", "value": secrets.randbits(62)}])


def downgrade() -> None:
    op.drop_table("billing_revision")
