"""Delivery exceptions' tasks: failures found in Exstream → exception records → one operations push per (job,
channel, failure class). Each task carries a whole file or a whole job, decides by the pure rules of
``exstream_push.usecases.delivery_exceptions.rules`` and writes through ``ledger.exceptions`` in chunks of
thousands."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from exstream_push.blocks.exstream import ExstreamConnection
from exstream_push.connectors.exstream import ExstreamJob
from exstream_push.message_file import EngineMessage, read_message_file
from exstream_push.retrying import retry_if_it_can_succeed
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push.status import JobStatus, Status
from exstream_push.usecases.delivery_exceptions.config import USE_CASE, load_config
from exstream_push.usecases.delivery_exceptions.rules import (
    OperationsAlerts,
    TrackingEventError,
    exception_from_event,
    exception_from_message,
    job_failure,
    operations_alerts,
)

ERROR_STATUS = JobStatus.ERROR
CHUNK = 5_000


@task(name="collect-tracking-failures", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def collect_tracking_failures(events: str, as_of: datetime) -> dict[str, int]:
    """Read a JSON Lines file of tracking events; record each failure event's document once.

    Other events are counted and left; a line that is not an event is counted by line number, never quoted (it
    may hold personal data).
    """
    settings = get_settings()
    config = load_config(settings)
    ledger = ledger_for(settings)
    logger = get_run_logger()
    counts: Counter[str] = Counter(events_read=0, events_failed=0, events_ignored=0, events_malformed=0)
    malformed_lines: list[int] = []
    pending: dict[str, dict[str, Any]] = {}
    with Path(events).open(encoding="utf-8", errors="replace") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                parsed = json.loads(line)
            except json.JSONDecodeError:
                parsed = None
            for event in parsed if isinstance(parsed, list) else [parsed]:
                counts["events_read"] += 1
                try:
                    row = exception_from_event(event, config, settings.keys, as_of)
                except TrackingEventError:
                    counts["events_malformed"] += 1
                    malformed_lines.append(line_number)
                    continue
                if row is None:
                    counts["events_ignored"] += 1
                    continue
                counts["events_failed"] += 1
                pending.setdefault(row["dedup_key"], row)
            if len(pending) >= CHUNK:
                counts["exceptions_new"] += ledger.exceptions.record(list(pending.values()))
                pending.clear()
    counts["exceptions_new"] += ledger.exceptions.record(list(pending.values()))
    if malformed_lines:
        logger.warning("%d line(s) of %s are not tracking events, first at lines %s", len(malformed_lines), events,
                       malformed_lines[:10])  # fmt: skip
    logger.info("tracking events: %s", dict(counts))
    return dict(counts)


@task(
    name="collect-job-failures",
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=retry_if_it_can_succeed,
    cache_policy=NO_CACHE,
)
def collect_job_failures(job: ExstreamJob, exstream: ExstreamConnection, as_of: datetime) -> dict[str, int]:
    """Record the failed documents named by ERROR/SEVERE lines of the job's message files; a job in status error
    with no failed document known (from any source) gets one job-level record instead."""
    settings = get_settings()
    config = load_config(settings)
    ledger = ledger_for(settings)
    spool = settings.spool_dir(USE_CASE, job.id)
    spool.mkdir(parents=True, exist_ok=True)
    ended_at = job.end_date or as_of
    counts: Counter[str] = Counter(error_lines=0, exceptions_new=0)
    unattributed: list[EngineMessage] = []
    pending: dict[str, dict[str, Any]] = {}
    try:
        with exstream.get_client() as client:
            steps = [step for step in client.flow_steps(job.id) if step.message_file_retrievable]
            for step in steps:
                path = client.download_message_file(step.id, spool / f"{step.id}.dat")
                for message in read_message_file(path):
                    if not message.is_error:
                        continue
                    counts["error_lines"] += 1
                    row = exception_from_message(message, job.id, step.id, config, ended_at, as_of)
                    if row is None:
                        unattributed.append(message)
                        continue
                    pending.setdefault(row["dedup_key"], row)
                    if len(pending) >= CHUNK:
                        counts["exceptions_new"] += ledger.exceptions.record(list(pending.values()))
                        pending.clear()
        counts["exceptions_new"] += ledger.exceptions.record(list(pending.values()))
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    if job.status == ERROR_STATUS and ledger.exceptions.document_count(job.id) == 0:
        counts["jobs_failed_whole"] += 1
        failure = job_failure(job.id, config, ended_at, as_of, job.msg, unattributed)
        counts["exceptions_new"] += ledger.exceptions.record([failure])
    counts["error_lines_without_document"] = len(unattributed)
    get_run_logger().info("job %s (%s): %s", job.id, job.status, dict(counts))
    return dict(counts)


@task(name="build-operations-alerts", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def build_operations_alerts() -> OperationsAlerts:
    """One topic push per (job, channel, failure class) that has records no push covered yet (``rules``)."""
    settings = get_settings()
    config = load_config(settings)
    records = ledger_for(settings).exceptions.unalerted()
    environment = Environment(
        loader=FileSystemLoader(str(settings.templates_dir)), undefined=StrictUndefined, autoescape=False
    )
    environment.filters["thousands"] = lambda number: f"{number:,}"
    template = environment.get_template(f"{USE_CASE}/alert.en.j2")
    return operations_alerts(records, template, config.operations_topic)


@task(name="mark-alerted-exceptions", retries=2, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def mark_alerted_exceptions(alerts: OperationsAlerts) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Tie each record to the push that covered it, once that push is sent; the others stay owed to the next run.

    Returns the counts, and one row per push (job, channel, failure class, documents, its status) for the
    run's summary."""
    ledger = ledger_for(get_settings())
    keys = list(alerts.covered)
    statuses = ledger.exceptions.notification_statuses(keys)
    counts: Counter[str] = Counter(alerts=len(keys), alerts_sent=0, alerts_unsent=0, exceptions_alerted=0)
    for key in keys:
        if statuses.get(key) == Status.SENT:
            counts["alerts_sent"] += 1
            counts["exceptions_alerted"] += ledger.exceptions.mark_alerted(key, alerts.covered[key])
        else:
            counts["alerts_unsent"] += 1
    logger = get_run_logger()
    if counts["alerts_unsent"]:
        logger.warning("%d operations push(es) not sent; their exceptions stay owed to the next run",
                       counts["alerts_unsent"])  # fmt: skip
    table = [
        {
            "job_id": row.job_id,
            "channel": row.channel,
            "failure_class": row.failure_class,
            "documents": row.documents,
            "new_documents": row.new_documents,
            "push": statuses.get(row.key, Status.PENDING.value),
        }
        for row in alerts.messages.itertuples(index=False)
    ]
    return dict(counts), table
