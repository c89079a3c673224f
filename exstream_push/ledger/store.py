"""The ledger: one class composed of a repository per aggregate, and the helpers they all share.

Every write is a multi-row statement, never one ORM object at a time. The shared helpers live here because the
repositories (and the use cases building ledger rows) import them from here; the repositories look them up at
call time (``store.utcnow()``), which is also what lets a test fix the clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from exstream_push.keys import stable_key
from exstream_push.ledger import evidence, migrations
from exstream_push.ledger.alerts import AlertRepository
from exstream_push.ledger.audit import AuditRepository
from exstream_push.ledger.counts import CountMixin
from exstream_push.ledger.devices import DeviceMixin
from exstream_push.ledger.documents import DocumentMixin
from exstream_push.ledger.engagement import EngagementRepository
from exstream_push.ledger.engine import make_engine
from exstream_push.ledger.exceptions import ExceptionRepository
from exstream_push.ledger.follow_ups import FollowUpRepository
from exstream_push.ledger.ingress import IngressRepository
from exstream_push.ledger.notices import NoticeRepository
from exstream_push.ledger.notifications import NotificationMixin, Subject
from exstream_push.ledger.outbox import OutboxRepository
from exstream_push.ledger.post_backs import PostBackMixin
from exstream_push.ledger.preferences import PreferenceRepository
from exstream_push.ledger.reminders import ReminderRepository
from exstream_push.ledger.watermarks import WatermarkMixin
from exstream_push.ledger.work_queue import WorkQueueMixin

__all__ = [
    "Ledger",
    "Subject",
    "make_engine",
    "notification_key",
    "notification_rows",
    "notification_subjects",
    "utcnow",
]

# Parameters per statement stay well under SQLite's 32,766 and PostgreSQL's 65,535 bind-variable limits.
_CHUNK = 2_000
# SQLite lets one connection write at a time, across threads and processes: large writes commit every this many
# rows, so a sender recording outcomes waits for one chunk, not for another batch's whole claim (25,000 rows).
_SQLITE_WRITE_CHUNK = 2_000


def notification_key(use_case: str, document_id: str, device_id: str, stage: str = "") -> str:
    """The idempotency key: stable across runs, processes and machines."""
    return stable_key(use_case, document_id, device_id, *([stage] if stage else []))


def notification_rows(
    frame: pd.DataFrame,
    use_case: str,
    status: str,
    *,
    reason: str | Sequence[str | None] | None = None,
    as_of: datetime | None = None,
) -> list[dict[str, Any]]:
    """Ledger rows for a frame of (document, device) pairs, the one place their shape is spelled out.

    The frame needs ``document_id``, ``job_id`` and ``customer_id``; ``device_id`` (missing or NaN: no device),
    ``stage``, ``key`` and ``not_before`` are used when present.
    """
    now = utcnow()
    count = len(frame)
    devices = frame["device_id"].fillna("") if "device_id" in frame else [""] * count
    stages = frame["stage"].fillna("") if "stage" in frame else [""] * count
    reasons = [reason] * count if reason is None or isinstance(reason, str) else list(reason)
    not_before = frame["not_before"] if "not_before" in frame else [None] * count
    keys = (
        frame["key"]
        if "key" in frame
        else [
            notification_key(use_case, document_id, device_id, stage)
            for document_id, device_id, stage in zip(frame["document_id"], devices, stages, strict=True)
        ]
    )
    return [
        {
            "key": key,
            "use_case": use_case,
            "document_id": document_id,
            "job_id": job_id,
            "customer_id": customer_id,
            "device_id": device_id,
            "stage": stage,
            "status": status,
            "reason": row_reason,
            "attempts": 0,
            "as_of": as_of,
            "not_before": None if pd.isna(later) else later,
            "created_at": now,
            "updated_at": now,
        }
        for key, document_id, job_id, customer_id, device_id, stage, row_reason, later in zip(
            keys,
            frame["document_id"],
            frame["job_id"],
            frame["customer_id"],
            devices,
            stages,
            reasons,
            not_before,
            strict=True,
        )
    ]


def notification_subjects(rows: Sequence[Mapping[str, Any]], providers: Iterable[str | None]) -> dict[str, Subject]:
    """By key, what the evidence of each of ``notification_rows``' rows names (``record_outcomes``): the row's
    own columns and the provider its device is sent through."""
    return {
        row["key"]: Subject(
            row["use_case"],
            row["document_id"],
            row["customer_id"],
            row["job_id"],
            row["device_id"],
            row["stage"],
            provider,
        )
        for row, provider in zip(rows, providers, strict=True)
    }


def utcnow() -> datetime:
    return datetime.now(UTC)


def _naive_utc(moment: datetime) -> datetime:
    """Timestamps come back naive (SQLite, PostgreSQL ``timestamp``) or aware, by driver: compare them as naive UTC."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Ledger(
    DeviceMixin,
    DocumentMixin,
    NotificationMixin,
    PostBackMixin,
    WatermarkMixin,
    WorkQueueMixin,
    CountMixin,
):
    """The system of record. Safe to share between tasks of one process; several processes may share a database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        migrations.upgrade(self.engine)
        # COPY for large writes on PostgreSQL; a benchmark turns it off to measure the multi-row path.
        self.use_copy = self.engine.dialect.name == "postgresql"
        # SQLite runs in this process: its bulk paths hand the driver plain tuples, without SQLAlchemy's per-row work.
        self.on_sqlite = self.engine.dialect.name == "sqlite"
        # The use cases' own reads and writes, one repository per aggregate.
        self.follow_ups = FollowUpRepository(self.engine)
        self.reminders = ReminderRepository(self.engine)
        self.notices = NoticeRepository(self.engine)
        self.exceptions = ExceptionRepository(self.engine)
        self.outbox = OutboxRepository(self.engine)
        self.ingress = IngressRepository(self.engine)
        self.engagement = EngagementRepository(self.engine)
        self.preferences = PreferenceRepository(self.engine)
        self.alerts = AlertRepository(self.engine)
        self.audit = AuditRepository(self.engine)

    def evidence_head(self) -> str:
        """The digest over every evidence shard's head: published at the end of a run, so a chain rewritten
        afterwards no longer leads to a head anyone saw."""
        return evidence.head_digest(self.engine)

    def evidence_records(self) -> int:
        """How many records the evidence log holds, from its shard heads (no walk of the chains)."""
        return evidence.record_count(self.engine)

    def verify_evidence(self, since: datetime | None = None) -> evidence.Verdict:
        """Recompute the evidence chains (from ``since`` when given): the first broken record, if any."""
        return evidence.verify(self.engine, since)

    def evidence_trail(self, document_id: str) -> list[tuple[Any, ...]]:
        """One document's facts in order (``evidence.TRAIL_COLUMNS``)."""
        return evidence.trail(self.engine, document_id)

    def evidence_documents(
        self, use_case: str | None, since: datetime | None, until: datetime | None, batch_size: int
    ) -> Iterator[pd.DataFrame]:
        """One row per document of the evidence log (``evidence.EXPORT_COLUMNS``), streamed."""
        return evidence.document_pages(self.engine, use_case, since, until, batch_size)

    def dispose(self) -> None:
        self.engine.dispose()
