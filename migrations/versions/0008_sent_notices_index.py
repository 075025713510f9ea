"""A sender's notices newest first: the index the list of sent notices (GET /v1/notices) reads a page
from, whatever the sender's history; it also serves every lookup by sender alone, so it replaces that one.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_submissions_sender_submitted", "submissions", ["sender", "submitted_at", "notice_id"])
    op.drop_index("ix_submissions_sender", table_name="submissions")


def downgrade() -> None:
    op.create_index("ix_submissions_sender", "submissions", ["sender"])
    op.drop_index("ix_submissions_sender_submitted", table_name="submissions")
