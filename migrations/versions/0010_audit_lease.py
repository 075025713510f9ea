"""The audit service's lease: one row naming the replica that signs checkpoints, until when, and the
epoch that every change of holder bumps (the fencing token a signing transaction checks).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-10
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from services.platform.database import UtcDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    lease = op.create_table(
        "audit_lease",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
    )
    # Seeded, so replicas only ever update it: taking over is one conditional UPDATE, never an insert race.
    never = datetime(1970, 1, 1, tzinfo=UTC)
    op.bulk_insert(lease, [{"name": "checkpoints", "holder": "", "epoch": 0, "expires_at": never}])


def downgrade() -> None:
    op.drop_table("audit_lease")
