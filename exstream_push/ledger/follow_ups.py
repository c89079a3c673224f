"""The follow-up aggregate (use cases 3 and 5): a document followed up, its closing events, its notices by stage
and its hand-back to Exstream. Every statement is bulk: chunked ``IN`` lists or one streamed query."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import Engine, and_, case, distinct, exists, func, select, update

from exstream_push.ledger import evidence, store
from exstream_push.ledger.models import Document, EngagementEvent, Notification, RejectedRecord
from exstream_push.ledger.notices import EXSTREAM_DEVICE_PREFIX
from exstream_push.status import DocumentState, EvidenceFact, SkipReason, Status

UNSENT = (Status.PENDING.value, Status.DEFERRED.value)

SNAPSHOT_COLUMNS = [
    "id",
    "document_id",
    "job_id",
    "customer_id",
    "document_type",
    "locale",
    "ref",
    "attributes",
    "state",
]
HAND_BACK_COLUMNS = ["document_id", "customer_id", "document_type", "job_id", "attributes"]
EVIDENCE_COLUMNS = ["document_id", "first_notified_at", "devices_notified", "reminders_sent", "handed_back_at"]


def utc_column(values: pd.Series | list[Any]) -> pd.Series:
    """Ledger date-times (and None) as a UTC datetime column, NaT where missing, to compare with ``as_of``."""
    return pd.to_datetime(pd.Series(values, dtype="object"), utc=True)


def _not_screened_out() -> Any:
    """A document whose first-seen record was not kept out of the use case at registration."""
    document, rejected = Document.__table__, RejectedRecord.__table__
    return ~exists().where(
        rejected.c.use_case == document.c.use_case,
        rejected.c.job_id == document.c.job_id,
        rejected.c.source == document.c.step_id,
        rejected.c.position == document.c.position,
    )


def _handed_back(stage: str) -> Any:
    """The document's hand-back notification went out."""
    document, notification = Document.__table__, Notification.__table__
    return exists().where(
        notification.c.use_case == document.c.use_case,
        notification.c.document_id == document.c.document_id,
        notification.c.stage == stage,
        notification.c.status == Status.SENT.value,
    )


class FollowUpRepository:
    """Reads and writes of the follow-up use cases; one per ledger (``ledger.follow_ups``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def active_documents(self, use_case: str, states: Sequence[str], batch_size: int) -> Iterator[pd.DataFrame]:
        """The use case's documents in ``states`` (still followed up), streamed in batches of SNAPSHOT_COLUMNS."""
        document = Document.__table__
        statement = (
            select(*(document.c[name] for name in SNAPSHOT_COLUMNS))
            .where(document.c.use_case == use_case, document.c.state.in_(states), _not_screened_out())
            .order_by(document.c.id)
        )
        with self.engine.connect().execution_options(stream_results=True, yield_per=batch_size) as conn:
            for partition in conn.execute(statement).partitions(batch_size):
                yield pd.DataFrame(partition, columns=SNAPSHOT_COLUMNS)

    def stage_history(self, use_case: str, document_ids: Sequence[str]) -> pd.DataFrame:
        """Per (document, stage) already decided: when it was first decided, and how many of its rows are unsent."""
        table = Notification.__table__
        unsent = func.sum(case((table.c.status == Status.PENDING.value, 1), else_=0))
        rows: list[Any] = []
        with self.engine.connect() as conn:
            for chunk in store._chunks(list(document_ids)):
                rows += conn.execute(
                    select(table.c.document_id, table.c.stage, func.min(table.c.as_of), unsent)
                    .where(table.c.use_case == use_case, table.c.document_id.in_(chunk))
                    .group_by(table.c.document_id, table.c.stage)
                ).all()
        history = pd.DataFrame(rows, columns=["document_id", "stage", "first_as_of", "pending"])
        history["first_as_of"] = utc_column(history["first_as_of"].tolist())
        return history

    def closing_times(
        self, use_case: str, event_type: str, document_ids: Sequence[str], as_of: datetime | None = None
    ) -> pd.Series:
        """When each document's closing event first happened (up to ``as_of`` when given), by document id."""
        table = EngagementEvent.__table__
        conditions = [table.c.use_case == use_case, table.c.type == event_type]
        if as_of is not None:
            conditions.append(table.c.occurred_at <= as_of)
        rows: list[Any] = []
        with self.engine.connect() as conn:
            for chunk in store._chunks(list(document_ids)):
                rows += conn.execute(
                    select(table.c.document_id, func.min(table.c.occurred_at))
                    .where(*conditions, table.c.document_id.in_(chunk))
                    .group_by(table.c.document_id)
                ).all()
        moments = utc_column([at for _, at in rows]).to_numpy()
        return pd.Series(moments, index=[d for d, _ in rows], dtype="datetime64[ns, UTC]")

    def evidence(
        self, use_case: str, hand_back_stage: str, reminder_prefix: str, document_ids: Sequence[str]
    ) -> pd.DataFrame:
        """Per document: first push that reached a device, devices reached, reminder stages sent, hand-back time."""
        table = Notification.__table__
        sent = table.c.status == Status.SENT.value
        pushed = and_(sent, table.c.stage != hand_back_stage)
        statement_columns = (
            table.c.document_id,
            func.min(case((pushed, table.c.as_of))),
            func.count(distinct(case((pushed, table.c.device_id)))),
            func.count(distinct(case((and_(sent, table.c.stage.startswith(reminder_prefix)), table.c.stage)))),
            func.min(case((and_(sent, table.c.stage == hand_back_stage), table.c.as_of))),
        )
        rows: list[Any] = []
        with self.engine.connect() as conn:
            for chunk in store._chunks(list(document_ids)):
                rows += conn.execute(
                    select(*statement_columns)
                    .where(table.c.use_case == use_case, table.c.document_id.in_(chunk))
                    .group_by(table.c.document_id)
                ).all()
        evidence = pd.DataFrame(rows, columns=EVIDENCE_COLUMNS)
        for column in ("first_notified_at", "handed_back_at"):
            evidence[column] = utc_column(evidence[column].tolist())
        return (
            evidence.set_index("document_id")
            .reindex(list(document_ids))
            .assign(
                devices_notified=lambda frame: frame["devices_notified"].fillna(0).astype("int64"),
                reminders_sent=lambda frame: frame["reminders_sent"].fillna(0).astype("int64"),
            )
        )

    def set_state(
        self,
        use_case: str,
        document_ids: Sequence[str],
        state: DocumentState,
        from_states: Sequence[str],
        at: datetime,
    ) -> int:
        """Move documents to ``state`` in bulk, only from ``from_states``, so a closed document is never reopened;
        an expiry is evidence, appended in the same transaction."""
        table = Document.__table__
        expiring = state == DocumentState.EXPIRED
        changed, facts = 0, []
        with self.engine.begin() as conn:
            for chunk in store._chunks(sorted(set(document_ids))):
                statement = (
                    update(table)
                    .where(table.c.use_case == use_case, table.c.document_id.in_(chunk), table.c.state.in_(from_states))
                    .values(state=state.value, state_changed_at=at)
                )
                if not expiring:
                    changed += conn.execute(statement).rowcount
                    continue
                moved = conn.execute(statement.returning(table.c.document_id, table.c.customer_id, table.c.job_id))
                for document_id, customer_id, job_id in moved:
                    changed += 1
                    facts.append(
                        evidence.fact(
                            EvidenceFact.EXPIRED,
                            document_id,
                            at,
                            use_case=use_case,
                            customer_id=customer_id,
                            job_id=job_id,
                        )
                    )
            evidence.append(conn, facts)
        return changed

    def cancel_unsent(self, use_case: str, document_ids: Sequence[str]) -> int:
        """Whatever is still owed to closed documents (left pending, deferred) is skipped as ``closed``, never sent."""
        table = Notification.__table__
        cancelled = 0
        with self.engine.begin() as conn:
            for chunk in store._chunks(sorted(set(document_ids))):
                cancelled += conn.execute(
                    update(table)
                    .where(table.c.use_case == use_case, table.c.document_id.in_(chunk), table.c.status.in_(UNSENT))
                    .values(status=Status.SKIPPED.value, reason=SkipReason.CLOSED.value, updated_at=store.utcnow())
                ).rowcount
        return cancelled

    def pending_hand_backs(self, use_case: str, stage: str, batch_size: int) -> Iterator[pd.DataFrame]:
        """The hand-backs claimed and not yet posted, with their documents (HAND_BACK_COLUMNS), in document order."""
        notification, document = Notification.__table__, Document.__table__
        statement = (
            select(*(document.c[name] for name in HAND_BACK_COLUMNS))
            .join(
                notification,
                and_(
                    notification.c.use_case == document.c.use_case,
                    notification.c.document_id == document.c.document_id,
                ),
            )
            .where(
                notification.c.use_case == use_case,
                notification.c.stage == stage,
                notification.c.status == Status.PENDING.value,
            )
            .order_by(document.c.document_id)
        )
        with self.engine.connect().execution_options(stream_results=True, yield_per=batch_size) as conn:
            for partition in conn.execute(statement).partitions(batch_size):
                yield pd.DataFrame(partition, columns=HAND_BACK_COLUMNS)

    def mark_hand_backs_sent(self, use_case: str, stage: str, document_ids: Sequence[str]) -> None:
        """Only once Exstream accepted the file: until then the claims stay pending, to be posted again. Each
        hand-back marked is evidence (the channel, when it was posted), appended in the same transaction."""
        table = Notification.__table__
        now = store.utcnow()
        facts = []
        with self.engine.begin() as conn:
            for chunk in store._chunks(list(document_ids)):
                marked = conn.execute(
                    update(table)
                    .where(
                        table.c.use_case == use_case,
                        table.c.stage == stage,
                        table.c.status == Status.PENDING.value,
                        table.c.document_id.in_(chunk),
                    )
                    .values(status=Status.SENT.value, attempts=table.c.attempts + 1, updated_at=now)
                    .returning(table.c.document_id, table.c.customer_id, table.c.job_id, table.c.device_id)
                )
                facts += [
                    evidence.fact(
                        EvidenceFact.HANDED_BACK,
                        document_id,
                        now,
                        use_case=use_case,
                        customer_id=customer_id,
                        job_id=job_id,
                        stage=stage,
                        detail=device_id.removeprefix(EXSTREAM_DEVICE_PREFIX),
                    )
                    for document_id, customer_id, job_id, device_id in marked
                ]
            evidence.append(conn, facts)

    def handed_back_but_open(self, use_case: str, stage: str) -> list[str]:
        """Open documents whose hand-back went out: this run's, and any a crash left between post and state."""
        document = Document.__table__
        statement = select(document.c.document_id).where(
            document.c.use_case == use_case, document.c.state == DocumentState.OPEN.value, _handed_back(stage)
        )
        with self.engine.connect() as conn:
            return list(conn.scalars(statement))

    def standing(self, use_case: str, hand_back_stage: str, batch_size: int) -> Iterator[pd.DataFrame]:
        """Every in-scope document's ``attributes``, ``state`` and whether it was ``handed_back``, streamed."""
        document = Document.__table__
        statement = select(document.c.attributes, document.c.state, _handed_back(hand_back_stage)).where(
            document.c.use_case == use_case, _not_screened_out()
        )
        with self.engine.connect().execution_options(stream_results=True, yield_per=batch_size) as conn:
            for partition in conn.execute(statement).partitions(batch_size):
                yield pd.DataFrame(partition, columns=["attributes", "state", "handed_back"])
