"""Lifecycle: fold engagement events into each document's furthest step, never backwards.

sent → delivered → opened → document_accessed → acknowledged / action_completed. ``sent`` comes from the ledger
(a push was accepted for the document); the rest from engagement events.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import bindparam, func, select, update

from exstream_push.ledger import Document, EngagementEvent, Ledger, Notification
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push.status import LIFECYCLE_ORDER, EngagementType, Status

STATUS_HEADER = ["document_id", "customer_id", "use_case", "status", "status_at", "updated_at"]
FALLBACK_HEADER = ["document_id", "customer_id", "use_case", "document_type", "sent_at", "reason", "updated_at"]
_SENT = EngagementType.SENT.value


def _utc(moment: Any) -> datetime:
    """Aggregates come back without the column's type: SQLite gives text, PostgreSQL an aware datetime."""
    stamp = pd.Timestamp(moment)
    return (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")).to_pydatetime()


def _iso(moment: Any) -> str:
    return _utc(moment).isoformat(timespec="seconds").replace("+00:00", "Z")


def _documents(ledger: Ledger, keys: list[tuple[str, str]]) -> pd.DataFrame:
    columns = ["use_case", "document_id", "customer_id", "document_type", "engagement", "engagement_at"]
    frames = []
    table = Document.__table__
    with ledger.engine.connect() as conn:
        for start in range(0, len(keys), 2_000):
            ids = sorted({document_id for _, document_id in keys[start : start + 2_000]})
            result = conn.execute(select(*(table.c[name] for name in columns)).where(table.c.document_id.in_(ids)))
            frames.append(pd.DataFrame(result.fetchall(), columns=columns))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def _forward(ledger: Ledger, candidates: pd.DataFrame) -> pd.DataFrame:
    """The candidates that move a document forward: its furthest new step beyond the one recorded."""
    if candidates.empty:
        return candidates
    best = (
        candidates.assign(rank=candidates["step"].map(LIFECYCLE_ORDER), at=candidates["at"].map(_utc))
        .sort_values(["rank", "at"])
        .drop_duplicates(["use_case", "document_id"], keep="last")
    )
    current = _documents(ledger, list(zip(best["use_case"], best["document_id"], strict=True)))
    merged = best.merge(current, on=["use_case", "document_id"], how="inner")
    return merged[merged["rank"] > merged["engagement"].map(LIFECYCLE_ORDER).fillna(-1)]


def latest_event_received(ledger: Ledger) -> datetime | None:
    """The next watermark: events are stamped when received, so a run's as_of cannot stand in for it."""
    with ledger.engine.connect() as conn:
        return conn.execute(select(EngagementEvent.received_at).order_by(EngagementEvent.received_at.desc())).scalar()


@task(name="fold-engagement", cache_policy=NO_CACHE)
def fold_engagement(received_after: datetime | None, as_of: datetime) -> list[list[Any]]:
    """Status rows for Exstream: every document whose furthest step moves forward. Nothing is written here, so
    a failed post leaves the ledger as it was and the next run reports the same changes."""
    ledger = ledger_for(get_settings())
    notification = Notification.__table__
    sent_query = (
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
    events = EngagementEvent.__table__
    event_query = select(events.c.use_case, events.c.document_id, events.c.type, events.c.occurred_at)
    if received_after is not None:
        event_query = event_query.where(events.c.received_at > received_after)
    with ledger.engine.connect() as conn:
        sent = pd.DataFrame(conn.execute(sent_query).fetchall(), columns=["use_case", "document_id", "at"])
        seen = pd.DataFrame(conn.execute(event_query).fetchall(), columns=["use_case", "document_id", "step", "at"])
    frame = _forward(ledger, pd.concat([sent.assign(step=_SENT), seen], ignore_index=True))
    if frame.empty:
        return []
    updated = _iso(as_of)
    return [
        [document_id, customer_id, use_case, step, _iso(at), updated]
        for document_id, customer_id, use_case, step, at in zip(
            frame["document_id"], frame["customer_id"], frame["use_case"], frame["step"], frame["at"], strict=True
        )
    ]


@task(name="record-engagement", cache_policy=NO_CACHE)
def record_engagement(rows: list[list[Any]]) -> None:
    """Writes each document's new furthest step (rows as ``fold_engagement`` made them)."""
    statement = (
        update(Document.__table__)
        .where(Document.use_case == bindparam("b_use_case"), Document.document_id == bindparam("b_document_id"))
        .values(engagement=bindparam("b_step"), engagement_at=bindparam("b_at"))
    )
    with ledger_for(get_settings()).engine.begin() as conn:
        conn.execute(
            statement,
            [
                {"b_use_case": use_case, "b_document_id": document_id, "b_step": step, "b_at": _utc(at)}
                for document_id, _customer, use_case, step, at, _updated in rows
            ],
        )


@task(name="find-unopened-documents", cache_policy=NO_CACHE)
def find_unopened_documents(as_of: datetime, fallback_after: timedelta) -> list[list[Any]]:
    """Documents pushed but not opened within ``fallback_after``, and not yet handed back for a fallback."""
    ledger = ledger_for(get_settings())
    table = Document.__table__
    query = select(
        table.c.document_id, table.c.customer_id, table.c.use_case, table.c.document_type, table.c.engagement_at
    ).where(
        table.c.engagement.in_([_SENT, EngagementType.DELIVERED.value]),
        table.c.fallback_requested_at.is_(None),
        table.c.engagement_at <= as_of - fallback_after,
    )
    with ledger.engine.connect() as conn:
        rows = conn.execute(query).fetchall()
    updated = _iso(as_of)
    hours = int(fallback_after.total_seconds() // 3600)
    return [
        [document_id, customer_id, use_case, document_type, _iso(sent_at), f"not_opened_within_{hours}h", updated]
        for document_id, customer_id, use_case, document_type, sent_at in rows
    ]


@task(name="mark-fallback-requested", cache_policy=NO_CACHE)
def mark_fallback_requested(rows: list[list[Any]], as_of: datetime) -> None:
    ledger = ledger_for(get_settings())
    statement = (
        update(Document.__table__)
        .where(Document.use_case == bindparam("b_use_case"), Document.document_id == bindparam("b_document_id"))
        .values(fallback_requested_at=as_of)
    )
    with ledger.engine.begin() as conn:
        conn.execute(statement, [{"b_use_case": row[2], "b_document_id": row[0]} for row in rows])


def funnel(ledger: Ledger) -> list[dict[str, Any]]:
    """Documents that reached at least each step, per use case and document type."""
    table = Document.__table__
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            select(table.c.use_case, table.c.document_type, table.c.engagement, func.count()).group_by(
                table.c.use_case, table.c.document_type, table.c.engagement
            )
        ).fetchall()
    frame = pd.DataFrame(rows, columns=["use_case", "document_type", "engagement", "documents"])
    result = []
    for (use_case, document_type), group in frame.groupby(["use_case", "document_type"]):
        ranks = group["engagement"].map(LIFECYCLE_ORDER).fillna(-1)
        row: dict[str, Any] = {
            "use_case": use_case,
            "document_type": document_type,
            "documents": int(group["documents"].sum()),
        }
        for step in EngagementType:
            if step is EngagementType.ACTION_COMPLETED:
                continue
            label = "acknowledged_or_completed" if step is EngagementType.ACKNOWLEDGED else step.value
            row[label] = int(group.loc[ranks >= LIFECYCLE_ORDER[step], "documents"].sum())
        result.append(row)
    return result
