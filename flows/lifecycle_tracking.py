"""Use case 8 — document lifecycle: engagement folded into each document's status, reported back to Exstream."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow

from exstream_push.blocks import ExstreamConnection, exstream_connection
from exstream_push.settings import get_settings
from exstream_push.tasks.summary import post_back_line, publish_summary
from exstream_push.usecases.lifecycle_tracking.config import (
    FALLBACK_HEADER,
    STATUS_HEADER,
    USE_CASE,
)
from exstream_push.usecases.lifecycle_tracking.rules import funnel_display
from exstream_push.usecases.lifecycle_tracking.tasks import (
    advance_engagement_watermark,
    engagement_window,
    find_unopened_documents,
    fold_engagement,
    lifecycle_funnel,
    mark_fallback_requested,
    post_rows,
    record_engagement,
)
from exstream_push.zones import run_moment


@flow(name=USE_CASE, persist_result=False)
def lifecycle_tracking(
    as_of: datetime | None = None,
    exstream_block: ExstreamConnection | None = None,
) -> dict[str, Any]:
    """Status changes since the last run go back to Exstream once; unopened documents get one fallback request.

    Args:
        as_of: The moment decisions are taken at, with its zone; empty: now.
        exstream_block: A saved Exstream connection; empty: the worker's EXSTREAM_PUSH_EXSTREAM_* settings.
    """
    as_of = run_moment(as_of)
    settings = get_settings()
    exstream = exstream_connection(exstream_block)
    run_key = f"{USE_CASE}:{as_of.isoformat()}"

    window = engagement_window()
    changes = fold_engagement(window.received_after, as_of)
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
    advance_engagement_watermark(window, as_of)
    publish_summary(
        USE_CASE,
        f"{USE_CASE} · as of {as_of.isoformat(timespec='minutes')}",
        {"status_changes": len(changes), "fallbacks_requested": len(unopened)},
        lines=[post_back_line("Document status", status_post), post_back_line("Fallback requests", fallback_post)],
        tables={"Lifecycle funnel per job and document type": funnel_display(lifecycle_funnel())},
    )
    return {
        "status_changes": len(changes),
        "fallbacks_requested": len(unopened),
        "status_post": status_post,
        "fallback_post": fallback_post,
    }
