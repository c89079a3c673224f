"""Use case 4 — delivery exceptions: failed Exstream jobs, message-file errors and failure tracking events →
exception records → one push to operations per (job, channel, failure class) with the next action."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from prefect import flow

from exstream_push.blocks import ApnsConnection, ExstreamConnection, FcmConnection, WebPushConnection, connections
from exstream_push.runtime import typed_name_or
from exstream_push.status import UseCase
from exstream_push.tasks.send import send_push
from exstream_push.tasks.summary import publish_summary
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


def _run_name(parameters: dict[str, Any]) -> str:
    return f"{USE_CASE}-{parameters.get('job_id') or 'poll'}"


@flow(name=USE_CASE, flow_run_name=typed_name_or(_run_name), persist_result=False)
def delivery_exceptions(
    job_id: str | None = None,
    events: str | None = None,
    as_of: datetime | None = None,
    exstream_block: ExstreamConnection | None = None,
    fcm_block: FcmConnection | None = None,
    apns_block: ApnsConnection | None = None,
    webpush_block: WebPushConnection | None = None,
) -> dict[str, Any]:
    """Record every failed document once and tell operations what to do, one push per failure group.

    Without ``job_id`` it takes the failed jobs the exstream-watcher recorded and no run has handled yet; the
    tracking events the ingress stored are read once each, and ``events`` is a JSON Lines file of more. Events go
    first, so a failed job whose documents they name is not taken for a job that failed as a whole.

    Args:
        job_id: One failed Exstream job to take in; empty: every failed job the watcher recorded and no run handled.
        events: Path of a JSON Lines file of Exstream tracking events (undeliverable e-mail, failed print) to add.
        as_of: The moment decisions are taken at, with its zone; empty: now.
        exstream_block: A saved Exstream connection; empty: the worker's EXSTREAM_PUSH_EXSTREAM_* settings.
        fcm_block: A saved FCM connection; empty: the worker's EXSTREAM_PUSH_FCM_* settings.
        apns_block: A saved APNs connection; empty: the worker's APNs settings, if any.
        webpush_block: A saved Web Push connection; empty: the worker's VAPID settings, if any.
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
    counts, pushes = mark_alerted_exceptions(alerts)
    totals.update(counts)
    publish_summary(
        USE_CASE,
        f"{USE_CASE} · {job_id or 'poll'} · {len(jobs)} failed job(s)",
        totals,
        tables={"Operations pushes": pushes},
    )
    return {"as_of": as_of.isoformat(), "jobs": [job.id for job in jobs], **totals}
