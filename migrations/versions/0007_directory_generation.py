"""Directory generation: a counter the database bumps on every change to agencies, keys or credentials,
so each service can keep the directory in memory and learn it is stale with one cheap read.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

WATCHED = ("agencies", "agency_keys", "credentials")


def upgrade() -> None:
    op.create_table(
        "directory_generation",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_directory_generation_one_row"),
    )
    op.execute("INSERT INTO directory_generation (id, generation) VALUES (1, 1)")
    # Triggers, not application code: a change made by any path (CLI, API, psql) still invalidates caches.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION directory_bump_generation() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              UPDATE directory_generation SET generation = generation + 1 WHERE id = 1;
              RETURN NULL;
            END $$;
            """
        )
        for table in WATCHED:
            op.execute(
                f"CREATE TRIGGER {table}_bump_generation AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
                f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION directory_bump_generation()"
            )
        return
    for table in WATCHED:
        for operation in ("INSERT", "UPDATE", "DELETE"):
            op.execute(  # names from the constants above, no input
                f"CREATE TRIGGER {table}_bump_on_{operation.lower()} AFTER {operation} ON {table} "  # noqa: S608
                "BEGIN UPDATE directory_generation SET generation = generation + 1 WHERE id = 1; END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in WATCHED:
            op.execute(f"DROP TRIGGER {table}_bump_generation ON {table}")
        op.execute("DROP FUNCTION directory_bump_generation()")
    else:
        for table in WATCHED:
            for operation in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER {table}_bump_on_{operation}")
    op.drop_table("directory_generation")
