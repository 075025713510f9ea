"""The audit log's tables: entries (append-only), the Merkle tree's tiles, signed checkpoints,
witnesses' cosignatures, and the lease naming the one replica that signs."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, LargeBinary, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from services.platform.database import Base, UtcDateTime, utcnow


class AuditEntry(Base):
    """Append-only (database triggers refuse UPDATE and DELETE); each entry hashes its predecessor."""

    __tablename__ = "audit_log"
    # Read by one notice_id at a time only: a hash index costs an append less than a b-tree (0016).
    __table_args__ = (Index("ix_audit_log_notice_id", "notice_id", postgresql_using="hash"),)

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    event_id: Mapped[str] = mapped_column(String(128), unique=True)
    event_type: Mapped[str] = mapped_column(String(32), index=True)
    occurred_at: Mapped[str] = mapped_column(String(40))  # ISO text exactly as hashed
    recorded_at: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(128))
    agency: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    notice_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    case_ref: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    envelope_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    details: Mapped[str] = mapped_column(Text)  # canonical JSON
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))


class TlogTile(Base):
    """Append-only: a C2SP tlog-tiles tile, the `width` hashes (up to 256, 32 bytes each) of tree level
    8 * level from node idx * 256 (services/transparency/tiles.py). A partial tile is never rewritten: a
    wider row of the same (level, idx) supersedes it, and only then may it be deleted (the triggers check
    that the wider row begins with its hashes); readers take the widest."""

    __tablename__ = "tlog_tiles"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    width: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    hashes: Mapped[bytes] = mapped_column(LargeBinary)
    # A full tile's inner nodes (tiles.TileNodes.inner: tree levels 8L+1 to 8L+7 over its span, 254
    # hashes), written with it so that a proof reads them rather than hashing the tile; null on a partial
    # tile, and on the full tiles written before migration 0015 (a proof hashes those).
    nodes: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class TlogCheckpoint(Base):
    """Append-only: a checkpoint the audit service signed, as the signed note it published."""

    __tablename__ = "tlog_checkpoints"

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary)
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class TlogCosignature(Base):
    """Append-only: a witness's cosignature line over the checkpoint of `size`, checked when posted."""

    __tablename__ = "tlog_cosignatures"

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    witness: Mapped[str] = mapped_column(String(64), primary_key=True)
    line: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class AuditLease(Base):
    """One row per lease (only "checkpoints"): who holds it until when; `epoch` grows with every change
    of holder (services/transparency/lease.py)."""

    __tablename__ = "audit_lease"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    epoch: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
