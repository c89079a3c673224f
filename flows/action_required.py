"""Use case 5 — the customer must act: prompt, remind before the deadline, fall back to print, then expire."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow

from exstream_push.flows.follow_up import run_follow_up
from exstream_push.status import UseCase
from exstream_push.usecases.follow_up.config import load_rules
from exstream_push.usecases.follow_up.tasks import follow_up_run_name, publish_completion_rates

USE_CASE = UseCase.ACTION_REQUIRED.value


def _run_name() -> str:
    return follow_up_run_name(USE_CASE)


@flow(name=USE_CASE, flow_run_name=_run_name, persist_result=False)
def action_required(
    manifest: str | None = None,
    job_id: str | None = None,
    events: str | None = None,
    as_of: datetime | None = None,
    exstream_block: str | None = None,
    fcm_block: str | None = None,
    apns_block: str | None = None,
    webpush_block: str | None = None,
) -> dict[str, Any]:
    """Register new documents, take in completions, then prompt, remind, print or expire every open document."""
    totals = run_follow_up(
        USE_CASE, manifest, job_id, events, as_of, exstream_block, fcm_block, apns_block, webpush_block
    )
    completion = publish_completion_rates(load_rules(USE_CASE), datetime.fromisoformat(totals["as_of"]))
    return {**totals, "completion": completion}
