"""Use case 8 — document lifecycle: engagement folded into each document's status, reported back to Exstream."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact

from exstream_push.blocks import exstream_connection
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push.tasks.summary import artifact_key
from exstream_push.usecases.lifecycle_tracking.config import (
    FALLBACK_HEADER,
    STATUS_HEADER,
    USE_CASE,
)
from exstream_push.usecases.lifecycle_tracking.tasks import (
    find_unopened_documents,
    fold_engagement,
    funnel,
    latest_event_received,
    mark_fallback_requested,
    post_rows,
    record_engagement,
)
from exstream_push.zones import run_moment


@flow(name=USE_CASE, persist_result=False)
def lifecycle_tracking(
    as_of: datetime | None = None, exstream_block: str | None = None, fcm_block: str | None = None
) -> dict[str, Any]:
    """Status changes since the last run go back to Exstream once; unopened documents get one fallback request."""
    as_of = run_moment(as_of)
    settings = get_settings()
    ledger = ledger_for(settings)
    exstream = exstream_connection(exstream_block)
    since_value = ledger.read_watermark(USE_CASE)
    run_key = f"{USE_CASE}:{as_of.isoformat()}"

    received_until = latest_event_received(ledger)
    changes = fold_engagement(datetime.fromisoformat(since_value) if since_value else None, as_of)
    status_post = (
        post_rows(exstream, settings.channels.document_status, run_key, STATUS_HEADER, changes) if changes else None
    )
    if changes:
        record_engagement(changes)
    unopened = find_unopened_documents(as_of, settings.fallback_after)
    fallback_post = (
        post_rows(exstream, settings.channels.fallback_delivery, run_key, FALLBACK_HEADER, unopened)
        if unopened
        else None
    )
    if unopened:
        mark_fallback_requested(unopened, as_of)
    if received_until is not None:
        ledger.write_watermark(USE_CASE, received_until.isoformat(), as_of)

    table = funnel(ledger)
    if table:
        create_table_artifact(
            key=artifact_key(USE_CASE, "funnel"), table=table, description="documents reaching each lifecycle step"
        )
    return {
        "status_changes": len(changes),
        "fallbacks_requested": len(unopened),
        "status_post": status_post,
        "fallback_post": fallback_post,
    }
