"""device provider (fcm, apns, webpush) and a Web Push subscription's keys

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 05:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# The vocabulary as this revision made it; a later change to it is a revision of its own.
_PROVIDERS = "provider IN ('fcm', 'apns', 'webpush')"


def upgrade() -> None:
    """Every device registered before this revision was an FCM one, so the default fills existing rows."""
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.add_column(sa.Column("provider", sa.String(), server_default="fcm", nullable=False))
        batch_op.add_column(sa.Column("webpush_p256dh", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("webpush_auth", sa.String(), nullable=True))
        batch_op.create_check_constraint("provider_in_vocabulary", sa.text(_PROVIDERS))
