"""The audit export's read: every document of a use case beside the rejection registration gave it, streamed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pandas as pd
from sqlalchemy import Engine, and_, select

from exstream_push.ledger.models import Document, RejectedRecord

DOCUMENT_COLUMNS = [
    "document_id",
    "customer_id",
    "document_type",
    "job_id",
    "attributes",
    "state",
    "state_changed_at",
    "rejected_status",
    "rejected_reason",
]


class AuditRepository:
    """One per ledger (``ledger.audit``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def document_pages(
        self, use_case: str, batch_size: int, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[pd.DataFrame]:
        """Every document of the use case (DOCUMENT_COLUMNS) first seen in [since, until) with, when registration
        kept it out, the rejection of its record; in registration order, ``batch_size`` at a time."""
        document, rejected = Document.__table__, RejectedRecord.__table__
        registration = and_(
            rejected.c.use_case == document.c.use_case,
            rejected.c.job_id == document.c.job_id,
            rejected.c.source == document.c.step_id,
            rejected.c.position == document.c.position,
        )
        statement = (
            select(
                document.c.document_id,
                document.c.customer_id,
                document.c.document_type,
                document.c.job_id,
                document.c.attributes,
                document.c.state,
                document.c.state_changed_at,
                rejected.c.status,
                rejected.c.reason,
            )
            .select_from(document.outerjoin(rejected, registration))
            .where(document.c.use_case == use_case)
            .order_by(document.c.id)
        )
        if since is not None:
            statement = statement.where(document.c.first_seen_at >= since)
        if until is not None:
            statement = statement.where(document.c.first_seen_at < until)
        with self.engine.connect().execution_options(stream_results=True, yield_per=batch_size) as conn:
            for partition in conn.execute(statement).partitions(batch_size):
                yield pd.DataFrame(partition, columns=DOCUMENT_COLUMNS)
