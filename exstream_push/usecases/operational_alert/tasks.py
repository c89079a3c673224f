"""The operational-alert tasks: read and write through ``ledger.alerts``, decide by the pure rules of
``exstream_push.usecases.operational_alert.rules``; the push itself goes through the statement-ready tasks."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from exstream_push.blocks.exstream import ExstreamConnection
from exstream_push.content.links import document_ref
from exstream_push.ledger import Ledger
from exstream_push.retrying import retry_if_it_can_succeed
from exstream_push.runtime import ledger_for
from exstream_push.settings import Settings, get_settings
from exstream_push.status import OpsAlertState
from exstream_push.tasks.post_back import post_driver_file
from exstream_push.usecases.operational_alert.config import (
    FOLLOW_UP_HEADER,
    SEGMENTS_FILE,
    USE_CASE,
    SegmentError,
    load_segments,
)
from exstream_push.usecases.operational_alert.rules import (
    Alert,
    alert_of,
    audience_frame,
    customer_lines,
    follow_up_rows,
    report,
    unique,
)


def segment_customers(ledger: Ledger, settings: Settings, name: str) -> Iterator[str]:
    """Each customer of a segment once, streamed: a segment may hold millions."""
    segment = load_segments(settings).get(name)
    if segment is None:
        raise SegmentError(f"no segment named {name!r} in {settings.config_dir / SEGMENTS_FILE}")
    if segment.customer_ids is not None:
        yield from sorted(set(segment.customer_ids))
    elif segment.file is not None:
        with (settings.config_dir / segment.file).open(encoding="utf-8") as handle:
            yield from unique(customer_lines(handle))
    elif segment.devices is not None:
        yield from ledger.alerts.device_customers(segment.devices.model_dump(exclude_none=True))


def read_alert(ledger: Ledger, alert_id: str) -> Alert:
    row = ledger.alerts.read(alert_id)
    if row is None:
        raise LookupError(f"no operational alert {alert_id!r} in the ledger (the ingress stores them)")
    return alert_of(row)


def mark_alert(ledger: Ledger, alert_id: str, state: OpsAlertState, **moments: datetime | None) -> None:
    """Move the alert on (``pushed_at`` or ``follow_up_posted_at`` with it), so a re-run skips what is done."""
    ledger.alerts.mark(alert_id, state.value, **moments)


def alert_spool(settings: Settings, alert_id: str) -> Path:
    return settings.spool_dir(USE_CASE, alert_id)


@task(name="spool-alert-audience", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def spool_alert_audience(alert: Alert) -> list[Path]:
    """The affected customers as document-like Parquet batches, so memory stays flat for a segment of millions."""
    settings = get_settings()
    ledger = ledger_for(settings)
    out_dir = alert_spool(settings, alert.alert_id)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    if "customer_ids" in alert.audience:
        customers: Iterable[str] = alert.audience["customer_ids"]
    else:
        customers = segment_customers(ledger, settings, alert.audience["segment"])
    ref = document_ref(settings.link_key, USE_CASE, f"alert:{alert.alert_id}")
    batches: list[Path] = []
    chunk: list[str] = []
    for customer_id in customers:
        chunk.append(customer_id)
        if len(chunk) == settings.batch_size:
            batches.append(_write_batch(out_dir, len(batches) + 1, alert, chunk, ref))
            chunk = []
    if chunk:
        batches.append(_write_batch(out_dir, len(batches) + 1, alert, chunk, ref))
    get_run_logger().info("alert %s: %d batch(es) of affected customers", alert.alert_id, len(batches))
    return batches


def _write_batch(out_dir: Path, number: int, alert: Alert, customer_ids: list[str], ref: str) -> Path:
    path = out_dir / f"batch-{number:06d}.parquet"
    pq.write_table(pa.Table.from_pandas(audience_frame(alert, customer_ids, ref), preserve_index=False), path)
    return path


@task(
    name="request-alert-follow-up",
    retries=3,
    retry_delay_seconds=10,
    retry_condition_fn=retry_if_it_can_succeed,
    cache_policy=NO_CACHE,
)
def request_follow_up(alert: Alert, exstream: ExstreamConnection, as_of: datetime) -> dict[str, Any]:
    """One batch-input POST to ``ops-follow-up`` listing the affected customers; never posted twice.

    The post-back record (channel, alert id, digest) is the link to the push; the alert is marked afterwards, so a
    crash in between only leads a re-run to find the file already posted.
    """
    ledger = ledger_for(get_settings())
    rows = follow_up_rows(alert, ledger.alerts.customer_outcomes(USE_CASE, alert.alert_id), as_of)
    channel = get_settings().channels.ops_follow_up
    summary = post_driver_file(exstream, channel, alert.alert_id, FOLLOW_UP_HEADER, rows)
    ledger.alerts.mark_follow_up_requested(USE_CASE, alert.alert_id, channel, as_of if summary["rows"] else None)
    return summary


def alert_report(ledger: Ledger, alert_id: str) -> dict[str, Any]:
    """The push and the formal follow-up of one alert, side by side: what operations and auditors ask for."""
    found = ledger.alerts.report(USE_CASE, get_settings().channels.ops_follow_up, alert_id)
    if found is None:
        raise LookupError(f"no operational alert {alert_id!r} in the ledger")
    alert, counts, posts = found
    return report(
        alert, counts, posts, ledger.job_reason_counts(USE_CASE, alert_id), get_settings().channels.ops_follow_up
    )
