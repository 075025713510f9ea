"""Tables and the async engine. The schema itself is made by Alembic (migrations/), never create_all."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every database (SQLite keeps no zone, so one is put back on read)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Agency(Base):
    __tablename__ = "agencies"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))  # desk | partner
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class AgencyKey(Base):
    __tablename__ = "agency_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    agency_id: Mapped[str] = mapped_column(ForeignKey("agencies.id"), index=True)
    use: Mapped[str] = mapped_column(String(8))  # sig | enc
    alg: Mapped[str] = mapped_column(String(32))
    jwk: Mapped[str] = mapped_column(Text)  # public JWK, JSON
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | revoked
    not_before: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    not_after: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    revocation_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)


class Credential(Base):
    __tablename__ = "credentials"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))  # agency | auditor | admin
    agency_id: Mapped[str | None] = mapped_column(ForeignKey("agencies.id"), nullable=True)
    label: Mapped[str] = mapped_column(String(200))
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class Submission(Base):
    """The gateway's record that Kafka acknowledged a notice (state `accepted`)."""

    __tablename__ = "submissions"

    notice_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    sender: Mapped[str] = mapped_column(String(64), index=True)
    case_ref: Mapped[str] = mapped_column(String(32))
    recipients: Mapped[str] = mapped_column(Text)  # JSON list
    envelope_sha256: Mapped[str] = mapped_column(String(64))
    kafka_partition: Mapped[int] = mapped_column(Integer)
    kafka_offset: Mapped[int] = mapped_column(BigInteger)
    submitted_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class NoticeRow(Base):
    """A verified envelope, stored once however many recipients it has."""

    __tablename__ = "notices"

    notice_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    sender: Mapped[str] = mapped_column(String(64), index=True)
    case_ref: Mapped[str] = mapped_column(String(32), index=True)
    notice_type: Mapped[str] = mapped_column(String(32))
    priority: Mapped[str] = mapped_column(String(16))
    tlp: Mapped[str] = mapped_column(String(16))
    sent_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    in_reply_to: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    forwarded_from: Mapped[str | None] = mapped_column(String(36), nullable=True)
    recalled_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    erased_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    envelope_sha256: Mapped[str] = mapped_column(String(64))
    kafka_topic: Mapped[str] = mapped_column(String(200))
    kafka_partition: Mapped[int] = mapped_column(Integer)
    kafka_offset: Mapped[int] = mapped_column(BigInteger)
    ingested_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Delivery(Base):
    """One recipient's inbox row; `seq` orders the inbox and (notice, recipient) makes it exactly-once."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("notice_id", "recipient", name="uq_delivery_notice_recipient"),
        Index("ix_deliveries_recipient_seq", "recipient", "seq"),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    notice_id: Mapped[str] = mapped_column(ForeignKey("notices.notice_id"))
    recipient: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # delivered | fetched | acknowledged
    delivered_at: Mapped[datetime] = mapped_column(UtcDateTime)
    fetched_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    recalled_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    expired_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    receipt: Mapped[str | None] = mapped_column(Text, nullable=True)  # compact JWS by the recipient
    replied_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    ack_due_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True, index=True)
    escalated_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class SeenNonce(Base):
    """Nonces of signed HTTP requests seen within the freshness window: a replayed request is refused."""

    __tablename__ = "seen_nonces"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(128), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


class AuditEntry(Base):
    """Append-only (database triggers refuse UPDATE and DELETE); each entry hashes its predecessor."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    event_id: Mapped[str] = mapped_column(String(128), unique=True)
    event_type: Mapped[str] = mapped_column(String(32), index=True)
    occurred_at: Mapped[str] = mapped_column(String(40))  # ISO text exactly as hashed
    recorded_at: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(128))
    agency: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    notice_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    case_ref: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    envelope_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    details: Mapped[str] = mapped_column(Text)  # canonical JSON
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))


class Webhook(Base):
    """An agency's endpoint that deliveries are POSTed to. `cursor_seq` is the last delivery handled;
    the attempt columns belong to the delivery `head_seq`, so retries survive a restart, and the lease
    lets one dispatcher at a time drive the webhook."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    agency_id: Mapped[str] = mapped_column(ForeignKey("agencies.id"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    filters: Mapped[str] = mapped_column(Text)  # JSON: types, priorities, case_refs; empty admits all
    cursor_seq: Mapped[int] = mapped_column(Integer, default=0)
    head_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class WebhookParked(Base):
    """A delivery a webhook gave up on after its retry budget, until the agency replays it."""

    __tablename__ = "webhook_parked"
    __table_args__ = (UniqueConstraint("webhook_id", "delivery_seq", name="uq_webhook_parked_delivery"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id"), index=True)
    delivery_seq: Mapped[int] = mapped_column(ForeignKey("deliveries.seq"))
    notice_id: Mapped[str] = mapped_column(String(36))
    attempts: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    parked_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    replayed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class TlogNode(Base):
    """Append-only: the hash of the complete subtree of 2**level leaves starting at leaf idx * 2**level
    (level 0: the leaf hashes), written once when the subtree completes (services/common/merkle.py)."""

    __tablename__ = "tlog_nodes"

    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary)


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


class DirectoryGeneration(Base):
    """One row, bumped by triggers on agencies, keys and credentials (migration 0007): a cache of the
    directory is current while this number is unchanged."""

    __tablename__ = "directory_generation"
    __table_args__ = (CheckConstraint("id = 1", name="ck_directory_generation_one_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger)


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _: ConnectionPoolEntry) -> None:
    # WAL lets the three services share one file; busy_timeout makes writers queue instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # No pre-ping: it costs a round trip per checkout. A connection broken by a database restart fails
    # once (503, or a retried batch) and SQLAlchemy then discards the whole pool.
    return create_async_engine(url, pool_size=10, max_overflow=10)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
