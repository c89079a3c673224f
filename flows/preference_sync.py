"""Use case 6 — preference and channel sync: push-side opt-ins and devices → Exstream's channel selection."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow

from exstream_push.blocks import exstream_connection
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
    exstream_block: str | None = None,
    fcm_block: str | None = None,
    apns_block: str | None = None,
    webpush_block: str | None = None,
) -> dict[str, Any]:
    """Everything that changed since the last sync, one row per customer with the latest state; nothing → no post.

    ``fcm_block``, ``apns_block`` and ``webpush_block`` are accepted so every deployment takes the same connection
    parameters; this flow sends no push.
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
    return {"customers": len(rows), "since": since_value, "until": latest.isoformat() if latest else since_value,
            "post": posted}  # fmt: skip
