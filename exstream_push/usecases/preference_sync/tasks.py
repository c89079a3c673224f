"""The preference-sync tasks: read through ``ledger.preferences`` and ``ledger.devices_for``, decide by the pure
rules of ``exstream_push.usecases.preference_sync.rules``, post to Exstream."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from exstream_push.blocks.exstream import ExstreamConnection
from exstream_push.retrying import retry_if_it_can_succeed
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push.tasks.post_back import post_driver_file
from exstream_push.usecases.preference_sync.config import PREFERENCE_HEADER, USE_CASE
from exstream_push.usecases.preference_sync.rules import changed_customers, preference_rows

_CHUNK = 2_000


@task(name="read-sync-watermark", cache_policy=NO_CACHE)
def read_sync_watermark() -> datetime | None:
    """Up to when the last sync read changes; None before the first."""
    mark = ledger_for(get_settings()).read_watermark(USE_CASE)
    return datetime.fromisoformat(mark) if mark else None


@task(name="advance-sync-watermark", cache_policy=NO_CACHE)
def advance_sync_watermark(latest: datetime, as_of: datetime) -> None:
    """Once Exstream has the rows, the next sync starts after the newest change they carry."""
    ledger_for(get_settings()).write_watermark(USE_CASE, latest.isoformat(), as_of)


@task(name="collect-preference-changes", cache_policy=NO_CACHE)
def collect_preference_changes(since: datetime | None, until: datetime) -> tuple[list[list[Any]], datetime | None]:
    """The rows to post and the watermark to keep once they are posted; customers are read 2,000 at a time."""
    ledger = ledger_for(get_settings())
    customers, latest = changed_customers(ledger.preferences.changes(since, until))
    rows: list[list[Any]] = []
    for start in range(0, len(customers), _CHUNK):
        chunk = customers[start : start + _CHUNK]
        rows.extend(preference_rows(chunk, ledger.devices_for(chunk), ledger.preferences.stated(chunk)))
    return rows, latest


@task(
    name="post-preferences-to-exstream",
    retries=3,
    retry_delay_seconds=10,
    retry_condition_fn=retry_if_it_can_succeed,
    cache_policy=NO_CACHE,
)
def post_preferences(exstream: ExstreamConnection, window: str, rows: list[list[Any]]) -> dict[str, Any]:
    return post_driver_file(exstream, get_settings().channels.channel_preferences, window, PREFERENCE_HEADER, rows)
