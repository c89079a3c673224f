"""The delivery-exception aggregate (use case 4): one record per failed document (or per job failed as a whole),
the operations push that covered it, and its reissue request. Writes go in chunks of ``store._CHUNK`` rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from sqlalchemy import Engine, Table, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from exstream_push.ledger import evidence, store
from exstream_push.ledger.models import DeliveryException, Notification
from exstream_push.status import DocumentState, EvidenceFact, UseCase

UNALERTED_COLUMNS = [
    "dedup_key",
    "job_id",
    "channel",
    "failure_class",
    "customer_ref",
    "document_type",
    "next_action",
    "occurred_at",
    "alert_key",
]


class ExceptionRepository:
    """Reads and writes of the delivery exceptions; one per ledger (``ledger.exceptions``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _table(self) -> Table:
        return DeliveryException.__table__  # type: ignore[attr-defined,no-any-return]

    def record(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert, ignoring keys already recorded; returns how many records are new. Each new one that names a
        document is evidence that the document failed on its channel (``failed``: the channel as provider, the
        failure class as detail), appended in the same transaction."""
        by_key = {row["dedup_key"]: row for row in rows}
        if not by_key:
            return 0
        table = self._table()
        dialect: Any = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(table).on_conflict_do_nothing().returning(table.c.dedup_key)
        new: list[Mapping[str, Any]] = []
        with self.engine.begin() as conn:
            for chunk in store._chunks(list(by_key.values())):
                inserted = conn.execute(statement, list(chunk))
                new.extend(by_key[key] for key in inserted.scalars())
            evidence.append(conn, [_failed_fact(row) for row in new if row.get("document_id")])
        return len(new)

    def document_count(self, job_id: str) -> int:
        """How many records of the job name a document (a job with none failed as a whole)."""
        table = self._table()
        with self.engine.connect() as conn:
            return (
                conn.scalar(
                    select(func.count())
                    .select_from(table)
                    .where(table.c.job_id == job_id, table.c.document_id.is_not(None))
                )
                or 0
            )

    def unalerted(self) -> pd.DataFrame:
        """Every record (UNALERTED_COLUMNS) of each (job, channel, failure class) that has records no operations
        push covered yet, so an update can carry the group's total."""
        table = self._table()
        owed = (
            select(table.c.job_id, table.c.channel, table.c.failure_class)
            .where(table.c.alert_key.is_(None))
            .group_by(table.c.job_id, table.c.channel, table.c.failure_class)
        )
        frames = []
        with self.engine.connect() as conn:
            for job_id, channel, failure_class in conn.execute(owed).fetchall():
                result = conn.execute(
                    select(*(table.c[name] for name in UNALERTED_COLUMNS))
                    .where(
                        table.c.job_id == job_id,
                        table.c.channel == channel,
                        table.c.failure_class == failure_class,
                    )
                    .order_by(table.c.occurred_at, table.c.dedup_key)
                )
                frames.append(pd.DataFrame(result.fetchall(), columns=UNALERTED_COLUMNS))
        if not frames:
            return pd.DataFrame(columns=UNALERTED_COLUMNS)
        return pd.concat(frames, ignore_index=True)

    def mark_alerted(self, alert_key: str, dedup_keys: Sequence[str]) -> int:
        """Tie records not yet covered to the push that covered them; returns how many were marked."""
        table = self._table()
        marked = 0
        with self.engine.begin() as conn:
            for chunk in store._chunks(list(dedup_keys)):
                result = conn.execute(
                    update(table)
                    .where(table.c.dedup_key.in_(chunk), table.c.alert_key.is_(None))
                    .values(alert_key=alert_key)
                )
                marked += result.rowcount
        return marked

    def notification_statuses(self, keys: Sequence[str]) -> dict[str, str]:
        """The status of each operations push recorded under one of ``keys``; unrecorded keys are absent."""
        table = Notification.__table__
        statuses: dict[str, str] = {}
        with self.engine.connect() as conn:
            for chunk in store._chunks(list(keys)):
                found = conn.execute(select(table.c.key, table.c.status).where(table.c.key.in_(chunk)))
                statuses.update({key: status for key, status in found})
        return statuses

    def listing(self, job_id: str | None = None) -> list[dict[str, Any]]:
        """Every record, ordered as operations are alerted: by job, channel and failure class."""
        table = self._table()
        statement = select(table).order_by(
            table.c.job_id, table.c.channel, table.c.failure_class, table.c.document_id, table.c.dedup_key
        )
        if job_id is not None:
            statement = statement.where(table.c.job_id == job_id)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(statement).mappings()]

    def open_for_job(self, job_id: str) -> list[dict[str, Any]]:
        """The job's records still open (not yet asked to be reissued), by document."""
        table = self._table()
        statement = (
            select(table)
            .where(table.c.job_id == job_id, table.c.state == DocumentState.OPEN.value)
            .order_by(table.c.document_id, table.c.dedup_key)
        )
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(statement).mappings()]

    def mark_reissue_requested(self, dedup_keys: Sequence[str]) -> int:
        """Open records among ``dedup_keys`` become ``reissue_requested``; returns how many changed."""
        table = self._table()
        marked = 0
        with self.engine.begin() as conn:
            for chunk in store._chunks(list(dedup_keys)):
                result = conn.execute(
                    update(table)
                    .where(table.c.dedup_key.in_(chunk), table.c.state == DocumentState.OPEN.value)
                    .values(state=DocumentState.REISSUE_REQUESTED.value)
                )
                marked += result.rowcount
        return marked


def _failed_fact(row: Mapping[str, Any]) -> dict[str, Any]:
    """A delivery exception as evidence: the document, its job, the channel that failed and how (never the
    masked customer reference, which is operations' and no identifier)."""
    return evidence.fact(
        EvidenceFact.FAILED,
        row["document_id"],
        row["occurred_at"],
        use_case=UseCase.DELIVERY_EXCEPTIONS.value,
        job_id=row["job_id"],
        provider=row["channel"],
        detail=row["failure_class"],
    )
