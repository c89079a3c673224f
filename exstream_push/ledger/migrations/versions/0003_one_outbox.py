"""one outbox: resource labels and order of outbox events; the failed job ends the watcher records

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 21:39:20.362774
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "failedjobend",
        sa.Column("end_key", sa.String(), nullable=False),
        sa.Column("job_id", sa.String(), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("end_key"),
    )
    with op.batch_alter_table("failedjobend", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_failedjobend_ended_at"), ["ended_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_failedjobend_job_id"), ["job_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_failedjobend_processed_at"), ["processed_at"], unique=False)

    with op.batch_alter_table("outboxevent", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resource_labels", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("position", sa.Integer(), server_default="0", nullable=False))
