"""The notification aggregate: one row per idempotency key, claimed before sending, then its outcome."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Engine, bindparam, func, select, update

from exstream_push.ledger import bulk, evidence, store
from exstream_push.ledger.base import LedgerBase
from exstream_push.ledger.models import Notification
from exstream_push.status import NOTICE_STAGE, UNSETTLED, EvidenceFact, Status


class Subject(NamedTuple):
    """Whom and what a notification is about: what its evidence names, and never changes after its claim."""

    use_case: str
    document_id: str
    customer_id: str
    job_id: str
    device_id: str
    stage: str
    provider: str | None


class NotificationMixin(LedgerBase):
    """Notifications: decided without sending, claimed, their outcomes, read back per job."""

    def record_final(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Notifications decided without sending (skipped, quarantined); a row already present is left alone."""
        self._insert_ignoring_conflicts(Notification, rows)

    def claim(self, rows: Sequence[Mapping[str, Any]]) -> set[str]:
        """Claim idempotency keys before sending; returns the keys still owed a send (new or left pending)."""
        if not rows:
            return set()
        table = Notification.__table__
        if self._copies(rows):
            with self.engine.begin() as conn:
                return bulk.pending_among(conn, table, rows, Status.PENDING.value)
        keys = [row["key"] for row in rows]
        owed: set[str] = set()
        if self.on_sqlite:
            # One transaction per chunk, so no other writer changes a status between its insert and its read-back;
            # when every row went in (a batch's first claim), the statuses are those just written.
            for chunk in store._chunks(rows, store._SQLITE_WRITE_CHUNK):
                with self.engine.begin() as conn:
                    if bulk.sqlite_insert_ignoring_conflicts(conn, table, chunk) == len(chunk):
                        owed |= {row["key"] for row in chunk if row["status"] == Status.PENDING}
                    else:
                        chunk_keys = [row["key"] for row in chunk]
                        owed |= bulk.sqlite_keys_with_status(conn, table, chunk_keys, Status.PENDING.value)
            return owed
        self._insert_ignoring_conflicts(Notification, rows)
        with self.engine.connect() as conn:
            for chunk in store._chunks(keys):
                owed.update(
                    conn.scalars(
                        select(Notification.key).where(
                            Notification.key.in_(chunk), Notification.status == Status.PENDING
                        )
                    )
                )
        return owed

    def record_outcomes(
        self, outcomes: Sequence[Mapping[str, Any]], subjects: Mapping[str, Subject] | None = None
    ) -> None:
        """Outcomes keyed by ``key`` with status, reason, provider_message_id and attempts (added); a push sent or
        refused for good is evidence, appended in the same transaction.

        ``subjects``: what the caller already holds about the keys (the sender, its batch), so their evidence
        needs no read of the ledger; a settled key missing from it is read back."""
        if not outcomes:
            return
        table = Notification.__table__
        now = store.utcnow()
        rows = [
            {
                "key": o["key"],
                "status": o["status"],
                "reason": o.get("reason"),
                "provider_message_id": o.get("provider_message_id"),
                "attempts": o.get("attempts", 1),
                "updated_at": now,
            }
            for o in outcomes
        ]
        # Read and made ready before the write: a notification's document, device and stage never change, and a
        # SQLite writer holds every other process's writes up for as long as its transaction lasts.
        facts = evidence.prepare(_outcome_facts(self.engine, rows, subjects or {}))
        with self.engine.begin() as conn:
            if self._copies(rows):
                bulk.update_outcomes(conn, table, rows)
            elif self.on_sqlite:
                bulk.sqlite_update_outcomes(conn, table, rows)
            else:
                values = {name: bindparam(f"b_{name}") for name in bulk.OUTCOME_COLUMNS if name != "key"}
                statement = (
                    update(table)
                    .where(table.c.key == bindparam("b_key"))
                    .values({**values, "attempts": table.c.attempts + values["attempts"]})
                )
                conn.execute(statement, [{f"b_{name}": value for name, value in row.items()} for row in rows])
            evidence.append(conn, facts)

    def document_outcomes(self, use_case: str, job_id: str) -> Iterator[tuple[Any, ...]]:
        """Per document of a job: (document_id, customer_id, statuses and reasons of its notifications), streamed.

        Rows come ordered by document so the caller can fold them without holding the job in memory.
        """
        table = Notification.__table__
        statement = (
            select(
                table.c.document_id,
                table.c.customer_id,
                table.c.status,
                table.c.reason,
                table.c.updated_at,
            )
            .where(table.c.use_case == use_case, table.c.job_id == job_id)
            .order_by(table.c.document_id, table.c.device_id)
        )
        with self.engine.connect().execution_options(stream_results=True, yield_per=10_000) as conn:
            yield from conn.execute(statement)

    def unsettled_documents(self, use_case: str, job_id: str) -> int:
        """How many documents of a job still have a notification a later run may change (pending, deferred)."""
        table = Notification.__table__
        with self.engine.connect() as conn:
            return int(
                conn.scalar(
                    select(func.count(table.c.document_id.distinct())).where(
                        table.c.use_case == use_case,
                        table.c.job_id == job_id,
                        table.c.status.in_([status.value for status in UNSETTLED]),
                    )
                )
                or 0
            )


_SETTLED = (Status.SENT.value, Status.FAILED.value)


def _outcome_facts(
    engine: Engine, rows: Sequence[Mapping[str, Any]], subjects: Mapping[str, Subject]
) -> list[dict[str, Any]]:
    """``notified``, ``reminded`` (a stage's push) or ``failed`` per outcome, with its notification's document and
    device (its ledger id and provider, never its token): from ``subjects``, else read from the ledger (only then
    is a connection taken: the sender names every key)."""
    settled = [row for row in rows if row["status"] in _SETTLED]
    known = {row["key"]: subjects[row["key"]] for row in settled if row["key"] in subjects}
    unknown = [row["key"] for row in settled if row["key"] not in known]
    if unknown:
        with engine.connect() as conn:
            for chunk in store._chunks(unknown):
                found = bulk.driver_rows(
                    conn,
                    "SELECT n.key, n.use_case, n.document_id, n.customer_id, n.job_id, n.device_id, n.stage, "
                    "d.provider FROM notification n LEFT JOIN device d ON d.device_id = n.device_id "
                    f"WHERE n.key IN ({evidence.marks(conn, len(chunk))})",
                    chunk,
                )
                known.update((key, Subject(*subject)) for key, *subject in found)
    facts = []
    for row in settled:
        subject = known.get(row["key"])
        if subject is None:  # not claimed: no notification to record, so no evidence either
            continue
        failed = row["status"] == Status.FAILED
        reminder = subject.stage not in ("", NOTICE_STAGE)
        kind = EvidenceFact.FAILED if failed else EvidenceFact.REMINDED if reminder else EvidenceFact.NOTIFIED
        facts.append(
            evidence.fact(
                kind,
                subject.document_id,
                row["updated_at"],
                use_case=subject.use_case,
                customer_id=subject.customer_id,
                job_id=subject.job_id,
                device_id=subject.device_id or None,
                provider=subject.provider,
                provider_message_id=row["provider_message_id"],
                stage=subject.stage,
                detail=row["reason"] if failed else None,
            )
        )
    return facts
