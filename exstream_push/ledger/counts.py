"""Counts for the reports: notifications and rejected input records by use case, status and reason."""

from __future__ import annotations

from sqlalchemy import func, select

from exstream_push.ledger.base import LedgerBase
from exstream_push.ledger.models import Notification, RejectedRecord


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

    def reason_counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """Counts per use case, status and reason, for the human report."""
        counts: dict[str, dict[str, dict[str, int]]] = {}
        with self.engine.connect() as conn:
            for model in (Notification, RejectedRecord):
                table = model.__table__
                rows = conn.execute(
                    select(table.c.use_case, table.c.status, table.c.reason, func.count()).group_by(
                        table.c.use_case, table.c.status, table.c.reason
                    )
                )
                for use_case, status, reason, count in rows:
                    by_reason = counts.setdefault(use_case, {}).setdefault(status, {})
                    by_reason[reason or ""] = by_reason.get(reason or "", 0) + count
        return counts
