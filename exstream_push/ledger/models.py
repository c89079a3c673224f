"""Ledger tables. One model serves as table and as the row shape the CLI and reports read."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from exstream_push.status import DocumentState, EvidenceFact, OpsAlertState, PushProvider, PushStatus, Status


def one_of(column: str, vocabulary: type[StrEnum]) -> CheckConstraint:
    """The database itself refuses a status outside the one vocabulary, whichever code writes it."""
    allowed = ", ".join(f"'{member.value}'" for member in vocabulary)
    return CheckConstraint(f"{column} IN ({allowed})", name=f"{column}_in_vocabulary")


class Device(SQLModel, table=True):
    """A customer's registered app instance; categories is ';'-separated, empty meaning all.

    ``provider`` says how it is reached: ``token`` is an FCM registration token, an APNs device token (hex), or a
    Web Push subscription's endpoint URL, whose keys are ``webpush_p256dh`` and ``webpush_auth``."""

    __table_args__ = (one_of("provider", PushProvider),)

    device_id: str = Field(primary_key=True)
    customer_id: str = Field(index=True)
    platform: str
    provider: str = Field(default=PushProvider.FCM.value, sa_column_kwargs={"server_default": PushProvider.FCM.value})
    token: str = Field(sa_column=Column(Text, nullable=False))
    webpush_p256dh: str | None = None
    webpush_auth: str | None = None
    active: bool = True
    push_opt_in: bool = True
    locale: str | None = None
    timezone: str | None = None
    categories: str = ""
    deactivated_reason: str | None = None
    updated_at: datetime


class Document(SQLModel, table=True):
    """A document seen in an Exstream run, with where it was seen so a re-run is told from a duplicate."""

    __table_args__ = (UniqueConstraint("use_case", "document_id"), one_of("state", DocumentState))

    id: int | None = Field(default=None, primary_key=True)
    use_case: str
    document_id: str
    job_id: str = Field(index=True)
    step_id: str
    position: int
    customer_id: str = Field(index=True)
    document_type: str
    locale: str | None = None
    ref: str = Field(index=True, unique=True)
    attributes: str | None = Field(default=None, sa_column=Column(Text))
    first_seen_at: datetime
    state: str = "open"
    state_changed_at: datetime | None = None
    engagement: str | None = None  # furthest lifecycle step reached: sent, delivered, opened, …
    engagement_at: datetime | None = None
    fallback_requested_at: datetime | None = None


class Notification(SQLModel, table=True):
    """One per (use case, document, device, stage); its key is the idempotency key claimed before sending.

    A document with no device to reach gets one row with an empty device_id, so every document is accounted for.
    ``stage`` is empty for a one-off notice and names the reminder (``due_soon``, ``+3d``…) otherwise; ``as_of``
    is the moment the deciding run acted at, which frequency caps count by.
    """

    __table_args__ = (one_of("status", Status),)

    key: str = Field(primary_key=True)
    use_case: str = Field(index=True)
    document_id: str = Field(index=True)
    job_id: str = Field(index=True)
    customer_id: str = Field(index=True)
    device_id: str
    stage: str = ""
    status: str = Field(index=True)
    reason: str | None = None
    provider_message_id: str | None = None
    attempts: int = 0
    as_of: datetime | None = None
    not_before: datetime | None = None
    created_at: datetime
    updated_at: datetime


class RejectedRecord(SQLModel, table=True):
    """An input record not turned into notifications: malformed (quarantined) or a duplicate (skipped)."""

    __table_args__ = (UniqueConstraint("use_case", "job_id", "source", "position"), one_of("status", Status))

    id: int | None = Field(default=None, primary_key=True)
    use_case: str = Field(index=True)
    job_id: str = Field(index=True)
    source: str
    position: int
    line: int | None = None
    status: str
    reason: str
    document_id: str | None = None
    customer_id: str | None = None
    raw: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime


class PostBack(SQLModel, table=True):
    """A driver file posted to an Exstream batch-input channel; the digest stops an identical re-post."""

    __table_args__ = (UniqueConstraint("channel", "job_id", "digest"),)

    id: int | None = Field(default=None, primary_key=True)
    channel: str
    job_id: str
    digest: str
    rows: int
    response: str | None = Field(default=None, sa_column=Column(Text))
    posted_at: datetime


class ReportedOutcome(SQLModel, table=True):
    """What Exstream was last told about a document on a channel: a later post-back sends only what is new to it,
    and a changed outcome as a correction, so Exstream never falls back twice nor misses a change."""

    __table_args__ = (one_of("push_status", PushStatus),)

    channel: str = Field(primary_key=True)
    use_case: str = Field(primary_key=True)
    job_id: str = Field(primary_key=True)
    document_id: str = Field(primary_key=True)  # as the row carried it (a quarantined record's positional id)
    push_status: str
    reason: str
    reported_at: datetime


class EngagementEvent(SQLModel, table=True):
    """What a customer did with a push or a document; stored once per event_id."""

    event_id: str = Field(primary_key=True)
    type: str = Field(index=True)
    use_case: str | None = Field(default=None, index=True)
    document_id: str = Field(index=True)
    customer_id: str
    device_id: str | None = None
    occurred_at: datetime
    received_at: datetime


class DeliveryException(SQLModel, table=True):
    """A document Exstream failed to deliver (print, e-mail, rejected), deduplicated by its source's identity."""

    __table_args__ = (one_of("state", DocumentState),)

    dedup_key: str = Field(primary_key=True)
    job_id: str = Field(index=True)
    channel: str
    failure_class: str
    document_id: str | None = None
    customer_ref: str | None = None  # masked: enough for operations to find the case, not to identify anyone
    document_type: str | None = None
    source: str  # job_status | message_file | tracking_event
    detail: str | None = Field(default=None, sa_column=Column(Text))
    next_action: str
    state: str = "open"
    occurred_at: datetime
    recorded_at: datetime
    alert_key: str | None = None  # the operations push that covered it


class Watermark(SQLModel, table=True):
    """How far a poller has read (jobs ended since…, events after…), so a restart neither misses nor repeats."""

    name: str = Field(primary_key=True)
    value: str
    updated_at: datetime


class Preference(SQLModel, table=True):
    """A customer's stated communication preferences, as the app or portal last reported them."""

    customer_id: str = Field(primary_key=True)
    push_opt_in: bool | None = None
    categories: str | None = None  # ';'-separated opted-in push categories; None: not stated
    preferred_channels: str | None = Field(default=None, sa_column=Column(Text))  # JSON {category: channel}
    updated_at: datetime


class OpsAlert(SQLModel, table=True):
    """An operational event (outage, claim status, security) and the push and formal follow-up it led to."""

    __table_args__ = (one_of("state", OpsAlertState),)

    alert_id: str = Field(primary_key=True)
    kind: str
    severity: str
    audience: str = Field(sa_column=Column(Text, nullable=False))  # JSON: {"customer_ids": [...]} or {"segment": ...}
    message_key: str
    occurred_at: datetime
    received_at: datetime
    state: str = "received"
    pushed_at: datetime | None = None
    follow_up_posted_at: datetime | None = None


class OutboxEvent(SQLModel, table=True):
    """A Prefect event accepted into the ledger first, emitted when the Prefect API answers (at-least-once)."""

    id: str = Field(primary_key=True)
    event: str = Field(index=True)
    resource_id: str
    payload: str = Field(sa_column=Column(Text, nullable=False))
    occurred: datetime
    emitted_at: datetime | None = Field(default=None, index=True)
    # The resource's labels besides its id, as JSON: what a deployment's trigger matches on (the watcher's use case).
    resource_labels: str | None = Field(default=None, sa_column=Column(Text))
    # Order among events enqueued together at the same ``occurred``: the drain posts them in that order.
    position: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # The event's related resources as JSON (the flow run that stored it, when one did): the run it links to.
    related: str | None = Field(default=None, sa_column=Column(Text))


class FailedJobEnd(SQLModel, table=True):
    """An Exstream job that ended in error, recorded by the watcher with its event and cursor, until
    delivery-exceptions has recorded its failures (one job-end cursor for both)."""

    end_key: str = Field(primary_key=True)  # the watcher's end key: a job failing again is a new end
    job_id: str = Field(index=True)
    ended_at: datetime = Field(index=True)
    observed_at: datetime
    processed_at: datetime | None = Field(default=None, index=True)


class SeenRequest(SQLModel, table=True):
    """Signatures of accepted ingress requests, kept past the signature's validity window to refuse replays."""

    signature: str = Field(primary_key=True)
    seen_at: datetime = Field(index=True)


class TrackingEvent(SQLModel, table=True):
    """An Exstream tracking event received over HTTP, kept whole until the flow that reacts to it has read it."""

    event_id: str = Field(primary_key=True)
    schema_type: str = Field(index=True)
    payload: str = Field(sa_column=Column(Text, nullable=False))  # carries PII (user{}): never logged or pushed
    event_date: datetime | None = None
    received_at: datetime
    processed_at: datetime | None = Field(default=None, index=True)


class WorkRun(SQLModel, table=True):
    """One attempt at a run (use case + job) that several processes share: who extracts, and who posts back.

    ``generation`` grows when a finished run is started again, so a re-run extracts afresh and sends what is left.
    """

    __table_args__ = (UniqueConstraint("run_key", "generation"),)

    id: int | None = Field(default=None, primary_key=True)
    run_key: str = Field(index=True)
    generation: int
    state: str  # extracting · extracted · done
    claimed_by: str | None = None  # the extractor, then the poster of the outcomes
    lease_expires: datetime | None = None
    batches: int = 0
    totals: str | None = Field(default=None, sa_column=Column(Text))  # JSON: the extractor's counts
    content: str | None = None  # what the run was made of (a manifest's SHA-256), to tell a repeat from a change
    created_at: datetime
    updated_at: datetime


class WorkBatch(SQLModel, table=True):
    """A spooled batch of a shared run: claimed by one process at a time, under a lease a crash lets expire."""

    __table_args__ = (UniqueConstraint("run_id", "number"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(index=True)
    number: int
    path: str = Field(sa_column=Column(Text, nullable=False))
    state: str = Field(default="queued", index=True)  # queued · claimed · done
    claimed_by: str | None = None
    lease_expires: datetime | None = None
    updated_at: datetime


class Evidence(SQLModel, table=True):
    """One fact about a document, appended in the transaction of the write that caused it and never changed.

    Chained per shard (``ledger/evidence.py``): ``hash`` is SHA-256 over the row's content and ``prev_hash``, the
    hash of the shard's row before it (``seq`` − 1), so an edited, deleted or reordered row breaks the chain. The
    device is its ledger id, never its token.
    """

    __table_args__ = (UniqueConstraint("seq", "shard"), one_of("fact", EvidenceFact))

    id: int | None = Field(default=None, primary_key=True)
    shard: int
    seq: int
    fact: str
    use_case: str | None = None
    document_id: str = Field(index=True)
    customer_id: str | None = None
    job_id: str | None = None
    device_id: str | None = None
    provider: str | None = None
    provider_message_id: str | None = None
    stage: str | None = None
    detail: str | None = None  # the failure code, the Exstream step, the hand-back channel
    occurred_at: datetime
    recorded_at: datetime
    prev_hash: str
    hash: str


class EvidenceHead(SQLModel, table=True):
    """The newest record of each evidence shard: locked by an append, so concurrent writers never fork a chain."""

    shard: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    seq: int
    hash: str
