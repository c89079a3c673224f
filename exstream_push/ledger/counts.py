"""Counts for the reports: notifications and rejected input records by use case, status and reason."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select

from exstream_push.ledger.base import LedgerBase
from exstream_push.ledger.models import Device, Notification, RejectedRecord
from exstream_push.status import Status

REPORT_KINDS = {"notifications": Notification, "rejected_records": RejectedRecord}
"""What ``report_counts`` counts, by the name each kind is reported under."""


class CountMixin(LedgerBase):
    """Read-only counts over notifications and rejected records together."""

    def status_counts(self) -> dict[str, dict[str, int]]:
        """Counts per use case and status: notifications plus rejected input records."""
        counts: dict[str, dict[str, int]] = {}
        with self.engine.connect() as conn:
            for model in (Notification, RejectedRecord):
                table = model.__table__
                rows = conn.execute(
                    select(table.c.use_case, table.c.status, func.count()).group_by(table.c.use_case, table.c.status)
                )
                for use_case, status, count in rows:
                    bucket = counts.setdefault(use_case, {})
                    bucket[status] = bucket.get(status, 0) + count
        return counts

    def job_reason_counts(self, use_case: str, job_id: str) -> dict[tuple[str, str | None], int]:
        """Counts per (status, reason) for one job: notifications plus rejected input records."""
        counts: dict[tuple[str, str | None], int] = {}
        with self.engine.connect() as conn:
            for model in (Notification, RejectedRecord):
                table = model.__table__
                rows = conn.execute(
                    select(table.c.status, table.c.reason, func.count())
                    .where(table.c.use_case == use_case, table.c.job_id == job_id)
                    .group_by(table.c.status, table.c.reason)
                )
                for status, reason, count in rows:
                    counts[(status, reason)] = counts.get((status, reason), 0) + count
        return counts

    def sent_by_provider(self, use_case: str, job_id: str) -> dict[str, int]:
        """One job's notifications sent, by the provider of the device each went to (as the registry says now):
        what ``exstream-push bench`` reports its rate per provider from."""
        query = (
            select(Device.provider, func.count())
            .select_from(Notification)
            .join(Device, Device.device_id == Notification.device_id)
            .where(Notification.use_case == use_case, Notification.job_id == job_id, Notification.status == Status.SENT)
            .group_by(Device.provider)
        )
        with self.engine.connect() as conn:
            return {provider: count for provider, count in conn.execute(query)}

    def report_counts(
        self, job_id: str | None = None, since: datetime | None = None
    ) -> dict[str, dict[str, dict[str, dict[str, int]]]]:
        """``exstream-push report``'s counts, the two kinds kept apart, by kind, use case, status and reason:
        ``notifications`` (one per document, device and reminder stage; a document no device reaches has one) and
        ``rejected_records`` (input records turned into no notification: quarantined or duplicate). Only one job's
        with ``job_id``; only those recorded at or after ``since``."""
        counts: dict[str, dict[str, dict[str, dict[str, int]]]] = {}
        with self.engine.connect() as conn:
            for kind, model in REPORT_KINDS.items():
                table = model.__table__
                query = select(table.c.use_case, table.c.status, table.c.reason, func.count()).group_by(
                    table.c.use_case, table.c.status, table.c.reason
                )
                if job_id is not None:
                    query = query.where(table.c.job_id == job_id)
                if since is not None:
                    query = query.where(table.c.created_at >= since.astimezone(UTC))  # as stored: UTC
                by_use_case = counts.setdefault(kind, {})
                for use_case, status, reason, count in conn.execute(query):
                    by_reason = by_use_case.setdefault(use_case, {}).setdefault(status, {})
                    by_reason[reason or ""] = by_reason.get(reason or "", 0) + count
        return counts
