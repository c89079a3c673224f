"""The ledger's hand-offs: the outbox of Prefect events, and the inputs flows consume once (the failed job ends the
watcher records, the tracking events the ingress stores), each marked when handled. One per ledger
(``ledger.outbox``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Insert, Table, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from exstream_push.ledger import store
from exstream_push.ledger.models import FailedJobEnd, OutboxEvent, TrackingEvent, Watermark

# The open transaction a caller writes its input in, so the event and the input are stored together or not at all.
Transaction = Connection

OUTBOX_COLUMNS = ("id", "event", "resource_id", "resource_labels", "payload", "occurred", "related")


class CursorMoved(RuntimeError):
    """Another run saved the cursor between this run's read and write."""


def add_events(conn: Transaction, rows: Sequence[Mapping[str, Any]]) -> None:
    """Outbox rows (``OUTBOX_COLUMNS`` and ``position``) inside the caller's transaction."""
    if rows:
        defaults = {"emitted_at": None, "resource_labels": None, "related": None}
        conn.execute(insert(OutboxEvent), [{**defaults, **row} for row in rows])


def _insert_skipping_stored(conn: Connection, table: Table) -> Insert:
    """``INSERT … ON CONFLICT DO NOTHING`` in the connection's dialect."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


def _insert_new(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert, skipping keys already stored: an event or end stored again is neither an error nor a second row."""
    if rows:
        conn.execute(_insert_skipping_stored(conn, table), list(rows))


class OutboxRepository:
    """The outbox and the consumed-once inputs; every write that must go with a cursor goes in its transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- the outbox ------------------------------------------------------------------------------------------

    def unemitted(self, limit: int) -> list[dict[str, Any]]:
        """The oldest events Prefect has not accepted yet, in the order they were enqueued."""
        table = OutboxEvent.__table__
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(*(table.c[name] for name in OUTBOX_COLUMNS))
                .where(table.c.emitted_at.is_(None))
                .order_by(table.c.occurred, table.c.position, table.c.id)
                .limit(limit)
            ).all()
        return [dict(row._mapping) for row in rows]

    def mark_emitted(self, event_ids: Sequence[str]) -> None:
        table = OutboxEvent.__table__
        with self.engine.begin() as conn:
            conn.execute(update(table).where(table.c.id.in_(list(event_ids))).values(emitted_at=store.utcnow()))

    def pending_count(self) -> int:
        table = OutboxEvent.__table__
        with self.engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(table).where(table.c.emitted_at.is_(None))) or 0

    # -- the watcher's cursor, its events and its failed job ends, written together ---------------------------

    def read_cursor(self, name: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.scalar(select(Watermark.value).where(Watermark.name == name))

    def save_cursor(
        self,
        name: str,
        previous: str | None,
        value: str,
        events: Sequence[Mapping[str, Any]] = (),
        failed_ends: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """Compare-and-set the cursor and store what it advanced over in the same transaction: a crash keeps both or
        neither, and two overlapping runs cannot both store the same job ends."""
        table = Watermark.__table__
        with self.engine.begin() as conn:
            if previous is None:
                statement = _insert_skipping_stored(conn, table)
                statement = statement.values(name=name, value=value, updated_at=store.utcnow())
                # RETURNING, since psycopg reports no row count for INSERT … ON CONFLICT DO NOTHING.
                stored = conn.execute(statement.returning(table.c.name)).first() is not None
            else:
                result = conn.execute(
                    update(table)
                    .where(table.c.name == name, table.c.value == previous)
                    .values(value=value, updated_at=store.utcnow())
                )
                stored = result.rowcount == 1
            if not stored:
                raise CursorMoved(f"watermark {name!r} changed while this run was reading Exstream")
            _insert_new(conn, OutboxEvent.__table__, [{"emitted_at": None, "related": None, **row} for row in events])
            _insert_new(conn, FailedJobEnd.__table__, [{"processed_at": None, **row} for row in failed_ends])

    # -- failed job ends, consumed by delivery-exceptions -----------------------------------------------------

    def unprocessed_failed_jobs(self, until: datetime) -> list[tuple[str, datetime]]:
        """(job id, end) of the failed ends not handled yet that ended by ``until``, oldest first."""
        table = FailedJobEnd.__table__
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(table.c.job_id, table.c.ended_at)
                .where(table.c.processed_at.is_(None), table.c.ended_at <= until)
                .order_by(table.c.ended_at, table.c.job_id)
            ).all()
        return [(job_id, ended_at) for job_id, ended_at in rows]

    def mark_failed_job_processed(self, job_id: str, until: datetime) -> int:
        """Every unhandled failed end of the job by ``until``: its failures are recorded, whichever run read them."""
        table = FailedJobEnd.__table__
        with self.engine.begin() as conn:
            result = conn.execute(
                update(table)
                .where(table.c.job_id == job_id, table.c.processed_at.is_(None), table.c.ended_at <= until)
                .values(processed_at=store.utcnow())
            )
        return result.rowcount

    # -- tracking events the ingress stored, consumed by delivery-exceptions ---------------------------------

    def unprocessed_tracking_events(self, limit: int) -> list[tuple[str, str]]:
        """(event id, payload JSON) of stored tracking events no flow has read yet, in the order received."""
        table = TrackingEvent.__table__
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(table.c.event_id, table.c.payload)
                .where(table.c.processed_at.is_(None))
                .order_by(table.c.received_at, table.c.event_id)
                .limit(limit)
            ).all()
        return [(event_id, payload) for event_id, payload in rows]

    def mark_tracking_events_processed(self, event_ids: Sequence[str]) -> None:
        table = TrackingEvent.__table__
        with self.engine.begin() as conn:
            for chunk in store._chunks(list(event_ids)):
                conn.execute(
                    update(table)
                    .where(table.c.event_id.in_(chunk), table.c.processed_at.is_(None))
                    .values(processed_at=store.utcnow())
                )
