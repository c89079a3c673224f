"""The ingress's writes: one transaction per signed request, so the signature is remembered, the input written
and the Prefect events it causes put in the outbox together, or none of them.

The outbox rows are written by the caller's ``enqueue`` (``prefect_events.enqueue``) on the repository's
connection: the ledger decides which rows are new, the outbox owns how an event is stored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, Engine, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.dml import Insert

from exstream_push.ledger import store
from exstream_push.ledger.models import (
    Device,
    Document,
    EngagementEvent,
    OpsAlert,
    Preference,
    SeenRequest,
    TrackingEvent,
    Watermark,
)

# What a ledger read raises when the database cannot answer (``/healthz`` answers 503 for it).
LEDGER_UNREADABLE: tuple[type[Exception], ...] = (SQLAlchemyError,)


class ReplayedRequest(Exception):
    """The request's signature was already remembered: a replay, and nothing of it was written."""


@dataclass(frozen=True)
class PendingEvent:
    """A Prefect event to put in the outbox with the input that causes it; the payload carries ids only."""

    event: str
    resource_id: str
    payload: Mapping[str, Any] = field(default_factory=dict)


# ``prefect_events.enqueue``: writes one outbox row inside the given connection's transaction.
Enqueue = Callable[[Connection, str, str, Mapping[str, Any]], str]


def _insert(conn: Connection, model: type) -> Insert:
    """The dialect's INSERT, which knows ON CONFLICT on both SQLite and PostgreSQL."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(model.__table__)  # type: ignore[attr-defined]


def _upsert(conn: Connection, model: type, row: Mapping[str, Any], key: str) -> None:
    """Insert the row, or update the stored one's columns the row gives (and only those)."""
    statement = _insert(conn, model).values(row)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[key], set_={name: statement.excluded[name] for name in row if name != key}
        )
    )


def _claim(conn: Connection, signature: str) -> None:
    """Remember the signature in the caller's transaction; ReplayedRequest (rolling it back) if seen before."""
    statement = _insert(conn, SeenRequest).values(signature=signature, seen_at=store.utcnow())
    # RETURNING, not rowcount: psycopg reports -1 for an INSERT … ON CONFLICT built this way.
    if conn.execute(statement.on_conflict_do_nothing().returning(SeenRequest.signature)).first() is None:
        raise ReplayedRequest


def _put(conn: Connection, enqueue: Enqueue, pending: PendingEvent) -> None:
    enqueue(conn, pending.event, pending.resource_id, pending.payload)


class IngressRepository:
    """What the signed ingress routes write; one per ledger (``ledger.ingress``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def register_device(self, signature: str, row: Mapping[str, Any]) -> None:
        """Insert or update the device by ``device_id``."""
        with self.engine.begin() as conn:
            _claim(conn, signature)
            _upsert(conn, Device, row, "device_id")

    def state_preference(self, signature: str, row: Mapping[str, Any], pending: PendingEvent, enqueue: Enqueue) -> None:
        """Insert or update the customer's preference by ``customer_id``, with its event."""
        with self.engine.begin() as conn:
            _claim(conn, signature)
            _upsert(conn, Preference, row, "customer_id")
            _put(conn, enqueue, pending)

    def claim_engagement(self, signature: str, event_ids: Sequence[str]) -> set[str]:
        """Remember the signature; returns which of ``event_ids`` were already stored (never announced again)."""
        table = EngagementEvent.__table__
        with self.engine.begin() as conn:
            _claim(conn, signature)
            return set(conn.scalars(select(table.c.event_id).where(table.c.event_id.in_(event_ids))))

    def announce_engagement(
        self,
        event_ids: Sequence[str],
        kinds: Sequence[str],
        pending_for: Callable[[str, str, str, str], PendingEvent],
        enqueue: Enqueue,
    ) -> int:
        """Put in the outbox an event per stored engagement event among ``event_ids`` of one of ``kinds``.

        ``pending_for(event_id, type, use_case, document_ref)`` builds each; returns how many were put.
        """
        table, documents = EngagementEvent.__table__, Document.__table__
        with self.engine.begin() as conn:
            stored = conn.execute(
                select(table.c.event_id, table.c.type, table.c.use_case, documents.c.ref)
                .join(
                    documents,
                    (documents.c.use_case == table.c.use_case) & (documents.c.document_id == table.c.document_id),
                )
                .where(table.c.event_id.in_(event_ids), table.c.type.in_(kinds))
            ).all()
            for event_id, kind, use_case, ref in stored:
                _put(conn, enqueue, pending_for(event_id, kind, use_case, ref))
        return len(stored)

    def record_tracking_events(
        self,
        signature: str,
        rows: Sequence[Mapping[str, Any]],
        failures: Mapping[str, PendingEvent],
        enqueue: Enqueue,
    ) -> tuple[set[str], list[str]]:
        """Store the events new by ``event_id``; the ``failures`` among the new ones go to the outbox.

        Returns the event ids stored now and, sorted, the failures announced.
        """
        with self.engine.begin() as conn:
            _claim(conn, signature)
            statement = _insert(conn, TrackingEvent).on_conflict_do_nothing().returning(TrackingEvent.event_id)
            stored = set(conn.execute(statement, list(rows)).scalars())
            announced = sorted(stored & failures.keys())
            for event_id in announced:
                _put(conn, enqueue, failures[event_id])
        return stored, announced

    def raise_alert(self, signature: str, row: Mapping[str, Any], pending: PendingEvent, enqueue: Enqueue) -> bool:
        """Store the alert unless its ``alert_id`` is known, with its event; False for a known one (unchanged)."""
        with self.engine.begin() as conn:
            _claim(conn, signature)
            statement = _insert(conn, OpsAlert).values(row).on_conflict_do_nothing().returning(OpsAlert.alert_id)
            inserted = conn.execute(statement).first() is not None
            if inserted:
                _put(conn, enqueue, pending)
        return inserted

    def announce_loop(
        self, mark: str, arrived: datetime, now: datetime, quiet: float, pending: PendingEvent, enqueue: Enqueue
    ) -> Literal["announced", "covered", "quiet"]:
        """Put ``pending`` in the outbox if input ``arrived`` after the last announcement (``mark`` remembers up to
        when) and that announcement is ``quiet`` seconds old: ``announced``; ``covered`` when an announcement made
        since covers it, ``quiet`` when it must wait. The mark and the event are written together, so a crash
        neither loses an announcement nor makes two of one."""
        table = Watermark.__table__
        with self.engine.begin() as conn:
            last = conn.execute(select(table.c.value, table.c.updated_at).where(table.c.name == mark)).first()
            if last is not None:
                if arrived <= datetime.fromisoformat(last.value):
                    return "covered"
                if (now - last.updated_at).total_seconds() < quiet:
                    return "quiet"
            _put(conn, enqueue, pending)
            _upsert(conn, Watermark, {"name": mark, "value": now.isoformat(), "updated_at": now}, "name")
        return "announced"

    def forget_seen_requests(self, before: datetime) -> int:
        """Signatures older than the replay window can no longer be presented with a valid timestamp."""
        with self.engine.begin() as conn:
            return conn.execute(delete(SeenRequest).where(SeenRequest.seen_at < before)).rowcount
