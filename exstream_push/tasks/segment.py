"""Segment: documents × devices → who may be reached; everyone else is recorded as skipped with the reason."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from exstream_push.ledger.store import notification_key, notification_rows
from exstream_push.retrying import retry_if_it_can_succeed
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push.status import SkipReason, Status

RECIPIENT_COLUMNS = [
    "device_id",
    "platform",
    "provider",
    "token",
    "webpush_p256dh",
    "webpush_auth",
    "push_opt_in",
    "categories",
    "timezone",
]


def category_allowed(categories: pd.Series, category: str) -> pd.Series:
    """Vectorised: an empty category list means every category is allowed."""
    categories = categories.fillna("")
    wrapped = ";" + categories.str.replace(" ", "", regex=False) + ";"
    return (categories == "") | wrapped.str.contains(f";{category};", regex=False)


@task(name="segment-recipients", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def segment_recipients(
    documents: Path | pd.DataFrame, use_case: str, category: str, as_of: datetime | None = None
) -> pd.DataFrame:
    """One row per (document, active device) that may be notified, with an idempotency key.

    ``documents`` is a spooled Parquet batch or a frame (a reminder run's due documents); a ``stage`` column, when
    present, becomes part of each key. Skips, each recorded once: ``no_device`` (no active device), ``opted_out``
    (push turned off on that device), ``category_opted_out`` (the device opted in to other categories only).
    """
    ledger = ledger_for(get_settings())
    if isinstance(documents, Path):
        documents = pd.read_parquet(documents)
    devices = ledger.devices_for(documents["customer_id"].unique().tolist())
    devices = devices.loc[devices["active"].astype(bool), ["customer_id", "locale", *RECIPIENT_COLUMNS]]
    devices = devices.rename(columns={"locale": "device_locale"})
    joined = documents.merge(devices, on="customer_id", how="left")

    no_device = joined["device_id"].isna()
    opted_out = ~no_device & ~joined["push_opt_in"].fillna(False).astype(bool)
    category_out = ~no_device & ~opted_out & ~category_allowed(joined["categories"], category)
    skipped = []
    for mask, reason in (
        (no_device, SkipReason.NO_DEVICE),
        (opted_out, SkipReason.OPTED_OUT),
        (category_out, SkipReason.CATEGORY_OPTED_OUT),
    ):
        skipped += notification_rows(joined[mask], use_case, Status.SKIPPED, reason=reason, as_of=as_of)
    ledger.record_final(skipped)

    eligible = joined[~(no_device | opted_out | category_out)].copy()
    stages = eligible["stage"].fillna("") if "stage" in eligible else [""] * len(eligible)
    eligible["key"] = [
        notification_key(use_case, document_id, device_id, stage)
        for document_id, device_id, stage in zip(eligible["document_id"], eligible["device_id"], stages, strict=True)
    ]
    return eligible.reset_index(drop=True)
