"""Key revocation, forwarding, recall and expiry of deliveries, seen request-signature nonces.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.platform.database import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("agency_keys", sa.Column("revoked_at", UtcDateTime(), nullable=True))
    op.add_column("agency_keys", sa.Column("revocation_reason", sa.String(200), nullable=True))
    op.add_column("notices", sa.Column("forwarded_from", sa.String(36), nullable=True))
    op.add_column("notices", sa.Column("recalled_at", UtcDateTime(), nullable=True))
    op.create_index("ix_notices_in_reply_to", "notices", ["in_reply_to"])
    # Recall and expiry overlay the progress state (delivered -> fetched -> acknowledged) rather than
    # replace it: the desk still sees how far a recalled copy had got.
    op.add_column("deliveries", sa.Column("recalled_at", UtcDateTime(), nullable=True))
    op.add_column("deliveries", sa.Column("expired_at", UtcDateTime(), nullable=True))
    op.create_table(
        "seen_nonces",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("nonce", sa.String(128), primary_key=True),
        sa.Column("seen_at", UtcDateTime(), nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("seen_nonces")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("expired_at")
        batch.drop_column("recalled_at")
    op.drop_index("ix_notices_in_reply_to", "notices")
    with op.batch_alter_table("notices") as batch:
        batch.drop_column("recalled_at")
        batch.drop_column("forwarded_from")
    with op.batch_alter_table("agency_keys") as batch:
        batch.drop_column("revocation_reason")
        batch.drop_column("revoked_at")
