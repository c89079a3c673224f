"""Use case 4 — delivery exceptions: failed Exstream jobs, message-file errors and failure tracking events →
exception records → one push to operations per (job, channel, failure class) with the next action."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from exstream_push.blocks import connections
from exstream_push.status import UseCase
from exstream_push.tasks.send import send_push
from exstream_push.usecases.delivery_exceptions.tasks import (
    build_operations_alerts,
    collect_job_failures,
    collect_tracking_failures,
    mark_alerted_exceptions,
)
from exstream_push.usecases.job_ends import failed_jobs, mark_job_handled
from exstream_push.usecases.tracking_events import collect_stored_tracking_failures
from exstream_push.zones import run_moment

USE_CASE = UseCase.DELIVERY_EXCEPTIONS.value


def _run_name() -> str:
    return f"{USE_CASE}-{flow_run.parameters.get('job_id') or 'poll'}"


@flow(name=USE_CASE, flow_run_name=_run_name, persist_result=False)
def delivery_exceptions(
    job_id: str | None = None,
    events: str | None = None,
    as_of: datetime | None = None,
    exstream_block: str | None = None,
    fcm_block: str | None = None,
    apns_block: str | None = None,
    webpush_block: str | None = None,
) -> dict[str, Any]:
    """Record every failed document once and tell operations what to do, one push per failure group.

    Without ``job_id`` it takes the failed jobs the exstream-watcher recorded and no run has handled yet; the
    tracking events the ingress stored are read once each, and ``events`` is a JSON Lines file of more. Events go
    first, so a failed job whose documents they name is not taken for a job that failed as a whole.
    """
    as_of = run_moment(as_of)
    exstream, push = connections(exstream_block, fcm_block, apns_block, webpush_block)
    totals: Counter[str] = Counter()
    if events is not None:
        totals.update(collect_tracking_failures(events, as_of))
    totals.update(collect_stored_tracking_failures(as_of))
    jobs = failed_jobs(exstream, as_of, job_id)
    for job in jobs:
        totals.update(collect_job_failures(job, exstream, as_of))
        mark_job_handled(job, as_of)
    alerts = build_operations_alerts()
    if len(alerts.messages):
        send_push(alerts.messages, USE_CASE, push, as_of)
    totals.update(mark_alerted_exceptions(alerts))
    return {"as_of": as_of.isoformat(), "jobs": [job.id for job in jobs], **totals}
