"""Signed receipts, replies and SLA escalation on deliveries.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.platform.database import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("receipt", sa.Text(), nullable=True))
    op.add_column("deliveries", sa.Column("replied_at", UtcDateTime(), nullable=True))
    op.add_column("deliveries", sa.Column("ack_due_at", UtcDateTime(), nullable=True))
    op.add_column("deliveries", sa.Column("escalated_at", UtcDateTime(), nullable=True))
    # The escalation watch looks only at unacknowledged copies that are due.
    op.create_index("ix_deliveries_ack_due_at", "deliveries", ["ack_due_at"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_ack_due_at", "deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("escalated_at")
        batch.drop_column("ack_due_at")
        batch.drop_column("replied_at")
        batch.drop_column("receipt")
