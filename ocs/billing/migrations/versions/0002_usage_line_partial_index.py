"""the usage events' line index holds billed events only (partial: line_id IS NOT NULL)

Marking a line's events then adds entries clustered by the new line id, instead of also
removing each event's entry from the long, rowid-ordered run of NULLs of every unbilled event
(on SQLite, a page written per event). Queries by line id (explain, dropping a draft) use it
as before; "not billed yet" never could.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_BILLED = sa.text("line_id IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_billing_usage_line", table_name="billing_usage")
    op.create_index(
        "ix_billing_usage_line",
        "billing_usage",
        ["line_id"],
        sqlite_where=_BILLED,
        postgresql_where=_BILLED,
    )


def downgrade() -> None:
    op.drop_index("ix_billing_usage_line", table_name="billing_usage")
    op.create_index("ix_billing_usage_line", "billing_usage", ["line_id"])
