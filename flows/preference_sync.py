"""Use case 6 — preference and channel sync: push-side opt-ins and devices → Exstream's channel selection."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from exstream_push.blocks import ExstreamConnection, exstream_connection
from exstream_push.retrying import retry_if_it_can_succeed
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push.status import UseCase
from exstream_push.tasks.post_back import post_driver_file
from exstream_push.tasks.preferences import PREFERENCE_HEADER, collect_preference_changes

USE_CASE = UseCase.PREFERENCE_SYNC.value
CHANNEL = "channel-preferences"


@task(
    name="post-preferences-to-exstream",
    retries=3,
    retry_delay_seconds=10,
    retry_condition_fn=retry_if_it_can_succeed,
    cache_policy=NO_CACHE,
)
def post_preferences(exstream: ExstreamConnection, window: str, rows: list[list[Any]]) -> dict[str, Any]:
    return post_driver_file(exstream, CHANNEL, window, PREFERENCE_HEADER, rows)


@flow(name=USE_CASE, persist_result=False)
def preference_sync(
    as_of: datetime | None = None, exstream_block: str | None = None, fcm_block: str | None = None
) -> dict[str, Any]:
    """Everything that changed since the last sync, one row per customer with the latest state; nothing → no post.

    ``fcm_block`` is accepted so every deployment takes the same connection parameters; this flow sends no push.
    """
    as_of = as_of or datetime.now(UTC)
    ledger = ledger_for(get_settings())
    exstream = exstream_connection(exstream_block)
    since_value = ledger.read_watermark(USE_CASE)
    since = datetime.fromisoformat(since_value) if since_value else None
    rows, latest = collect_preference_changes(since, as_of)
    posted: dict[str, Any] = {"rows": 0, "posted": False}
    if rows and latest is not None:
        window = f"{USE_CASE}:{since_value or 'start'}..{latest.isoformat()}"
        posted = post_preferences(exstream, window, rows)
        ledger.write_watermark(USE_CASE, latest.isoformat(), as_of)
    return {"customers": len(rows), "since": since_value, "until": latest.isoformat() if latest else since_value,
            "post": posted}  # fmt: skip
