"""The audit log as an RFC 9162 Merkle tree: its stored subtree hashes, signed checkpoints, cosignatures.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.platform.database import UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLES = ("tlog_nodes", "tlog_checkpoints", "tlog_cosignatures")


def upgrade() -> None:
    op.create_table(
        "tlog_nodes",
        sa.Column("level", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("idx", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
    )
    op.create_table(
        "tlog_checkpoints",
        sa.Column("size", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("root", sa.LargeBinary(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "tlog_cosignatures",
        sa.Column("size", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("witness", sa.String(64), primary_key=True),
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    for table in TABLES:
        _append_only(table)


def _append_only(table: str) -> None:
    """As for audit_log (0001): the database refuses to rewrite the tree or a published checkpoint."""
    message = f"{table} is append-only"
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"""
            CREATE FUNCTION {table}_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              RAISE EXCEPTION '{message}: % refused', TG_OP;
            END $$;
            """
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_update_delete BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {table}_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {table}_refuse_change()"
        )
    else:
        for operation in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{message}: {operation} refused'); END"
            )


def downgrade() -> None:
    # The stored hashes can be recomputed from audit_log (which 0001 keeps); the checkpoints go with them.
    postgresql = op.get_bind().dialect.name == "postgresql"
    for table in reversed(TABLES):
        op.drop_table(table)
        if postgresql:
            op.execute(f"DROP FUNCTION {table}_refuse_change()")
