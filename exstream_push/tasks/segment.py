"""Segment: documents × devices → who may be reached; everyone else is recorded as skipped with the reason."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from exstream_push.ledger.store import notification_key, utcnow
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push.status import SkipReason, Status

RECIPIENT_COLUMNS = ["device_id", "platform", "token", "push_opt_in", "categories", "timezone"]


def category_allowed(categories: pd.Series, category: str) -> pd.Series:
    """Vectorised: an empty category list means every category is allowed."""
    categories = categories.fillna("")
    wrapped = ";" + categories.str.replace(" ", "", regex=False) + ";"
    return (categories == "") | wrapped.str.contains(f";{category};", regex=False)


def skipped_rows(frame: pd.DataFrame, use_case: str, reason: str, device_ids: pd.Series | None = None) -> list[dict]:
    now = utcnow()
    devices = device_ids if device_ids is not None else pd.Series("", index=frame.index)
    return [
        {
            "key": notification_key(use_case, document_id, device_id),
            "use_case": use_case,
            "document_id": document_id,
            "job_id": job_id,
            "customer_id": customer_id,
            "device_id": device_id,
            "status": Status.SKIPPED,
            "reason": reason,
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
        }
        for document_id, job_id, customer_id, device_id in zip(
            frame["document_id"], frame["job_id"], frame["customer_id"], devices, strict=True
        )
    ]


@task(name="segment-recipients", retries=1, cache_policy=NO_CACHE)
def segment_recipients(batch: Path, use_case: str, category: str) -> pd.DataFrame:
    """One row per (document, active device) that may be notified, with an idempotency key.

    Skips, each recorded once: ``no_device`` (no active device), ``opted_out`` (push turned off on that device),
    ``category_opted_out`` (the device opted in to other categories only).
    """
    ledger = ledger_for(get_settings())
    documents = pd.read_parquet(batch)
    devices = ledger.devices_for(documents["customer_id"].unique().tolist())
    devices = devices.loc[devices["active"].astype(bool), ["customer_id", "locale", *RECIPIENT_COLUMNS]]
    devices = devices.rename(columns={"locale": "device_locale"})
    joined = documents.merge(devices, on="customer_id", how="left")

    no_device = joined["device_id"].isna()
    opted_out = ~no_device & ~joined["push_opt_in"].fillna(False).astype(bool)
    category_out = ~no_device & ~opted_out & ~category_allowed(joined["categories"], category)
    skipped = []
    skipped += skipped_rows(joined[no_device], use_case, SkipReason.NO_DEVICE)
    for mask, reason in ((opted_out, SkipReason.OPTED_OUT), (category_out, SkipReason.CATEGORY_OPTED_OUT)):
        skipped += skipped_rows(joined[mask], use_case, reason, joined.loc[mask, "device_id"])
    ledger.record_final(skipped)

    eligible = joined[~(no_device | opted_out | category_out)].copy()
    eligible["key"] = [
        notification_key(use_case, document_id, device_id)
        for document_id, device_id in zip(eligible["document_id"], eligible["device_id"], strict=True)
    ]
    return eligible.reset_index(drop=True)
