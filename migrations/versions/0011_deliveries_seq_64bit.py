"""Inbox places in 64 bits: `deliveries.seq` (and the webhook columns that hold one) was a 32-bit
integer, which at 6,000 deliveries a second runs out in about four days. SQLite's INTEGER is 64 bits
already; on PostgreSQL the column and its sequence widen in place.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-11
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# (table, column) of every place that holds an inbox place.
PLACES = [
    ("deliveries", "seq"),
    ("webhooks", "cursor_seq"),
    ("webhooks", "head_seq"),
    ("webhook_parked", "delivery_seq"),
]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in PLACES:
        op.alter_column(table, column, type_=sa.BigInteger(), existing_type=sa.Integer())
    op.execute("ALTER SEQUENCE deliveries_seq_seq AS BIGINT")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER SEQUENCE deliveries_seq_seq AS INTEGER")
    for table, column in PLACES:
        op.alter_column(table, column, type_=sa.Integer(), existing_type=sa.BigInteger())
