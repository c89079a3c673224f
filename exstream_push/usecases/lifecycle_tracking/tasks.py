"""The lifecycle-tracking tasks: each reads through ``ledger.engagement``, decides by the pure rules of
``exstream_push.usecases.lifecycle_tracking.rules`` and writes back in bulk."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from exstream_push.blocks.exstream import ExstreamConnection
from exstream_push.retrying import retry_if_it_can_succeed
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push.tasks.post_back import post_driver_file
from exstream_push.usecases.lifecycle_tracking.config import USE_CASE
from exstream_push.usecases.lifecycle_tracking.rules import (
    UNOPENED_STEPS,
    candidates,
    fallback_rows,
    forward,
    funnel_table,
    furthest,
    status_rows,
    steps_of,
)


@dataclass(frozen=True)
class EngagementWindow:
    """The engagement a run folds: received after the last run's mark, up to the newest received now."""

    received_after: datetime | None
    received_until: datetime | None


@task(name="engagement-window", cache_policy=NO_CACHE)
def engagement_window() -> EngagementWindow:
    """Read before folding, so events received while the run works are the next run's: events are stamped when
    received, so a run's as_of cannot stand in for the mark."""
    ledger = ledger_for(get_settings())
    mark = ledger.read_watermark(USE_CASE)
    return EngagementWindow(
        received_after=datetime.fromisoformat(mark) if mark else None,
        received_until=ledger.engagement.latest_event_received(),
    )


@task(name="advance-engagement-watermark", cache_policy=NO_CACHE)
def advance_engagement_watermark(window: EngagementWindow, as_of: datetime) -> None:
    """Once the changes are posted and recorded, the next run starts after what this one folded."""
    if window.received_until is not None:
        ledger_for(get_settings()).write_watermark(USE_CASE, window.received_until.isoformat(), as_of)


@task(name="fold-engagement", cache_policy=NO_CACHE)
def fold_engagement(received_after: datetime | None, as_of: datetime) -> list[list[Any]]:
    """Status rows for Exstream: every document whose furthest step moves forward. Nothing is written here, so
    a failed post leaves the ledger as it was and the next run reports the same changes."""
    engagement = ledger_for(get_settings()).engagement
    best = furthest(
        candidates(engagement.first_sent_without_engagement(), engagement.events_received_after(received_after))
    )
    if best.empty:
        return []
    current = engagement.current_engagement(best["document_id"].tolist())
    return status_rows(forward(best, current), as_of)


@task(name="record-engagement", cache_policy=NO_CACHE)
def record_engagement(rows: list[list[Any]]) -> None:
    """Writes each document's new furthest step (rows as ``fold_engagement`` made them)."""
    ledger_for(get_settings()).engagement.record_steps(steps_of(rows))


@task(name="find-unopened-documents", cache_policy=NO_CACHE)
def find_unopened_documents(as_of: datetime, fallback_after: timedelta) -> list[list[Any]]:
    """Documents pushed but not opened within ``fallback_after``, and not yet handed back for a fallback."""
    unopened = ledger_for(get_settings()).engagement.unopened(UNOPENED_STEPS, as_of - fallback_after)
    return fallback_rows(unopened, as_of, fallback_after)


@task(name="mark-fallback-requested", cache_policy=NO_CACHE)
def mark_fallback_requested(rows: list[list[Any]], as_of: datetime) -> None:
    ledger_for(get_settings()).engagement.mark_fallback_requested([(row[2], row[0]) for row in rows], as_of)


@task(
    name="post-to-exstream",
    retries=3,
    retry_delay_seconds=10,
    retry_condition_fn=retry_if_it_can_succeed,
    cache_policy=NO_CACHE,
)
def post_rows(
    exstream: ExstreamConnection, channel: str, run_key: str, header: list[str], rows: list[list[Any]]
) -> dict[str, Any]:
    return post_driver_file(exstream, channel, run_key, header, rows)


@task(name="lifecycle-funnel", cache_policy=NO_CACHE)
def lifecycle_funnel() -> list[dict[str, Any]]:
    """Documents that reached at least each step, per use case, job and document type, with each step's share."""
    return funnel_table(ledger_for(get_settings()).engagement.step_counts())
