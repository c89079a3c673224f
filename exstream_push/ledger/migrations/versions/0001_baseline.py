"""Baseline: the ledger as the models made it before migrations, every table, index, unique and CHECK constraint.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

from exstream_push.ledger.migrations import baseline

revision = baseline.REVISION
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    baseline.metadata.create_all(op.get_bind(), checkfirst=False)
