"""A full tile's inner nodes stored with it: an inclusion proof read the tile under its leaf and hashed
its 254 inner nodes (tree levels 8L+1 to 8L+7) to find the 8 it needs, about a third of the proof's
time; the appender completes those nodes anyway and now writes them with the tile (tlog_tiles.nodes), and a
proof checks the few it uses against the tile's root instead. The full tiles written before stay without
them (null): a proof hashes those as it did.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tlog_tiles", sa.Column("nodes", sa.LargeBinary(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        # Only a full tile has them, all 254 (SQLite would rebuild the table to add a constraint).
        op.create_check_constraint(
            "ck_tlog_tiles_nodes_of_full_tile",
            "tlog_tiles",
            "nodes IS NULL OR (width = 256 AND length(nodes) = 8128)",
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("ck_tlog_tiles_nodes_of_full_tile", "tlog_tiles", type_="check")
    with op.batch_alter_table("tlog_tiles") as batch:
        batch.drop_column("nodes")
