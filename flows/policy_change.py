"""Use case 3 — a policy or contract changed: push until acknowledged, then Exstream writes a formal letter."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow

from exstream_push.flows.follow_up import run_follow_up
from exstream_push.status import UseCase
from exstream_push.usecases.follow_up.tasks import follow_up_run_name

USE_CASE = UseCase.POLICY_CHANGE.value


def _run_name() -> str:
    return follow_up_run_name(USE_CASE)


@flow(name=USE_CASE, flow_run_name=_run_name, persist_result=False)
def policy_change(
    manifest: str | None = None,
    job_id: str | None = None,
    events: str | None = None,
    as_of: datetime | None = None,
    exstream_block: str | None = None,
    fcm_block: str | None = None,
    apns_block: str | None = None,
    webpush_block: str | None = None,
) -> dict[str, Any]:
    """Register new documents, take in acknowledgements, then notify, remind or escalate every open document."""
    return run_follow_up(
        USE_CASE, manifest, job_id, events, as_of, exstream_block, fcm_block, apns_block, webpush_block
    )
