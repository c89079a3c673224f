"""evidence log: append-only facts about documents, hash-chained per shard, and the shards' heads

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# The vocabulary and the shards as this revision made them; a later change to either is a revision of its own.
_FACTS = (
    "fact IN ('generated', 'notified', 'reminded', 'failed', 'delivered', 'opened', 'accessed', 'acknowledged', "
    "'completed', 'handed_back', 'expired')"
)
_SHARDS = 64
_GENESIS = "0" * 64

# PostgreSQL refuses any change to a stored record, whoever asks (the table's owner included); only a superuser's
# ``session_replication_role = replica`` or ``ALTER TABLE … DISABLE TRIGGER`` gets past it, and either is visible.
_APPEND_ONLY = """
CREATE OR REPLACE FUNCTION evidence_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the evidence log is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$
"""
_TRIGGERS = (
    "CREATE TRIGGER evidence_no_change BEFORE UPDATE OR DELETE ON evidence "
    "FOR EACH ROW EXECUTE FUNCTION evidence_append_only()",
    "CREATE TRIGGER evidence_no_truncate BEFORE TRUNCATE ON evidence "
    "FOR EACH STATEMENT EXECUTE FUNCTION evidence_append_only()",
)


def upgrade() -> None:
    op.create_table(
        "evidence",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("fact", sa.String(), nullable=False),
        sa.Column("use_case", sa.String(), nullable=True),
        sa.Column("document_id", sa.String(), nullable=False),
        sa.Column("customer_id", sa.String(), nullable=True),
        sa.Column("job_id", sa.String(), nullable=True),
        sa.Column("device_id", sa.String(), nullable=True),
        sa.Column("provider", sa.String(), nullable=True),
        sa.Column("provider_message_id", sa.String(), nullable=True),
        sa.Column("stage", sa.String(), nullable=True),
        sa.Column("detail", sa.String(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("prev_hash", sa.String(), nullable=False),
        sa.Column("hash", sa.String(), nullable=False),
        sa.CheckConstraint(_FACTS, name="fact_in_vocabulary"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("seq", "shard"),
    )
    with op.batch_alter_table("evidence", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_evidence_document_id"), ["document_id"], unique=False)
    heads = op.create_table(
        "evidencehead",
        sa.Column("shard", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("shard"),
    )
    # Every shard's head exists from the start, so an append only ever locks rows, never races to create one.
    op.bulk_insert(heads, [{"shard": shard, "seq": 0, "hash": _GENESIS} for shard in range(_SHARDS)])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_APPEND_ONLY)
        for trigger in _TRIGGERS:
            op.execute(trigger)
