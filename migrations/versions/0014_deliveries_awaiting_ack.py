"""Copies awaiting acknowledgement: the SLA sweep (every 30 s in ingest) and the desk's overdue list read
them by due time through an index of every copy that ever had a due time, acknowledged history included,
so their scan grew with it; a partial index holds only the copies still waiting.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

WHERE = sa.text(
    "ack_due_at IS NOT NULL AND state <> 'acknowledged' AND recalled_at IS NULL AND expired_at IS NULL"
)


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_awaiting_ack", "deliveries", ["ack_due_at"], postgresql_where=WHERE, sqlite_where=WHERE
    )
    op.drop_index("ix_deliveries_ack_due_at", table_name="deliveries")


def downgrade() -> None:
    op.create_index("ix_deliveries_ack_due_at", "deliveries", ["ack_due_at"])
    op.drop_index("ix_deliveries_awaiting_ack", table_name="deliveries")
