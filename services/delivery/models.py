"""The delivered notice (its envelope stored once, by ingest) with one inbox row per recipient, and the
agencies' webhooks with what they parked."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from services.platform.database import INT64, Base, UtcDateTime, utcnow


class NoticeRow(Base):
    """A verified envelope, stored once however many recipients it has."""

    __tablename__ = "notices"
    # The expiry sweep (deadlines.expire_due, every 30 s) reads notices by expires_at: without this it scans
    # the whole table (257 ms at 10^6 notices). Partial: most notices never expire, and cost it nothing.
    __table_args__ = (
        Index(
            "ix_notices_expires_at",
            "expires_at",
            postgresql_where=text("expires_at IS NOT NULL"),
            sqlite_where=text("expires_at IS NOT NULL"),
        ),
    )

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
    # Where its webhook POSTs join the notice's trace (services/platform/tracing.py); metadata only.
    traceparent: Mapped[str | None] = mapped_column(String(55), nullable=True)


AWAITING_ACK = (
    "ack_due_at IS NOT NULL AND state <> 'acknowledged' AND recalled_at IS NULL AND expired_at IS NULL"
)


class Delivery(Base):
    """One recipient's inbox row; `seq` orders the inbox and (notice, recipient) makes it exactly-once."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("notice_id", "recipient", name="uq_delivery_notice_recipient"),
        Index("ix_deliveries_recipient_seq", "recipient", "seq"),
        # The SLA sweep (deadlines.escalate_due) and the desk's overdue list read copies still awaiting
        # their acknowledgement by due time: partial, so acknowledged history does not grow their scan.
        Index(
            "ix_deliveries_awaiting_ack",
            "ack_due_at",
            postgresql_where=text(AWAITING_ACK),
            sqlite_where=text(AWAITING_ACK),
        ),
    )

    seq: Mapped[int] = mapped_column(INT64, primary_key=True, autoincrement=True)
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
    ack_due_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    escalated_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class Webhook(Base):
    """An agency's endpoint that deliveries are POSTed to. `cursor_seq` is the last delivery handled;
    the attempt columns belong to the delivery `head_seq`, so retries survive a restart, and the lease
    lets one dispatcher at a time drive the webhook."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    agency_id: Mapped[str] = mapped_column(ForeignKey("agencies.id"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    filters: Mapped[str] = mapped_column(Text)  # JSON: types, priorities, case_refs; empty admits all
    cursor_seq: Mapped[int] = mapped_column(INT64, default=0)
    head_seq: Mapped[int | None] = mapped_column(INT64, nullable=True)
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
    delivery_seq: Mapped[int] = mapped_column(INT64, ForeignKey("deliveries.seq"))
    notice_id: Mapped[str] = mapped_column(String(36))
    attempts: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    parked_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    replayed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
