"""Notices by expiry: the index the expiry sweep reads (every 30 s in ingest), which otherwise scans every
notice stored; partial, since most notices never expire.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-15
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

WHERE = sa.text("expires_at IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_notices_expires_at", "notices", ["expires_at"], postgresql_where=WHERE, sqlite_where=WHERE
    )


def downgrade() -> None:
    op.drop_index("ix_notices_expires_at", table_name="notices")
