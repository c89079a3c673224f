"""Tracking events the ingress stored → delivery-exceptions: each read once, its failure recorded, then marked
processed. A crash between the record and the mark reads the batch again, and records nothing twice (records are
keyed by document)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from exstream_push.retrying import retry_if_it_can_succeed
from exstream_push.runtime import ledger_for
from exstream_push.settings import ManifestKeys, get_settings
from exstream_push.usecases.delivery_exceptions.config import DeliveryExceptionsConfig, load_config
from exstream_push.usecases.delivery_exceptions.rules import TrackingEventError, exception_from_event

BATCH = 2_000


def failures_in(
    payloads: Iterable[str], config: DeliveryExceptionsConfig, keys: ManifestKeys, as_of: datetime
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """The exception records (one per document) of stored events, and how many were read, failed, ignored or
    malformed; the same counts as a tracking-event file's."""
    counts: Counter[str] = Counter(events_read=0, events_failed=0, events_ignored=0, events_malformed=0)
    records: dict[str, dict[str, Any]] = {}
    for payload in payloads:
        counts["events_read"] += 1
        try:
            row = exception_from_event(json.loads(payload), config, keys, as_of)
        except (TrackingEventError, json.JSONDecodeError):
            counts["events_malformed"] += 1
            continue
        if row is None:
            counts["events_ignored"] += 1
            continue
        counts["events_failed"] += 1
        records.setdefault(row["dedup_key"], row)
    return list(records.values()), counts


@task(
    name="collect-stored-tracking-failures",
    retries=1,
    retry_condition_fn=retry_if_it_can_succeed,
    cache_policy=NO_CACHE,
)
def collect_stored_tracking_failures(as_of: datetime) -> dict[str, int]:
    """Record the failures among the tracking events no run has read yet, and mark them read."""
    settings = get_settings()
    config = load_config(settings)
    ledger = ledger_for(settings)
    totals: Counter[str] = Counter(exceptions_new=0)
    while batch := ledger.outbox.unprocessed_tracking_events(BATCH):
        records, counts = failures_in((payload for _, payload in batch), config, settings.keys, as_of)
        totals.update(counts)
        totals["exceptions_new"] += ledger.exceptions.record(records)
        ledger.outbox.mark_tracking_events_processed([event_id for event_id, _ in batch])
    if totals["events_read"]:
        get_run_logger().info("stored tracking events: %s", dict(totals))
    return dict(totals)
