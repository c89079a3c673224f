"""The document aggregate: documents as first seen, input records kept out, engagement events about them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pandas as pd
from sqlalchemy import select

from exstream_push.ledger import store
from exstream_push.ledger.base import LedgerBase
from exstream_push.ledger.models import Document, EngagementEvent, RejectedRecord


class DocumentMixin(LedgerBase):
    """Documents, rejected input records and engagement events: recorded once, read per job or id."""

    def record_documents(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self._insert_ignoring_conflicts(Document, rows)

    def record_rejected(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self._insert_ignoring_conflicts(RejectedRecord, rows)

    def record_events(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self._insert_ignoring_conflicts(EngagementEvent, rows)

    def documents_where_seen(self, use_case: str, document_ids: Sequence[str]) -> pd.DataFrame:
        """Where each document was first seen (job, step, position) and whose it is, to tell duplicates from re-runs
        and a reuse of the id by another customer from a duplicate."""
        columns = ["document_id", "job_id", "step_id", "position", "ref", "customer_id"]
        frames = []
        with self.engine.connect() as conn:
            for chunk in store._chunks(sorted(set(document_ids))):
                result = conn.execute(
                    select(
                        Document.document_id,
                        Document.job_id,
                        Document.step_id,
                        Document.position,
                        Document.ref,
                        Document.customer_id,
                    ).where(Document.use_case == use_case, Document.document_id.in_(chunk))
                )
                frames.append(pd.DataFrame(result.fetchall(), columns=columns))
        if not frames:
            return pd.DataFrame(columns=columns)
        return pd.concat(frames, ignore_index=True)

    def rejected_for_job(self, use_case: str, job_id: str) -> Iterator[tuple[Any, ...]]:
        """A job's rejected records by position: (document_id, customer_id, status, reason, created_at, position,
        source, whether a document of the use case holds that id), streamed."""
        table = RejectedRecord.__table__
        document = Document.__table__
        statement = (
            select(
                table.c.document_id,
                table.c.customer_id,
                table.c.status,
                table.c.reason,
                table.c.created_at,
                table.c.position,
                table.c.source,
                document.c.id.is_not(None),
            )
            .outerjoin(
                document, (document.c.use_case == table.c.use_case) & (document.c.document_id == table.c.document_id)
            )
            .where(table.c.use_case == use_case, table.c.job_id == job_id)
            .order_by(table.c.source, table.c.position)
        )
        with self.engine.connect().execution_options(stream_results=True, yield_per=10_000) as conn:
            yield from conn.execute(statement)
