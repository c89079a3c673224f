"""The ledger's schema as revision 0001 creates it: the tables the models described before migrations existed.

Frozen: this is what a ledger made by an earlier version is brought up to before it is stamped, so it never follows
the models. A change to the schema is a new revision in ``versions/``, never an edit here.
"""

from __future__ import annotations

import sqlalchemy as sa

REVISION = "0001"

# The vocabularies the CHECK constraints held at the baseline; a vocabulary change is a revision that replaces them.
_DOCUMENT_STATES = (
    "state IN ('open', 'paid', 'acknowledged', 'action_completed', 'escalated', 'print_fallback', 'expired', "
    "'reissue_requested')"
)
_STATUSES = "status IN ('pending', 'sent', 'failed', 'skipped', 'quarantined', 'deferred')"
_OPS_ALERT_STATES = "state IN ('received', 'pushed', 'follow_up_requested')"

metadata = sa.MetaData()

sa.Table(
    "deliveryexception",
    metadata,
    sa.Column("dedup_key", sa.String(), primary_key=True),
    sa.Column("job_id", sa.String(), nullable=False),
    sa.Column("channel", sa.String(), nullable=False),
    sa.Column("failure_class", sa.String(), nullable=False),
    sa.Column("document_id", sa.String(), nullable=True),
    sa.Column("customer_ref", sa.String(), nullable=True),
    sa.Column("document_type", sa.String(), nullable=True),
    sa.Column("source", sa.String(), nullable=False),
    sa.Column("detail", sa.Text(), nullable=True),
    sa.Column("next_action", sa.String(), nullable=False),
    sa.Column("state", sa.String(), nullable=False),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("alert_key", sa.String(), nullable=True),
    sa.CheckConstraint(_DOCUMENT_STATES, name="state_in_vocabulary"),
    sa.Index("ix_deliveryexception_job_id", "job_id"),
)
sa.Table(
    "device",
    metadata,
    sa.Column("device_id", sa.String(), primary_key=True),
    sa.Column("customer_id", sa.String(), nullable=False),
    sa.Column("platform", sa.String(), nullable=False),
    sa.Column("token", sa.Text(), nullable=False),
    sa.Column("active", sa.Boolean(), nullable=False),
    sa.Column("push_opt_in", sa.Boolean(), nullable=False),
    sa.Column("locale", sa.String(), nullable=True),
    sa.Column("timezone", sa.String(), nullable=True),
    sa.Column("categories", sa.String(), nullable=False),
    sa.Column("deactivated_reason", sa.String(), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_device_customer_id", "customer_id"),
)
sa.Table(
    "document",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("use_case", sa.String(), nullable=False),
    sa.Column("document_id", sa.String(), nullable=False),
    sa.Column("job_id", sa.String(), nullable=False),
    sa.Column("step_id", sa.String(), nullable=False),
    sa.Column("position", sa.Integer(), nullable=False),
    sa.Column("customer_id", sa.String(), nullable=False),
    sa.Column("document_type", sa.String(), nullable=False),
    sa.Column("locale", sa.String(), nullable=True),
    sa.Column("ref", sa.String(), nullable=False),
    sa.Column("attributes", sa.Text(), nullable=True),
    sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("state", sa.String(), nullable=False),
    sa.Column("state_changed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("engagement", sa.String(), nullable=True),
    sa.Column("engagement_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("fallback_requested_at", sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint(_DOCUMENT_STATES, name="state_in_vocabulary"),
    sa.UniqueConstraint("use_case", "document_id"),
    sa.Index("ix_document_customer_id", "customer_id"),
    sa.Index("ix_document_job_id", "job_id"),
    sa.Index("ix_document_ref", "ref", unique=True),
)
sa.Table(
    "engagementevent",
    metadata,
    sa.Column("event_id", sa.String(), primary_key=True),
    sa.Column("type", sa.String(), nullable=False),
    sa.Column("use_case", sa.String(), nullable=True),
    sa.Column("document_id", sa.String(), nullable=False),
    sa.Column("customer_id", sa.String(), nullable=False),
    sa.Column("device_id", sa.String(), nullable=True),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_engagementevent_document_id", "document_id"),
    sa.Index("ix_engagementevent_type", "type"),
    sa.Index("ix_engagementevent_use_case", "use_case"),
)
sa.Table(
    "notification",
    metadata,
    sa.Column("key", sa.String(), primary_key=True),
    sa.Column("use_case", sa.String(), nullable=False),
    sa.Column("document_id", sa.String(), nullable=False),
    sa.Column("job_id", sa.String(), nullable=False),
    sa.Column("customer_id", sa.String(), nullable=False),
    sa.Column("device_id", sa.String(), nullable=False),
    sa.Column("stage", sa.String(), nullable=False),
    sa.Column("status", sa.String(), nullable=False),
    sa.Column("reason", sa.String(), nullable=True),
    sa.Column("provider_message_id", sa.String(), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("as_of", sa.DateTime(timezone=True), nullable=True),
    sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint(_STATUSES, name="status_in_vocabulary"),
    sa.Index("ix_notification_customer_id", "customer_id"),
    sa.Index("ix_notification_document_id", "document_id"),
    sa.Index("ix_notification_job_id", "job_id"),
    sa.Index("ix_notification_status", "status"),
    sa.Index("ix_notification_use_case", "use_case"),
)
sa.Table(
    "opsalert",
    metadata,
    sa.Column("alert_id", sa.String(), primary_key=True),
    sa.Column("kind", sa.String(), nullable=False),
    sa.Column("severity", sa.String(), nullable=False),
    sa.Column("audience", sa.Text(), nullable=False),
    sa.Column("message_key", sa.String(), nullable=False),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("state", sa.String(), nullable=False),
    sa.Column("pushed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("follow_up_posted_at", sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint(_OPS_ALERT_STATES, name="state_in_vocabulary"),
)
sa.Table(
    "outboxevent",
    metadata,
    sa.Column("id", sa.String(), primary_key=True),
    sa.Column("event", sa.String(), nullable=False),
    sa.Column("resource_id", sa.String(), nullable=False),
    sa.Column("payload", sa.Text(), nullable=False),
    sa.Column("occurred", sa.DateTime(timezone=True), nullable=False),
    sa.Column("emitted_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_outboxevent_emitted_at", "emitted_at"),
    sa.Index("ix_outboxevent_event", "event"),
)
sa.Table(
    "postback",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("channel", sa.String(), nullable=False),
    sa.Column("job_id", sa.String(), nullable=False),
    sa.Column("digest", sa.String(), nullable=False),
    sa.Column("rows", sa.Integer(), nullable=False),
    sa.Column("response", sa.Text(), nullable=True),
    sa.Column("posted_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("channel", "job_id", "digest"),
)
sa.Table(
    "preference",
    metadata,
    sa.Column("customer_id", sa.String(), primary_key=True),
    sa.Column("push_opt_in", sa.Boolean(), nullable=True),
    sa.Column("categories", sa.String(), nullable=True),
    sa.Column("preferred_channels", sa.Text(), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
sa.Table(
    "rejectedrecord",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("use_case", sa.String(), nullable=False),
    sa.Column("job_id", sa.String(), nullable=False),
    sa.Column("source", sa.String(), nullable=False),
    sa.Column("position", sa.Integer(), nullable=False),
    sa.Column("line", sa.Integer(), nullable=True),
    sa.Column("status", sa.String(), nullable=False),
    sa.Column("reason", sa.String(), nullable=False),
    sa.Column("document_id", sa.String(), nullable=True),
    sa.Column("customer_id", sa.String(), nullable=True),
    sa.Column("raw", sa.Text(), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("use_case", "job_id", "source", "position"),
    sa.CheckConstraint(_STATUSES, name="status_in_vocabulary"),
    sa.Index("ix_rejectedrecord_job_id", "job_id"),
    sa.Index("ix_rejectedrecord_use_case", "use_case"),
)
sa.Table(
    "seenrequest",
    metadata,
    sa.Column("signature", sa.String(), primary_key=True),
    sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_seenrequest_seen_at", "seen_at"),
)
sa.Table(
    "trackingevent",
    metadata,
    sa.Column("event_id", sa.String(), primary_key=True),
    sa.Column("schema_type", sa.String(), nullable=False),
    sa.Column("payload", sa.Text(), nullable=False),
    sa.Column("event_date", sa.DateTime(timezone=True), nullable=True),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_trackingevent_processed_at", "processed_at"),
    sa.Index("ix_trackingevent_schema_type", "schema_type"),
)
sa.Table(
    "watermark",
    metadata,
    sa.Column("name", sa.String(), primary_key=True),
    sa.Column("value", sa.String(), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
sa.Table(
    "workbatch",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("run_id", sa.Integer(), nullable=False),
    sa.Column("number", sa.Integer(), nullable=False),
    sa.Column("path", sa.Text(), nullable=False),
    sa.Column("state", sa.String(), nullable=False),
    sa.Column("claimed_by", sa.String(), nullable=True),
    sa.Column("lease_expires", sa.DateTime(timezone=True), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("run_id", "number"),
    sa.Index("ix_workbatch_run_id", "run_id"),
    sa.Index("ix_workbatch_state", "state"),
)
sa.Table(
    "workrun",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("run_key", sa.String(), nullable=False),
    sa.Column("generation", sa.Integer(), nullable=False),
    sa.Column("state", sa.String(), nullable=False),
    sa.Column("claimed_by", sa.String(), nullable=True),
    sa.Column("lease_expires", sa.DateTime(timezone=True), nullable=True),
    sa.Column("batches", sa.Integer(), nullable=False),
    sa.Column("totals", sa.Text(), nullable=True),
    sa.Column("content", sa.String(), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("run_key", "generation"),
    sa.Index("ix_workrun_run_key", "run_key"),
)
