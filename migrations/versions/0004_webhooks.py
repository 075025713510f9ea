"""Webhook subscriptions: endpoints, their position and retry state, and the deliveries they parked.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.platform.database import UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhooks",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("agency_id", sa.String(64), sa.ForeignKey("agencies.id"), nullable=False, index=True),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("filters", sa.Text(), nullable=False),
        sa.Column("cursor_seq", sa.Integer(), nullable=False),
        # The retry state belongs to one delivery, so a head that leaves (recalled, expired) resets it.
        sa.Column("head_seq", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", UtcDateTime(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "webhook_parked",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("webhook_id", sa.String(32), sa.ForeignKey("webhooks.id"), nullable=False, index=True),
        sa.Column("delivery_seq", sa.Integer(), sa.ForeignKey("deliveries.seq"), nullable=False),
        sa.Column("notice_id", sa.String(36), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("parked_at", UtcDateTime(), nullable=False),
        sa.Column("replayed_at", UtcDateTime(), nullable=True),
        sa.UniqueConstraint("webhook_id", "delivery_seq", name="uq_webhook_parked_delivery"),
    )


def downgrade() -> None:
    op.drop_table("webhook_parked")
    op.drop_table("webhooks")
