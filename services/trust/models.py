"""The directory's tables: agencies, their public keys, API credentials, seen request nonces, and the
generation number that tells a cached directory it is current."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from services.platform.database import Base, UtcDateTime, utcnow


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


class SeenNonce(Base):
    """Nonces of signed HTTP requests seen within the freshness window: a replayed request is refused."""

    __tablename__ = "seen_nonces"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(128), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


class DirectoryGeneration(Base):
    """One row, bumped by triggers on agencies, keys and credentials (migration 0007): a cache of the
    directory is current while this number is unchanged."""

    __tablename__ = "directory_generation"
    __table_args__ = (CheckConstraint("id = 1", name="ck_directory_generation_one_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger)
