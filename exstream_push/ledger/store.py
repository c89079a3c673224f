"""Bulk reads and writes against the ledger. Every write is a multi-row statement, never one ORM object at a time."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Engine, Table, bindparam, create_engine, event, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

from exstream_push.ledger.models import (
    Device,
    Document,
    EngagementEvent,
    Notification,
    PostBack,
    RejectedRecord,
    Watermark,
)
from exstream_push.status import Status

# Parameters per statement stay well under SQLite's 32,766 and PostgreSQL's 65,535 bind-variable limits.
_CHUNK = 2_000


def notification_key(use_case: str, document_id: str, device_id: str, stage: str = "") -> str:
    """The idempotency key: stable across runs, processes and machines."""
    parts = [use_case, document_id, device_id, *([stage] if stage else [])]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def notification_rows(
    frame: pd.DataFrame,
    use_case: str,
    status: str,
    *,
    reason: str | Sequence[str | None] | None = None,
    as_of: datetime | None = None,
) -> list[dict[str, Any]]:
    """Ledger rows for a frame of (document, device) pairs, the one place their shape is spelled out.

    The frame needs ``document_id``, ``job_id`` and ``customer_id``; ``device_id`` (missing or NaN: no device),
    ``stage``, ``key`` and ``not_before`` are used when present.
    """
    now = utcnow()
    count = len(frame)
    devices = frame["device_id"].fillna("") if "device_id" in frame else [""] * count
    stages = frame["stage"].fillna("") if "stage" in frame else [""] * count
    reasons = [reason] * count if reason is None or isinstance(reason, str) else list(reason)
    not_before = frame["not_before"] if "not_before" in frame else [None] * count
    keys = (
        frame["key"]
        if "key" in frame
        else [
            notification_key(use_case, document_id, device_id, stage)
            for document_id, device_id, stage in zip(frame["document_id"], devices, stages, strict=True)
        ]
    )
    return [
        {
            "key": key,
            "use_case": use_case,
            "document_id": document_id,
            "job_id": job_id,
            "customer_id": customer_id,
            "device_id": device_id,
            "stage": stage,
            "status": status,
            "reason": row_reason,
            "attempts": 0,
            "as_of": as_of,
            "not_before": None if pd.isna(later) else later,
            "created_at": now,
            "updated_at": now,
        }
        for key, document_id, job_id, customer_id, device_id, stage, row_reason, later in zip(
            keys,
            frame["document_id"],
            frame["job_id"],
            frame["customer_id"],
            devices,
            stages,
            reasons,
            not_before,
            strict=True,
        )
    ]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.get_driver_name() in ("psycopg2", ""):
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, pool_pre_ping=True, connect_args={"options": "-c timezone=UTC"})
    return create_engine(parsed, pool_pre_ping=True)


class Ledger:
    """The system of record. Safe to share between tasks of one process; several processes may share a database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        SQLModel.metadata.create_all(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    # -- writing -----------------------------------------------------------------------------------------------

    def _insert_ignoring_conflicts(self, model: type[SQLModel], rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        table: Table = model.__table__  # type: ignore[attr-defined]
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(table).on_conflict_do_nothing()
        with self.engine.begin() as conn:
            for chunk in _chunks(rows):
                conn.execute(statement, list(chunk))

    def upsert_devices(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert or replace devices by device_id (an import is the latest truth about a device)."""
        if not rows:
            return
        table = Device.__table__
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(table)
        updatable = [c.name for c in table.columns if c.name != "device_id"]
        statement = statement.on_conflict_do_update(
            index_elements=["device_id"], set_={name: statement.excluded[name] for name in updatable}
        )
        with self.engine.begin() as conn:
            for chunk in _chunks(rows):
                conn.execute(statement, list(chunk))

    def deactivate_devices(self, device_ids: Iterable[str], reason: str) -> int:
        ids = sorted(set(device_ids))
        if not ids:
            return 0
        changed = 0
        with self.engine.begin() as conn:
            for chunk in _chunks(ids):
                result = conn.execute(
                    update(Device)
                    .where(Device.device_id.in_(chunk), Device.active.is_(True))
                    .values(active=False, deactivated_reason=reason, updated_at=utcnow())
                )
                changed += result.rowcount
        return changed

    def record_documents(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self._insert_ignoring_conflicts(Document, rows)

    def record_rejected(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self._insert_ignoring_conflicts(RejectedRecord, rows)

    def read_watermark(self, name: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.scalar(select(Watermark.value).where(Watermark.name == name))

    def write_watermark(self, name: str, value: str, at: datetime) -> None:
        """Upsert: how far a poller or a sync has read, so a restart neither misses nor repeats."""
        table = Watermark.__table__
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(table).values(name=name, value=value, updated_at=at)
        statement = statement.on_conflict_do_update(
            index_elements=["name"],
            set_={"value": statement.excluded.value, "updated_at": statement.excluded.updated_at},
        )
        with self.engine.begin() as conn:
            conn.execute(statement)

    def record_events(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self._insert_ignoring_conflicts(EngagementEvent, rows)

    def record_final(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Notifications decided without sending (skipped, quarantined); a row already present is left alone."""
        self._insert_ignoring_conflicts(Notification, rows)

    def claim(self, rows: Sequence[Mapping[str, Any]]) -> set[str]:
        """Claim idempotency keys before sending; returns the keys still owed a send (new or left pending)."""
        self._insert_ignoring_conflicts(Notification, rows)
        keys = [row["key"] for row in rows]
        owed: set[str] = set()
        with self.engine.connect() as conn:
            for chunk in _chunks(keys):
                owed.update(
                    conn.scalars(
                        select(Notification.key).where(
                            Notification.key.in_(chunk), Notification.status == Status.PENDING
                        )
                    )
                )
        return owed

    def record_outcomes(self, outcomes: Sequence[Mapping[str, Any]]) -> None:
        """Outcomes keyed by ``key`` with status, reason, provider_message_id and attempts (added)."""
        if not outcomes:
            return
        table = Notification.__table__
        statement = (
            update(table)
            .where(table.c.key == bindparam("b_key"))
            .values(
                status=bindparam("b_status"),
                reason=bindparam("b_reason"),
                provider_message_id=bindparam("b_message_id"),
                attempts=table.c.attempts + bindparam("b_attempts"),
                updated_at=bindparam("b_updated_at"),
            )
        )
        now = utcnow()
        params = [
            {
                "b_key": o["key"],
                "b_status": o["status"],
                "b_reason": o.get("reason"),
                "b_message_id": o.get("provider_message_id"),
                "b_attempts": o.get("attempts", 1),
                "b_updated_at": now,
            }
            for o in outcomes
        ]
        with self.engine.begin() as conn:
            conn.execute(statement, params)

    def record_post_back(self, channel: str, job_id: str, digest: str, rows: int, response: str) -> None:
        self._insert_ignoring_conflicts(
            PostBack,
            [
                {
                    "channel": channel,
                    "job_id": job_id,
                    "digest": digest,
                    "rows": rows,
                    "response": response,
                    "posted_at": utcnow(),
                }
            ],
        )

    # -- reading -----------------------------------------------------------------------------------------------

    def devices_for(self, customer_ids: Sequence[str]) -> pd.DataFrame:
        """Every device (active or not) of the given customers, as a frame."""
        columns = [c.name for c in Device.__table__.columns]
        frames = []
        with self.engine.connect() as conn:
            for chunk in _chunks(sorted(set(customer_ids))):
                result = conn.execute(select(Device.__table__).where(Device.customer_id.in_(chunk)))
                frames.append(pd.DataFrame(result.fetchall(), columns=columns))
        if not frames:
            return pd.DataFrame(columns=columns)
        return pd.concat(frames, ignore_index=True)

    def documents_where_seen(self, use_case: str, document_ids: Sequence[str]) -> pd.DataFrame:
        """Where each document was first seen (job, step, position), to tell duplicates from re-runs."""
        columns = ["document_id", "job_id", "step_id", "position", "ref"]
        frames = []
        with self.engine.connect() as conn:
            for chunk in _chunks(sorted(set(document_ids))):
                result = conn.execute(
                    select(
                        Document.document_id,
                        Document.job_id,
                        Document.step_id,
                        Document.position,
                        Document.ref,
                    ).where(Document.use_case == use_case, Document.document_id.in_(chunk))
                )
                frames.append(pd.DataFrame(result.fetchall(), columns=columns))
        if not frames:
            return pd.DataFrame(columns=columns)
        return pd.concat(frames, ignore_index=True)

    def already_posted(self, channel: str, job_id: str, digest: str) -> bool:
        with self.engine.connect() as conn:
            found = conn.scalar(
                select(func.count())
                .select_from(PostBack)
                .where(PostBack.channel == channel, PostBack.job_id == job_id, PostBack.digest == digest)
            )
        return bool(found)

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

    def rejected_for_job(self, use_case: str, job_id: str) -> Iterator[tuple[Any, ...]]:
        table = RejectedRecord.__table__
        statement = (
            select(
                table.c.document_id,
                table.c.customer_id,
                table.c.status,
                table.c.reason,
                table.c.created_at,
                table.c.position,
            )
            .where(table.c.use_case == use_case, table.c.job_id == job_id)
            .order_by(table.c.position)
        )
        with self.engine.connect().execution_options(stream_results=True, yield_per=10_000) as conn:
            yield from conn.execute(statement)

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
