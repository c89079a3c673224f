"""Use case 3 — a policy or contract changed: push until acknowledged, then Exstream writes a formal letter."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow

from exstream_push.blocks import ApnsConnection, ExstreamConnection, FcmConnection, WebPushConnection
from exstream_push.flows.follow_up import run_follow_up
from exstream_push.status import UseCase
from exstream_push.usecases.follow_up.tasks import follow_up_run_name

USE_CASE = UseCase.POLICY_CHANGE.value


@flow(name=USE_CASE, flow_run_name=follow_up_run_name(USE_CASE), persist_result=False)
def policy_change(
    manifest: str | None = None,
    job_id: str | None = None,
    events: str | None = None,
    as_of: datetime | None = None,
    exstream_block: ExstreamConnection | None = None,
    fcm_block: FcmConnection | None = None,
    apns_block: ApnsConnection | None = None,
    webpush_block: WebPushConnection | None = None,
) -> dict[str, Any]:
    """Register new documents, take in acknowledgements, then notify, remind or escalate every open document.

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
    return run_follow_up(
        USE_CASE, manifest, job_id, events, as_of, exstream_block, fcm_block, apns_block, webpush_block
    )
