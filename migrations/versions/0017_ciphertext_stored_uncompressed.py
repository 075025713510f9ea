"""Envelopes and tree hashes stored out of line without compression (PostgreSQL's STORAGE EXTERNAL).

An envelope is mostly base64url of ciphertext, and a tile random hashes: neither compresses. With the
default storage PostgreSQL still tries pglz on every value over 2 KB before it gives up and stores it as
it was. For an envelope (~12 KB) the attempt runs through the whole value, since its JSON start finds
early matches: measured, 112 us of PostgreSQL CPU to insert one against 44 us without the attempt. For a
tile it is 6-18 us of 22-40. Uncompressed also makes a slice of a tile (`substr`, an inclusion proof's
path) read only the chunks it covers, which a compressed value would have to decompress up to.

Values already stored stay as they are (they were stored uncompressed anyway, the attempts having
failed); only new ones skip the attempt. SQLite has no such setting.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

COLUMNS = (("notices", "envelope"), ("tlog_tiles", "hashes"), ("tlog_tiles", "nodes"))


def _storage(mode: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in COLUMNS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE {mode}")


def upgrade() -> None:
    _storage("EXTERNAL")


def downgrade() -> None:
    _storage("EXTENDED")
