"""Delivery exceptions: failures found in Exstream → exception records → one operations push per (job, channel,
failure class). Each task carries a whole file or a whole job, written to the ledger in chunks of thousands."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from sqlalchemy import select

from exstream_push.blocks.exstream import ExstreamConnection
from exstream_push.connectors.exstream import ExstreamJob
from exstream_push.connectors.fcm import build_message
from exstream_push.exceptions import (
    USE_CASE,
    TrackingEventError,
    document_exception_count,
    exception_from_event,
    exception_from_message,
    job_failure,
    load_config,
    mark_alerted,
    record_exceptions,
    unalerted_exceptions,
)
from exstream_push.ledger import Notification
from exstream_push.ledger.store import notification_key
from exstream_push.message_file import EngineMessage, read_message_file
from exstream_push.retrying import retry_if_it_can_succeed
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push.status import Status
from exstream_push.tasks.summary import artifact_key

ERROR_STATUS = "error"
OPERATIONS = "operations"  # the customer_id of an operations push in the notification ledger
CHUNK = 5_000
MAX_TYPES_SHOWN = 3


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
                counts["exceptions_new"] += record_exceptions(ledger, list(pending.values()))
                pending.clear()
    counts["exceptions_new"] += record_exceptions(ledger, list(pending.values()))
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
    spool = settings.home / "spool" / USE_CASE / job.id
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
                        counts["exceptions_new"] += record_exceptions(ledger, list(pending.values()))
                        pending.clear()
        counts["exceptions_new"] += record_exceptions(ledger, list(pending.values()))
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    if job.status == ERROR_STATUS and document_exception_count(ledger, job.id) == 0:
        counts["jobs_failed_whole"] += 1
        counts["exceptions_new"] += record_exceptions(
            ledger, [job_failure(job.id, config, ended_at, as_of, job.msg, unattributed)]
        )
    counts["error_lines_without_document"] = len(unattributed)
    get_run_logger().info("job %s (%s): %s", job.id, job.status, dict(counts))
    return dict(counts)


@dataclass
class OperationsAlerts:
    """Pushes for send-push (one row per (job, channel, failure class)) and the records each one covers."""

    messages: pd.DataFrame
    covered: dict[str, list[str]] = field(default_factory=dict)


def _document_types(types: pd.Series) -> str:
    counted = Counter(types.fillna("untyped").tolist()).most_common()
    counted.sort(key=lambda item: (-item[1], item[0]))
    shown = [f"{name} ×{count:,}" for name, count in counted[:MAX_TYPES_SHOWN]]
    rest = sum(count for _, count in counted[MAX_TYPES_SHOWN:])
    return ", ".join(shown) + (f", others ×{rest:,}" if rest else "")


@task(name="build-operations-alerts", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def build_operations_alerts() -> OperationsAlerts:
    """One topic push per (job, channel, failure class) that has records no push covered yet.

    Its idempotency key includes the triple's total, so a re-run sends nothing while more failures arriving later
    send one update carrying the new total; the collapse key stays the triple's, so it replaces the earlier
    notice on the operations devices.
    """
    settings = get_settings()
    config = load_config(settings)
    records = unalerted_exceptions(ledger_for(settings))
    environment = Environment(
        loader=FileSystemLoader(str(settings.templates_dir)), undefined=StrictUndefined, autoescape=False
    )
    environment.filters["thousands"] = lambda number: f"{number:,}"
    template = environment.get_template(f"{USE_CASE}/alert.en.j2")
    device_id = f"topic:{config.operations_topic}"
    rows, covered = [], {}
    for (job_id, channel, failure_class), group in records.groupby(["job_id", "channel", "failure_class"], sort=True):
        new = group[group["alert_key"].isna()]
        references = new["customer_ref"].dropna()
        subject = f"{job_id}/{channel}/{failure_class}"
        stage = f"documents:{len(group)}"
        key = notification_key(USE_CASE, subject, device_id, stage)
        variables = {
            "job_id": job_id,
            "channel": channel,
            "failure_label": str(failure_class).replace("_", " ").capitalize(),
            "documents": len(group),
            "new_documents": len(new),
            "document_types": _document_types(group["document_type"]),
            "customer_ref": references.iloc[0] if len(references) else None,
            "others": len(new) - 1 if len(references) else 0,
            "next_action": str(new["next_action"].iloc[-1]).rstrip("."),
        }
        context = template.new_context(variables)
        title = "".join(template.blocks["title"](context)).strip()
        body = "".join(template.blocks["body"](context)).strip()
        data = {
            "use_case": USE_CASE,
            "job_id": str(job_id),
            "channel": str(channel),
            "failure_class": str(failure_class),
            "documents": str(len(group)),
            "new_documents": str(len(new)),
            "customer_ref": variables["customer_ref"] or "",
            "next_action": variables["next_action"],
        }
        message = build_message(
            topic=config.operations_topic,
            title=title,
            body=body,
            data=data,
            collapse_key=notification_key(USE_CASE, subject, device_id),
            priority="high",
        )
        rows.append(
            {
                "key": key,
                "document_id": subject,
                "job_id": job_id,
                "customer_id": OPERATIONS,
                "device_id": device_id,
                "stage": stage,
                "payload": message,
                "channel": channel,
                "failure_class": failure_class,
                "documents": len(group),
                "new_documents": len(new),
            }
        )
        covered[key] = new["dedup_key"].tolist()
    return OperationsAlerts(messages=pd.DataFrame(rows), covered=covered)


@task(name="mark-alerted-exceptions", retries=2, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def mark_alerted_exceptions(alerts: OperationsAlerts) -> dict[str, int]:
    """Tie each record to the push that covered it, once that push is sent; the others stay owed to the next run."""
    ledger = ledger_for(get_settings())
    keys = list(alerts.covered)
    with ledger.engine.connect() as conn:
        found = conn.execute(select(Notification.key, Notification.status).where(Notification.key.in_(keys)))
        statuses: dict[str, str] = {key: status for key, status in found}
    counts: Counter[str] = Counter(alerts=len(keys), alerts_sent=0, alerts_unsent=0, exceptions_alerted=0)
    for key in keys:
        if statuses.get(key) == Status.SENT:
            counts["alerts_sent"] += 1
            counts["exceptions_alerted"] += mark_alerted(ledger, key, alerts.covered[key])
        else:
            counts["alerts_unsent"] += 1
    logger = get_run_logger()
    if counts["alerts_unsent"]:
        logger.warning("%d operations push(es) not sent; their exceptions stay owed to the next run",
                       counts["alerts_unsent"])  # fmt: skip
    if keys:
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
        create_table_artifact(
            key=artifact_key(USE_CASE, "alerts"), table=table, description="Operations pushes of this run"
        )
    return dict(counts)
