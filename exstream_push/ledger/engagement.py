"""The engagement aggregate (use case 8 and the events import): engagement events, the documents they attach to,
and each document's furthest lifecycle step with its fallback request. Every statement is bulk: chunked ``IN``
lists or one multi-row statement."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import Engine, bindparam, func, select, update

from exstream_push.ledger import evidence, store
from exstream_push.ledger.models import Document, EngagementEvent, Notification
from exstream_push.status import EvidenceFact, Status

ENGAGEMENT_COLUMNS = ["use_case", "document_id", "customer_id", "document_type", "engagement", "engagement_at"]
UNOPENED_COLUMNS = ["document_id", "customer_id", "use_case", "document_type", "engagement_at"]
# The hand-back of a document not opened in time, as the evidence log names it.
FALLBACK_STAGE = "fallback_delivery"
# Where an engagement event's document is found: (document_id, use_case, customer_id).
Resolved = tuple[str, str, str]


class EngagementRepository:
    """Reads and writes of engagement and the lifecycle; one per ledger (``ledger.engagement``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- the events import ---------------------------------------------------------------------------------------

    def resolve_documents(
        self, refs: Sequence[str], document_ids: Sequence[str]
    ) -> tuple[dict[str, Resolved], dict[str, Resolved]]:
        """The documents events name, by the opaque reference a push carried and by document id."""
        columns = (Document.ref, Document.document_id, Document.use_case, Document.customer_id)
        by_ref: dict[str, Resolved] = {}
        by_id: dict[str, Resolved] = {}
        with self.engine.connect() as conn:
            for chunk in store._chunks(sorted(set(refs))):
                for ref, document_id, use_case, customer_id in conn.execute(
                    select(*columns).where(Document.ref.in_(chunk))
                ):
                    by_ref[ref] = (document_id, use_case, customer_id)
            for chunk in store._chunks(sorted(set(document_ids))):
                for _, document_id, use_case, customer_id in conn.execute(
                    select(*columns).where(Document.document_id.in_(chunk))
                ):
                    by_id[document_id] = (document_id, use_case, customer_id)
        return by_ref, by_id

    def known_event_ids(self, event_ids: Sequence[str]) -> set[str]:
        """The event ids already stored, so a repeat is counted, not stored twice."""
        with self.engine.connect() as conn:
            return set(conn.scalars(select(EngagementEvent.event_id).where(EngagementEvent.event_id.in_(event_ids))))

    # -- the lifecycle -------------------------------------------------------------------------------------------

    def latest_event_received(self) -> datetime | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(EngagementEvent.received_at).order_by(EngagementEvent.received_at.desc())
            ).scalar()

    def first_sent_without_engagement(self) -> pd.DataFrame:
        """(use_case, document_id, at): documents with no step yet and a push sent, with its first moment."""
        notification = Notification.__table__
        statement = (
            select(
                notification.c.use_case,
                notification.c.document_id,
                func.min(func.coalesce(notification.c.as_of, notification.c.updated_at)),
            )
            .join(
                Document.__table__,
                (Document.use_case == notification.c.use_case) & (Document.document_id == notification.c.document_id),
            )
            .where(notification.c.status == Status.SENT, Document.engagement.is_(None))
            .group_by(notification.c.use_case, notification.c.document_id)
        )
        with self.engine.connect() as conn:
            return pd.DataFrame(conn.execute(statement).fetchall(), columns=["use_case", "document_id", "at"])

    def events_received_after(self, received_after: datetime | None) -> pd.DataFrame:
        """(use_case, document_id, step, at): every event received after the watermark (all of them without one)."""
        events = EngagementEvent.__table__
        statement = select(events.c.use_case, events.c.document_id, events.c.type, events.c.occurred_at)
        if received_after is not None:
            statement = statement.where(events.c.received_at > received_after)
        with self.engine.connect() as conn:
            return pd.DataFrame(conn.execute(statement).fetchall(), columns=["use_case", "document_id", "step", "at"])

    def current_engagement(self, document_ids: Sequence[str]) -> pd.DataFrame:
        """ENGAGEMENT_COLUMNS of the documents with these ids, whatever their use case."""
        table = Document.__table__
        frames = []
        with self.engine.connect() as conn:
            for chunk in store._chunks(list(document_ids)):
                ids = sorted(set(chunk))
                result = conn.execute(
                    select(*(table.c[name] for name in ENGAGEMENT_COLUMNS)).where(table.c.document_id.in_(ids))
                )
                frames.append(pd.DataFrame(result.fetchall(), columns=ENGAGEMENT_COLUMNS))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ENGAGEMENT_COLUMNS)

    def record_steps(self, steps: Sequence[Mapping[str, Any]]) -> None:
        """Each document's new furthest step: ``use_case``, ``document_id``, ``step``, ``at``."""
        statement = (
            update(Document.__table__)
            .where(Document.use_case == bindparam("b_use_case"), Document.document_id == bindparam("b_document_id"))
            .values(engagement=bindparam("b_step"), engagement_at=bindparam("b_at"))
        )
        with self.engine.begin() as conn:
            conn.execute(
                statement,
                [
                    {
                        "b_use_case": step["use_case"],
                        "b_document_id": step["document_id"],
                        "b_step": step["step"],
                        "b_at": step["at"],
                    }
                    for step in steps
                ],
            )

    def unopened(self, steps: Sequence[str], reached_by: datetime) -> pd.DataFrame:
        """UNOPENED_COLUMNS of documents still at one of ``steps`` since ``reached_by``, no fallback asked yet."""
        table = Document.__table__
        statement = select(*(table.c[name] for name in UNOPENED_COLUMNS)).where(
            table.c.engagement.in_(list(steps)),
            table.c.fallback_requested_at.is_(None),
            table.c.engagement_at <= reached_by,
        )
        with self.engine.connect() as conn:
            return pd.DataFrame(conn.execute(statement).fetchall(), columns=UNOPENED_COLUMNS)

    def mark_fallback_requested(self, documents: Sequence[tuple[str, str]], at: datetime) -> None:
        """``documents`` as (use_case, document_id): handed back for a fallback at ``at``, never again; each one
        marked is evidence, appended in the same transaction."""
        table = Document.__table__
        facts = []
        with self.engine.begin() as conn:
            for use_case in sorted({use_case for use_case, _ in documents}):
                ids = sorted({document_id for case, document_id in documents if case == use_case})
                for chunk in store._chunks(ids):
                    marked = conn.execute(
                        update(table)
                        .where(
                            table.c.use_case == use_case,
                            table.c.document_id.in_(chunk),
                            table.c.fallback_requested_at.is_(None),
                        )
                        .values(fallback_requested_at=at)
                        .returning(table.c.document_id, table.c.customer_id, table.c.job_id)
                    )
                    facts += [
                        evidence.fact(
                            EvidenceFact.HANDED_BACK,
                            document_id,
                            at,
                            use_case=use_case,
                            customer_id=customer_id,
                            job_id=job_id,
                            stage=FALLBACK_STAGE,
                        )
                        for document_id, customer_id, job_id in marked
                    ]
            evidence.append(conn, facts)

    def step_counts(self) -> pd.DataFrame:
        """Documents per (use_case, job_id, document_type, engagement), in column ``documents``."""
        table = Document.__table__
        groups = (table.c.use_case, table.c.job_id, table.c.document_type, table.c.engagement)
        with self.engine.connect() as conn:
            rows = conn.execute(select(*groups, func.count()).group_by(*groups)).fetchall()
        return pd.DataFrame(rows, columns=["use_case", "job_id", "document_type", "engagement", "documents"])
