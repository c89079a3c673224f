"""The document aggregate: documents as first seen, input records kept out, engagement events about them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pandas as pd
from sqlalchemy import Connection, select

from exstream_push.ledger import evidence, store
from exstream_push.ledger.base import LedgerBase
from exstream_push.ledger.models import Document, EngagementEvent, RejectedRecord
from exstream_push.status import ENGAGEMENT_FACTS, EvidenceFact


class DocumentMixin(LedgerBase):
    """Documents, rejected input records and engagement events: recorded once, read per job or id."""

    def record_documents(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Documents as first seen; each one new to the ledger is evidence that Exstream generated it."""
        self._insert_ignoring_conflicts(Document, rows, _generated)

    def record_rejected(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self._insert_ignoring_conflicts(RejectedRecord, rows)

    def record_events(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Engagement events, once per event id; each one stored is evidence of what the customer did."""
        self._insert_ignoring_conflicts(EngagementEvent, rows, _engaged)

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


def _generated(conn: Connection, rows: Sequence[Mapping[str, Any]], all_new: bool) -> list[dict[str, Any]]:
    """``generated`` for the rows this insert stored: a document already present keeps its first sighting, so a
    row whose stored job, step, position and moment are not its own went in before."""
    if all_new:
        return [_generated_fact(row) for row in rows]
    table = Document.__table__
    given: dict[tuple[str, str], Mapping[str, Any]] = {}
    for row in rows:  # the first row of an id wins the insert
        given.setdefault((row["use_case"], row["document_id"]), row)
    facts = []
    for use_case in sorted({use_case for use_case, _ in given}):
        ids = [document_id for case, document_id in given if case == use_case]
        for chunk in store._chunks(ids):
            stored = conn.execute(
                select(
                    table.c.document_id, table.c.job_id, table.c.step_id, table.c.position, table.c.first_seen_at
                ).where(table.c.use_case == use_case, table.c.document_id.in_(chunk))
            )
            for document_id, job_id, step_id, position, first_seen_at in stored:
                row = given[use_case, document_id]
                if (job_id, step_id, position) == (row["job_id"], row["step_id"], row["position"]) and store._naive_utc(
                    first_seen_at
                ) == store._naive_utc(row["first_seen_at"]):
                    facts.append(_generated_fact(row))
    return facts


def _generated_fact(row: Mapping[str, Any]) -> dict[str, Any]:
    return evidence.fact(
        EvidenceFact.GENERATED,
        row["document_id"],
        row["first_seen_at"],
        use_case=row["use_case"],
        customer_id=row["customer_id"],
        job_id=row["job_id"],
        detail=row["step_id"],
    )


def _engaged(conn: Connection, rows: Sequence[Mapping[str, Any]], all_new: bool) -> list[dict[str, Any]]:
    """The fact of each event this insert stored (one received before keeps its own moment of receipt)."""
    given = {row["event_id"]: row for row in rows if row["type"] in ENGAGEMENT_FACTS}
    if not all_new:
        table = EngagementEvent.__table__
        stored = set()
        for chunk in store._chunks(list(given)):
            found = conn.execute(select(table.c.event_id, table.c.received_at).where(table.c.event_id.in_(chunk)))
            stored |= {
                event_id
                for event_id, received_at in found
                if store._naive_utc(received_at) == store._naive_utc(given[event_id]["received_at"])
            }
        given = {event_id: row for event_id, row in given.items() if event_id in stored}
    return [
        evidence.fact(
            ENGAGEMENT_FACTS[row["type"]],
            row["document_id"],
            row["occurred_at"],
            use_case=row["use_case"],
            customer_id=row["customer_id"],
            device_id=row["device_id"],
        )
        for row in given.values()
    ]
