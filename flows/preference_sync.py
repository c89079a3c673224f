"""Use case 6 — preference and channel sync: push-side opt-ins and devices → Exstream's channel selection."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow

from exstream_push.blocks import ExstreamConnection, exstream_connection
from exstream_push.tasks.summary import post_back_line, publish_summary
from exstream_push.usecases.preference_sync.config import USE_CASE
from exstream_push.usecases.preference_sync.tasks import (
    advance_sync_watermark,
    collect_preference_changes,
    post_preferences,
    read_sync_watermark,
)
from exstream_push.zones import run_moment


@flow(name=USE_CASE, persist_result=False)
def preference_sync(
    as_of: datetime | None = None,
    exstream_block: ExstreamConnection | None = None,
) -> dict[str, Any]:
    """Everything that changed since the last sync, one row per customer with the latest state; nothing → no post.

    Args:
        as_of: The moment decisions are taken at, with its zone; empty: now.
        exstream_block: A saved Exstream connection; empty: the worker's EXSTREAM_PUSH_EXSTREAM_* settings.
    """
    as_of = run_moment(as_of)
    exstream = exstream_connection(exstream_block)
    since = read_sync_watermark()
    since_value = since.isoformat() if since else None
    rows, latest = collect_preference_changes(since, as_of)
    posted: dict[str, Any] = {"rows": 0, "posted": False}
    if rows and latest is not None:
        window = f"{USE_CASE}:{since_value or 'start'}..{latest.isoformat()}"
        posted = post_preferences(exstream, window, rows)
        advance_sync_watermark(latest, as_of)
    publish_summary(
        USE_CASE,
        f"{USE_CASE} · changes since {since_value or 'the start'}",
        {"customers": len(rows)},
        lines=[post_back_line("Channel preferences", posted)],
    )
    return {"customers": len(rows), "since": since_value, "until": latest.isoformat() if latest else since_value,
            "post": posted}  # fmt: skip
