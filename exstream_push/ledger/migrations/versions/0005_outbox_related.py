"""outbox events keep their related resources (the flow run that stored them)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Events stored before this revision were emitted without related resources, as they stay."""
    with op.batch_alter_table("outboxevent", schema=None) as batch_op:
        batch_op.add_column(sa.Column("related", sa.Text(), nullable=True))
