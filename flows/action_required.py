"""Use case 5 — the customer must act: prompt, remind before the deadline, fall back to print, then expire."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow

from exstream_push.blocks import ApnsConnection, ExstreamConnection, FcmConnection, WebPushConnection
from exstream_push.flows.follow_up import run_follow_up
from exstream_push.status import UseCase
from exstream_push.usecases.follow_up.config import load_rules
from exstream_push.usecases.follow_up.tasks import follow_up_run_name, publish_completion_rates

USE_CASE = UseCase.ACTION_REQUIRED.value


@flow(name=USE_CASE, flow_run_name=follow_up_run_name(USE_CASE), persist_result=False)
def action_required(
    manifest: str | None = None,
    job_id: str | None = None,
    events: str | None = None,
    as_of: datetime | None = None,
    exstream_block: ExstreamConnection | None = None,
    fcm_block: FcmConnection | None = None,
    apns_block: ApnsConnection | None = None,
    webpush_block: WebPushConnection | None = None,
) -> dict[str, Any]:
    """Register new documents, take in completions, then prompt, remind, print or expire every open document.

    Args:
        manifest: Path of an Exstream manifest file on the worker that registers new documents (optional).
        job_id: An Exstream job whose delivery file registers new documents, or the label of the manifest given
            (optional; with neither, the run works on the documents already registered).
        events: Path of a JSON Lines file of engagement events (acknowledgements, completions) to take in first.
        as_of: The moment decisions are taken at, with its zone; empty: now.
        exstream_block: A saved Exstream connection; empty: the worker's EXSTREAM_PUSH_EXSTREAM_* settings.
        fcm_block: A saved FCM connection; empty: the worker's EXSTREAM_PUSH_FCM_* settings.
        apns_block: A saved APNs connection; empty: the worker's APNs settings, if any.
        webpush_block: A saved Web Push connection; empty: the worker's VAPID settings, if any.
    """
    totals = run_follow_up(
        USE_CASE, manifest, job_id, events, as_of, exstream_block, fcm_block, apns_block, webpush_block
    )
    completion = publish_completion_rates(load_rules(USE_CASE), datetime.fromisoformat(totals["as_of"]))
    return {**totals, "completion": completion}
