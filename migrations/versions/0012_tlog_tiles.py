"""The audit tree as C2SP tlog-tiles: tlog_tiles (append-only: a partial tile is superseded by a wider row,
and only a superseded row may be deleted) replaces tlog_nodes, whose rows at the tree levels tiles store
(0, 8, 16, ...) become the tiles.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-14
"""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa
from alembic import op

from services.transparency import merkle

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

HEIGHT, WIDTH = 8, 256
CHUNK = 64 * WIDTH  # nodes read per query


def upgrade() -> None:
    op.create_table(
        "tlog_tiles",
        sa.Column("level", sa.SmallInteger(), primary_key=True, autoincrement=False),
        sa.Column("idx", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("width", sa.SmallInteger(), primary_key=True, autoincrement=False),
        sa.Column("hashes", sa.LargeBinary(), nullable=False),
    )
    _tiles_append_only()
    bind = op.get_bind()
    tiles = sa.table(
        "tlog_tiles",
        sa.column("level", sa.SmallInteger()),
        sa.column("idx", sa.BigInteger()),
        sa.column("width", sa.SmallInteger()),
        sa.column("hashes", sa.LargeBinary()),
    )
    levels = bind.execute(sa.text("SELECT DISTINCT level FROM tlog_nodes")).scalars()
    for level in sorted(lv for lv in levels if lv % HEIGHT == 0):
        count = bind.execute(
            sa.text("SELECT count(*) FROM tlog_nodes WHERE level = :l"), {"l": level}
        ).scalar()
        for first in range(0, int(count or 0), CHUNK):
            query = (
                "SELECT idx, hash FROM tlog_nodes WHERE level = :l AND idx >= :a AND idx < :b ORDER BY idx"
            )
            rows = bind.execute(sa.text(query), {"l": level, "a": first, "b": first + CHUNK}).all()
            if [idx for idx, _ in rows] != list(range(first, first + len(rows))):
                raise RuntimeError(f"tlog_nodes level {level} has gaps from index {first}: not a tree")
            op.bulk_insert(tiles, list(_tiles(level // HEIGHT, first, b"".join(bytes(h) for _, h in rows))))
    op.drop_table("tlog_nodes")
    if bind.dialect.name == "postgresql":
        op.execute("DROP FUNCTION tlog_nodes_refuse_change()")


def downgrade() -> None:
    # Every complete subtree again, rebuilt from the leaf hashes of the level-0 tiles.
    op.create_table(
        "tlog_nodes",
        sa.Column("level", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("idx", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
    )
    _append_only("tlog_nodes")
    bind = op.get_bind()
    nodes = sa.table(
        "tlog_nodes",
        sa.column("level", sa.Integer()),
        sa.column("idx", sa.BigInteger()),
        sa.column("hash", sa.LargeBinary()),
    )
    edge = merkle.CompactRange()
    widest = (
        "SELECT t.hashes FROM tlog_tiles t WHERE t.level = 0 AND t.width = "
        "(SELECT max(width) FROM tlog_tiles w WHERE w.level = 0 AND w.idx = t.idx) ORDER BY t.idx"
    )
    for (hashes,) in bind.execute(sa.text(widest)):
        leaves = [bytes(hashes[at : at + 32]) for at in range(0, len(hashes), 32)]
        op.bulk_insert(
            nodes,
            [
                {"level": level, "idx": idx, "hash": value}
                for leaf in leaves
                for level, idx, value in edge.append(leaf)
            ],
        )
    op.drop_table("tlog_tiles")
    if bind.dialect.name == "postgresql":
        op.execute("DROP FUNCTION tlog_tiles_refuse_change()")


def _tiles(tile_level: int, first: int, hashes: bytes) -> Iterator[dict[str, object]]:
    """The tiles of consecutive hashes from node `first` (a multiple of 256); the last may be partial."""
    for at in range(0, len(hashes), WIDTH * 32):
        row = hashes[at : at + WIDTH * 32]
        yield {
            "level": tile_level,
            "idx": (first + at // 32) // WIDTH,
            "width": len(row) // 32,
            "hashes": row,
        }


# A row may go only when a wider row of the same tile begins with its hashes: nothing it held is lost.
SUPERSEDED = """EXISTS (
    SELECT 1 FROM tlog_tiles w WHERE w.level = OLD.level AND w.idx = OLD.idx AND w.width > OLD.width
    AND substr(w.hashes, 1, length(OLD.hashes)) = OLD.hashes
)"""


def _tiles_append_only() -> None:
    """As for the other log tables, UPDATE and TRUNCATE are refused, and DELETE too but of a partial tile
    a wider version of it superseded: what a tile held can never change or disappear."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"""
            CREATE FUNCTION tlog_tiles_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF TG_OP = 'DELETE' THEN
                IF {SUPERSEDED} THEN
                  RETURN OLD;
                END IF;
              END IF;
              RAISE EXCEPTION 'tlog_tiles is append-only: % refused', TG_OP;
            END $$;
            """
        )
        op.execute(
            "CREATE TRIGGER tlog_tiles_no_update_delete BEFORE UPDATE OR DELETE ON tlog_tiles "
            "FOR EACH ROW EXECUTE FUNCTION tlog_tiles_refuse_change()"
        )
        op.execute(
            "CREATE TRIGGER tlog_tiles_no_truncate BEFORE TRUNCATE ON tlog_tiles "
            "FOR EACH STATEMENT EXECUTE FUNCTION tlog_tiles_refuse_change()"
        )
    else:
        op.execute(
            "CREATE TRIGGER tlog_tiles_no_update BEFORE UPDATE ON tlog_tiles "
            "BEGIN SELECT RAISE(ABORT, 'tlog_tiles is append-only: UPDATE refused'); END"
        )
        op.execute(
            f"CREATE TRIGGER tlog_tiles_no_delete BEFORE DELETE ON tlog_tiles WHEN NOT {SUPERSEDED} "
            "BEGIN SELECT RAISE(ABORT, 'tlog_tiles is append-only: DELETE refused'); END"
        )


def _append_only(table: str) -> None:
    """As 0005 made tlog_nodes: the database refuses to rewrite the tree."""
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
