"""Directory, submissions, notices, inboxes and the append-only audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.platform.database import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

APPEND_ONLY_MESSAGE = "audit_log is append-only"


def upgrade() -> None:
    op.create_table(
        "agencies",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint("kind in ('desk', 'partner')", name="ck_agencies_kind"),
    )
    op.create_table(
        "agency_keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("agency_id", sa.String(64), sa.ForeignKey("agencies.id"), nullable=False, index=True),
        sa.Column("use", sa.String(8), nullable=False),
        sa.Column("alg", sa.String(32), nullable=False),
        sa.Column("jwk", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("not_before", UtcDateTime(), nullable=False),
        sa.Column("not_after", UtcDateTime(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint("use in ('sig', 'enc')", name="ck_agency_keys_use"),
        sa.CheckConstraint("status in ('active', 'revoked')", name="ck_agency_keys_status"),
    )
    op.create_table(
        "credentials",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("agency_id", sa.String(64), sa.ForeignKey("agencies.id"), nullable=True),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
        sa.CheckConstraint("role in ('agency', 'auditor', 'admin')", name="ck_credentials_role"),
        sa.CheckConstraint("(role = 'agency') = (agency_id is not null)", name="ck_credentials_agency"),
    )
    op.create_table(
        "submissions",
        sa.Column("notice_id", sa.String(36), primary_key=True),
        sa.Column("sender", sa.String(64), nullable=False, index=True),
        sa.Column("case_ref", sa.String(32), nullable=False),
        sa.Column("recipients", sa.Text(), nullable=False),
        sa.Column("envelope_sha256", sa.String(64), nullable=False),
        sa.Column("kafka_partition", sa.Integer(), nullable=False),
        sa.Column("kafka_offset", sa.BigInteger(), nullable=False),
        sa.Column("submitted_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "notices",
        sa.Column("notice_id", sa.String(36), primary_key=True),
        sa.Column("sender", sa.String(64), nullable=False, index=True),
        sa.Column("case_ref", sa.String(32), nullable=False, index=True),
        sa.Column("notice_type", sa.String(32), nullable=False),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("tlp", sa.String(16), nullable=False),
        sa.Column("sent_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=True),
        sa.Column("in_reply_to", sa.String(36), nullable=True),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        sa.Column("envelope_sha256", sa.String(64), nullable=False),
        sa.Column("kafka_topic", sa.String(200), nullable=False),
        sa.Column("kafka_partition", sa.Integer(), nullable=False),
        sa.Column("kafka_offset", sa.BigInteger(), nullable=False),
        sa.Column("ingested_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "deliveries",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("notice_id", sa.String(36), sa.ForeignKey("notices.notice_id"), nullable=False),
        sa.Column("recipient", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("delivered_at", UtcDateTime(), nullable=False),
        sa.Column("fetched_at", UtcDateTime(), nullable=True),
        sa.Column("acknowledged_at", UtcDateTime(), nullable=True),
        sa.UniqueConstraint("notice_id", "recipient", name="uq_delivery_notice_recipient"),
        sa.CheckConstraint("state in ('delivered', 'fetched', 'acknowledged')", name="ck_deliveries_state"),
    )
    op.create_index("ix_deliveries_recipient_seq", "deliveries", ["recipient", "seq"])
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("event_id", sa.String(128), nullable=False, unique=True),
        sa.Column("event_type", sa.String(32), nullable=False, index=True),
        sa.Column("occurred_at", sa.String(40), nullable=False),
        sa.Column("recorded_at", sa.String(40), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("agency", sa.String(64), nullable=True, index=True),
        sa.Column("notice_id", sa.String(36), nullable=True, index=True),
        sa.Column("case_ref", sa.String(32), nullable=True, index=True),
        sa.Column("envelope_sha256", sa.String(64), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("entry_hash", sa.String(64), nullable=False),
    )
    _append_only("audit_log")


def _append_only(table: str) -> None:
    """The database itself refuses to rewrite history, whoever connects."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"""
            CREATE FUNCTION {table}_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              RAISE EXCEPTION '{APPEND_ONLY_MESSAGE}: % refused', TG_OP;
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
                f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}: {operation} refused'); END"
            )


def downgrade() -> None:
    # Refusing to drop the audit log on downgrade keeps history out of a migration's reach.
    raise RuntimeError("deskbridge's first migration cannot be downgraded: it would destroy the audit log")
