"""Bulk reads and writes against the ledger. Every write is a multi-row statement, never one ORM object at a time."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Engine, Table, bindparam, create_engine, event, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, ExceptionContext, make_url
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel

from exstream_push.ledger import bulk, migrations
from exstream_push.ledger.alerts import AlertRepository
from exstream_push.ledger.audit import AuditRepository
from exstream_push.ledger.engagement import EngagementRepository
from exstream_push.ledger.errors import ledger_error, ledger_unavailable
from exstream_push.ledger.exceptions import ExceptionRepository
from exstream_push.ledger.follow_ups import FollowUpRepository
from exstream_push.ledger.ingress import IngressRepository
from exstream_push.ledger.models import (
    Device,
    Document,
    EngagementEvent,
    Notification,
    PostBack,
    RejectedRecord,
    ReportedOutcome,
    Watermark,
    WorkBatch,
    WorkRun,
)
from exstream_push.ledger.notices import NoticeRepository
from exstream_push.ledger.outbox import OutboxRepository
from exstream_push.ledger.preferences import PreferenceRepository
from exstream_push.ledger.reminders import ReminderRepository
from exstream_push.status import UNSETTLED, Status

# Parameters per statement stay well under SQLite's 32,766 and PostgreSQL's 65,535 bind-variable limits.
_CHUNK = 2_000
# SQLite lets one connection write at a time, across threads and processes: large writes commit every this many
# rows, so a sender recording outcomes waits for one chunk, not for another batch's whole claim (25,000 rows).
_SQLITE_WRITE_CHUNK = 2_000


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


def _naive_utc(moment: datetime) -> datetime:
    """Timestamps come back naive (SQLite, PostgreSQL ``timestamp``) or aware, by driver: compare them as naive UTC."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def make_engine(url: str) -> Engine:
    """The ledger's engine: parameters hidden from SQLAlchemy's error text, and every database error replaced by
    a ``LedgerError`` that carries no value (see ``ledger.errors``), whichever statement raised it."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database:
            try:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ledger_unavailable(exc, parsed) from None
        engine = create_engine(url, connect_args={"timeout": 60}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    elif parsed.get_backend_name() == "postgresql":
        if parsed.get_driver_name() in ("psycopg2", ""):
            parsed = parsed.set(drivername="postgresql+psycopg")
        engine = create_engine(
            parsed, pool_pre_ping=True, connect_args={"options": "-c timezone=UTC"}, hide_parameters=True
        )
    else:
        engine = create_engine(parsed, pool_pre_ping=True, hide_parameters=True)

    @event.listens_for(engine, "handle_error")
    def _value_free_errors(context: ExceptionContext) -> None:
        _replace_error(context, engine.url)

    return engine


def _replace_error(context: ExceptionContext, url: URL) -> None:
    """Raise the value-free replacement of a database error: ``LedgerUnavailable`` when no connection could be
    opened or it was lost, else the ``LedgerError`` of its class. A pre-ping is left to SQLAlchemy (it reconnects),
    and what SQLAlchemy does not wrap (KeyboardInterrupt, errors of our own code) passes unchanged."""
    if context.is_pre_ping or context.sqlalchemy_exception is None:
        return
    if context.connection is None or context.is_disconnect:
        raise ledger_unavailable(context.original_exception, url)
    raise ledger_error(context.original_exception, url)


class Ledger:
    """The system of record. Safe to share between tasks of one process; several processes may share a database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        migrations.upgrade(self.engine)
        # COPY for large writes on PostgreSQL; a benchmark turns it off to measure the multi-row path.
        self.use_copy = self.engine.dialect.name == "postgresql"
        # SQLite runs in this process: its bulk paths hand the driver plain tuples, without SQLAlchemy's per-row work.
        self.on_sqlite = self.engine.dialect.name == "sqlite"
        # The use cases' own reads and writes, one repository per aggregate.
        self.follow_ups = FollowUpRepository(self.engine)
        self.reminders = ReminderRepository(self.engine)
        self.notices = NoticeRepository(self.engine)
        self.exceptions = ExceptionRepository(self.engine)
        self.outbox = OutboxRepository(self.engine)
        self.ingress = IngressRepository(self.engine)
        self.engagement = EngagementRepository(self.engine)
        self.preferences = PreferenceRepository(self.engine)
        self.alerts = AlertRepository(self.engine)
        self.audit = AuditRepository(self.engine)

    def _copies(self, rows: Sequence[Any]) -> bool:
        return self.use_copy and len(rows) >= bulk.COPY_THRESHOLD

    def dispose(self) -> None:
        self.engine.dispose()

    # -- writing -----------------------------------------------------------------------------------------------

    def _insert_ignoring_conflicts(self, model: type[SQLModel], rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        table: Table = model.__table__  # type: ignore[attr-defined]
        if self.on_sqlite:
            for chunk in _chunks(rows, _SQLITE_WRITE_CHUNK):
                with self.engine.begin() as conn:
                    bulk.sqlite_insert_ignoring_conflicts(conn, table, chunk)
            return
        if self._copies(rows):
            with self.engine.begin() as conn:
                bulk.insert_ignoring_conflicts(conn, table, rows)
            return
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
        if self._copies(rows):
            with self.engine.begin() as conn:
                bulk.upsert(conn, table, rows, "device_id")
            return
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
            for chunk in _chunks(rows, _SQLITE_WRITE_CHUNK):
                with self.engine.begin() as conn:
                    if bulk.sqlite_insert_ignoring_conflicts(conn, table, chunk) == len(chunk):
                        owed |= {row["key"] for row in chunk if row["status"] == Status.PENDING}
                    else:
                        chunk_keys = [row["key"] for row in chunk]
                        owed |= bulk.sqlite_keys_with_status(conn, table, chunk_keys, Status.PENDING.value)
            return owed
        self._insert_ignoring_conflicts(Notification, rows)
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
        now = utcnow()
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
        table = Device.__table__
        columns = [c.name for c in table.columns]
        frames = []
        with self.engine.connect() as conn:
            for chunk in _chunks(sorted(set(customer_ids))):
                if self.on_sqlite:
                    rows = bulk.sqlite_rows_among(conn, table, "customer_id", chunk)
                else:
                    rows = conn.execute(select(table).where(table.c.customer_id.in_(chunk))).fetchall()
                frames.append(pd.DataFrame(rows, columns=columns))
        if not frames:
            return pd.DataFrame(columns=columns)
        return pd.concat(frames, ignore_index=True)

    def documents_where_seen(self, use_case: str, document_ids: Sequence[str]) -> pd.DataFrame:
        """Where each document was first seen (job, step, position) and whose it is, to tell duplicates from re-runs
        and a reuse of the id by another customer from a duplicate."""
        columns = ["document_id", "job_id", "step_id", "position", "ref", "customer_id"]
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
                        Document.customer_id,
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

    def reported_outcomes(
        self, channel: str, use_case: str, job_id: str, document_ids: Sequence[str]
    ) -> dict[str, tuple[str, str]]:
        """What a channel was last told about these documents of a job: document id → (push status, reason)."""
        table = ReportedOutcome.__table__
        reported: dict[str, tuple[str, str]] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(sorted(set(document_ids))):
                rows = conn.execute(
                    select(table.c.document_id, table.c.push_status, table.c.reason).where(
                        table.c.channel == channel,
                        table.c.use_case == use_case,
                        table.c.job_id == job_id,
                        table.c.document_id.in_(chunk),
                    )
                )
                reported.update((document_id, (status, reason)) for document_id, status, reason in rows)
        return reported

    def record_reported(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Upsert what a channel was told (channel, use_case, document_id, job_id, push_status, reason, reported_at)."""
        if not rows:
            return
        table = ReportedOutcome.__table__
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(table)
        statement = statement.on_conflict_do_update(
            index_elements=["channel", "use_case", "job_id", "document_id"],
            set_={name: statement.excluded[name] for name in ("push_status", "reason", "reported_at")},
        )
        with self.engine.begin() as conn:
            for chunk in _chunks(rows):
                conn.execute(statement, list(chunk))

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

    # -- shared runs: a work queue of spooled batches ------------------------------------------------------------

    def join_run(
        self,
        run_key: str,
        worker: str,
        lease_until: datetime,
        is_dead: Callable[[str], bool],
        content: str | None = None,
    ) -> tuple[int, bool] | None:
        """One attempt to join the current generation of a run: (run id, whether this worker extracts it).

        The first to insert a generation extracts it; a dead or expired extractor's generation is taken over; a
        finished one is followed by a new generation, unless it is up to date (``_up_to_date``), when it is
        joined as it is. None: someone else is extracting, or a race was lost.
        """
        table = WorkRun.__table__
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                current = conn.execute(
                    select(table)
                    .where(table.c.run_key == run_key)
                    .order_by(table.c.generation.desc())
                    .limit(1)
                    .with_for_update()
                ).first()
                if current is not None and current.state == "done" and self._up_to_date(conn, current, content):
                    return current.id, False
                if current is None or current.state == "done":
                    generation = 1 if current is None else current.generation + 1
                    inserted = conn.execute(
                        table.insert().values(
                            run_key=run_key,
                            generation=generation,
                            state="extracting",
                            content=content,
                            claimed_by=worker,
                            lease_expires=lease_until,
                            created_at=now,
                            updated_at=now,
                        )
                    )
                    return inserted.inserted_primary_key[0], True
                if current.state != "extracting":
                    return current.id, False
                if _naive_utc(current.lease_expires) > _naive_utc(now) and not is_dead(current.claimed_by):
                    return None
                taken = conn.execute(
                    update(table)
                    .where(
                        table.c.id == current.id,
                        table.c.state == "extracting",
                        table.c.claimed_by == current.claimed_by,
                    )
                    .values(claimed_by=worker, lease_expires=lease_until, updated_at=now)
                )
                return (current.id, True) if taken.rowcount == 1 else None
        except IntegrityError:
            return None

    @staticmethod
    def _up_to_date(conn: Connection, finished: Any, content: str | None) -> bool:
        """A finished run started again would send nothing: same content, none of its notifications left pending
        (retries exhausted, configuration errors), no device registered, changed or deactivated since it ended."""
        if content is None or finished.content != content:
            return False
        use_case, _, job_id = finished.run_key.partition("/")
        notification = Notification.__table__
        pending = conn.execute(
            select(notification.c.key)
            .where(
                notification.c.job_id == job_id,
                notification.c.use_case == use_case,
                notification.c.status == Status.PENDING.value,
            )
            .limit(1)
        ).first()
        if pending is not None:
            return False
        latest_device = conn.scalar(select(func.max(Device.__table__.c.updated_at)))
        return latest_device is None or _naive_utc(latest_device) <= _naive_utc(finished.updated_at)

    def enqueue_batches(self, run_id: int, worker: str, paths: Sequence[str], totals: str) -> None:
        """Queue a run's batches and mark it extracted, in one transaction, if this worker still holds it."""
        now = utcnow()
        with self.engine.begin() as conn:
            held = conn.execute(
                update(WorkRun.__table__)
                .where(
                    WorkRun.__table__.c.id == run_id,
                    WorkRun.__table__.c.state == "extracting",
                    WorkRun.__table__.c.claimed_by == worker,
                )
                .values(
                    state="extracted",
                    batches=len(paths),
                    totals=totals,
                    claimed_by=None,
                    lease_expires=None,
                    updated_at=now,
                )
            )
            if held.rowcount != 1:
                raise RuntimeError(f"run {run_id}: the extraction lease was lost to another worker")
            for chunk in _chunks(list(enumerate(paths, start=1))):
                conn.execute(
                    WorkBatch.__table__.insert(),
                    [
                        {"run_id": run_id, "number": n, "path": p, "state": "queued", "updated_at": now}
                        for n, p in chunk
                    ],
                )

    def claim_batch(self, run_id: int, worker: str, lease_until: datetime) -> tuple[int, int, str] | None:
        """Claim the lowest queued (or lease-expired) batch: (id, number, path), or None when none is free.

        PostgreSQL: ``FOR UPDATE SKIP LOCKED`` lets concurrent claimers pass each other's rows. SQLite has one
        writer and ignores the lock; the state guard on the UPDATE makes a lost race claim nothing, and we retry.
        """
        table = WorkBatch.__table__
        while True:
            now = utcnow()
            claimable = (table.c.run_id == run_id) & (
                (table.c.state == "queued") | ((table.c.state == "claimed") & (table.c.lease_expires < now))
            )
            with self.engine.begin() as conn:
                row = conn.execute(
                    select(table.c.id, table.c.number, table.c.path)
                    .where(claimable)
                    .order_by(table.c.number)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                ).first()
                if row is None:
                    return None
                taken = conn.execute(
                    update(table)
                    .where(table.c.id == row.id, claimable)
                    .values(state="claimed", claimed_by=worker, lease_expires=lease_until, updated_at=now)
                )
                if taken.rowcount == 1:
                    return row.id, row.number, row.path

    def complete_batch(self, batch_id: int, worker: str) -> bool:
        """Mark a batch done; False when its lease had passed to another worker meanwhile (the work still counts)."""
        table = WorkBatch.__table__
        with self.engine.begin() as conn:
            ours = conn.execute(
                update(table)
                .where(table.c.id == batch_id, table.c.claimed_by == worker)
                .values(state="done", lease_expires=None, updated_at=utcnow())
            ).rowcount
            if not ours:
                conn.execute(
                    update(table)
                    .where(table.c.id == batch_id, table.c.state != "done")
                    .values(state="done", claimed_by=worker, lease_expires=None, updated_at=utcnow())
                )
        return bool(ours)

    def release_claims(self, worker: str) -> None:
        """Give back what a worker holds unfinished (it is stopping), so others need not wait for its lease."""
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                update(WorkBatch.__table__)
                .where(WorkBatch.__table__.c.claimed_by == worker, WorkBatch.__table__.c.state == "claimed")
                .values(state="queued", claimed_by=None, lease_expires=None, updated_at=now)
            )
            conn.execute(
                update(WorkRun.__table__)
                .where(WorkRun.__table__.c.claimed_by == worker, WorkRun.__table__.c.state != "done")
                .values(lease_expires=now)
            )

    def renew_leases(self, workers: Sequence[str], lease_until: datetime) -> None:
        if not workers:
            return
        with self.engine.begin() as conn:
            conn.execute(
                update(WorkBatch.__table__)
                .where(WorkBatch.__table__.c.claimed_by.in_(workers), WorkBatch.__table__.c.state == "claimed")
                .values(lease_expires=lease_until)
            )
            conn.execute(
                update(WorkRun.__table__)
                .where(
                    WorkRun.__table__.c.claimed_by.in_(workers),
                    WorkRun.__table__.c.state.in_(["extracting", "posting"]),
                )
                .values(lease_expires=lease_until)
            )

    def expire_claims(self, run_id: int, is_dead: Callable[[str], bool]) -> int:
        """End the leases of a run's claims held by workers known to be dead, so they are claimable at once."""
        expired = utcnow()
        batches, runs = WorkBatch.__table__, WorkRun.__table__
        with self.engine.begin() as conn:
            holders = set(
                conn.scalars(
                    select(batches.c.claimed_by).where(batches.c.run_id == run_id, batches.c.state == "claimed")
                )
            )
            holders |= set(conn.scalars(select(runs.c.claimed_by).where(runs.c.id == run_id, runs.c.state != "done")))
            dead = [holder for holder in holders if holder and is_dead(holder)]
            if not dead:
                return 0
            conn.execute(
                update(batches)
                .where(batches.c.run_id == run_id, batches.c.claimed_by.in_(dead), batches.c.state == "claimed")
                .values(lease_expires=expired)
            )
            conn.execute(
                update(runs).where(runs.c.id == run_id, runs.c.claimed_by.in_(dead)).values(lease_expires=expired)
            )
        return len(dead)

    def run_workers(self, run_id: int) -> set[str]:
        """Every worker the ledger has seen working on a run: its extractor or poster, and each batch's holder."""
        batches, runs = WorkBatch.__table__, WorkRun.__table__
        with self.engine.connect() as conn:
            workers = set(conn.scalars(select(batches.c.claimed_by).where(batches.c.run_id == run_id).distinct()))
            workers.add(conn.scalar(select(runs.c.claimed_by).where(runs.c.id == run_id)))
        workers.discard(None)
        return workers

    def run_state(self, run_id: int) -> tuple[str, str | None, dict[str, int]]:
        """A run's state, its extraction totals (JSON) and its batches counted by state."""
        batches = WorkBatch.__table__
        with self.engine.connect() as conn:
            state, totals = conn.execute(
                select(WorkRun.__table__.c.state, WorkRun.__table__.c.totals).where(WorkRun.__table__.c.id == run_id)
            ).one()
            counts = dict(
                conn.execute(
                    select(batches.c.state, func.count()).where(batches.c.run_id == run_id).group_by(batches.c.state)
                ).all()
            )
        return state, totals, counts

    def claim_post_back(self, run_id: int, worker: str, lease_until: datetime) -> bool:
        """The one worker to post a run's outcomes: all its batches done, and nobody (alive) posting already."""
        runs, batches = WorkRun.__table__, WorkBatch.__table__
        now = utcnow()
        unfinished = select(batches.c.id).where(batches.c.run_id == run_id, batches.c.state != "done").exists()
        with self.engine.begin() as conn:
            taken = conn.execute(
                update(runs)
                .where(
                    runs.c.id == run_id,
                    ~unfinished,
                    (runs.c.state == "extracted") | ((runs.c.state == "posting") & (runs.c.lease_expires < now)),
                )
                .values(state="posting", claimed_by=worker, lease_expires=lease_until, updated_at=now)
            )
        return taken.rowcount == 1

    def finish_run(self, run_id: int, worker: str) -> None:
        table = WorkRun.__table__
        with self.engine.begin() as conn:
            conn.execute(
                update(table)
                .where(table.c.id == run_id, table.c.claimed_by == worker)
                .values(state="done", lease_expires=None, updated_at=utcnow())
            )

    def batch_workers(self, run_id: int) -> dict[int, str | None]:
        """Which worker finished (or holds) each batch of a run, by batch number."""
        table = WorkBatch.__table__
        with self.engine.connect() as conn:
            return dict(conn.execute(select(table.c.number, table.c.claimed_by).where(table.c.run_id == run_id)).all())
