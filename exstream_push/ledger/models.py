"""Ledger tables. One model serves as table and as the row shape the CLI and reports read."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


class Device(SQLModel, table=True):
    """A customer's registered app instance; categories is ';'-separated, empty meaning all."""

    device_id: str = Field(primary_key=True)
    customer_id: str = Field(index=True)
    platform: str
    token: str = Field(sa_column=Column(Text, nullable=False))
    active: bool = True
    push_opt_in: bool = True
    locale: str | None = None
    timezone: str | None = None
    categories: str = ""
    deactivated_reason: str | None = None
    updated_at: datetime


class Document(SQLModel, table=True):
    """A document seen in an Exstream run, with where it was seen so a re-run is told from a duplicate."""

    __table_args__ = (UniqueConstraint("use_case", "document_id"),)

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
    attributes: str | None = None
    first_seen_at: datetime


class Notification(SQLModel, table=True):
    """One per (use case, document, device); its key is the idempotency key claimed before sending.

    A document with no device to reach gets one row with an empty device_id, so every document is accounted for.
    """

    key: str = Field(primary_key=True)
    use_case: str = Field(index=True)
    document_id: str = Field(index=True)
    job_id: str = Field(index=True)
    customer_id: str
    device_id: str
    status: str = Field(index=True)
    reason: str | None = None
    provider_message_id: str | None = None
    attempts: int = 0
    created_at: datetime
    updated_at: datetime


class RejectedRecord(SQLModel, table=True):
    """An input record not turned into notifications: malformed (quarantined) or a duplicate (skipped)."""

    __table_args__ = (UniqueConstraint("use_case", "job_id", "source", "position"),)

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
