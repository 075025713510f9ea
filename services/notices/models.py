"""The gateway's record of what it submitted (state `accepted`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from services.platform.database import Base, UtcDateTime, utcnow


class Submission(Base):
    """The gateway's record that Kafka acknowledged a notice (state `accepted`)."""

    __tablename__ = "submissions"
    # A sender's notices newest first, a page at a time (GET /v1/notices).
    __table_args__ = (Index("ix_submissions_sender_submitted", "sender", "submitted_at", "notice_id"),)

    notice_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    sender: Mapped[str] = mapped_column(String(64))
    case_ref: Mapped[str] = mapped_column(String(32))
    recipients: Mapped[str] = mapped_column(Text)  # JSON list
    envelope_sha256: Mapped[str] = mapped_column(String(64))
    kafka_partition: Mapped[int] = mapped_column(Integer)
    kafka_offset: Mapped[int] = mapped_column(BigInteger)
    submitted_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
