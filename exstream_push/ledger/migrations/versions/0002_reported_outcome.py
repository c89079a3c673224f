"""reported outcome per document and channel

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 21:09:20.610621
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reportedoutcome",
        sa.Column("channel", sa.String(), nullable=False),
        sa.Column("use_case", sa.String(), nullable=False),
        sa.Column("job_id", sa.String(), nullable=False),
        sa.Column("document_id", sa.String(), nullable=False),
        sa.Column("push_status", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("push_status IN ('notified', 'not_notified')", name="push_status_in_vocabulary"),
        sa.PrimaryKeyConstraint("channel", "use_case", "job_id", "document_id"),
    )
