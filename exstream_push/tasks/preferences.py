"""Preference sync: what changed in opt-ins, devices and stated preferences → one row per customer for Exstream.

Exstream decides the channel of the next communication from it. The rule, in order: **push** when the customer is
opted in and has an active device; else the **stated preference** (the ``default`` entry of the customer's
preferred channels, else any stated one); else **print**.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import select

from exstream_push.ledger import Device, Ledger, Preference
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings

PREFERENCE_HEADER = ["customer_id", "push_enabled", "active_devices", "preferred_channel", "categories", "updated_at"]
CHANNELS = ("push", "email", "print", "web", "sms")


def decide_channel(push_enabled: bool, active_devices: int, stated: dict[str, str]) -> str:
    if push_enabled and active_devices > 0:
        return "push"
    if stated.get("default") in CHANNELS:
        return stated["default"]
    for channel in stated.values():
        if channel in CHANNELS:
            return channel
    return "print"


def changed_customers(ledger: Ledger, since: datetime | None, until: datetime) -> tuple[list[str], datetime | None]:
    """Customers with a device or preference change in (since, until], and the latest change time seen.

    The latest change time, not the run's as_of, becomes the next watermark: changes are stamped when they are
    written, so a run acting at a later as_of must not hide the ones written after it read.
    """
    latest: datetime | None = None
    customers: set[str] = set()
    with ledger.engine.connect() as conn:
        for model in (Device, Preference):
            condition = model.updated_at <= until
            if since is not None:
                condition &= model.updated_at > since
            for customer_id, updated_at in conn.execute(select(model.customer_id, model.updated_at).where(condition)):
                customers.add(customer_id)
                latest = updated_at if latest is None else max(latest, updated_at)
    return sorted(customers), latest


def preference_rows(ledger: Ledger, customers: list[str]) -> Iterator[list[Any]]:
    """The latest state of each customer, once; devices are folded per customer with pandas."""
    for start in range(0, len(customers), 2_000):
        chunk = customers[start : start + 2_000]
        devices = ledger.devices_for(chunk)
        with ledger.engine.connect() as conn:
            stated = {
                row.customer_id: row
                for row in conn.execute(select(Preference.__table__).where(Preference.customer_id.in_(chunk)))
            }
        active = devices[devices["active"].astype(bool)]
        per_customer = active.groupby("customer_id").agg(
            active_devices=("device_id", "count"),
            any_opted_in=("push_opt_in", "max"),
            categories=("categories", lambda c: ";".join(sorted({x for v in c for x in v.split(";") if x}))),
        )
        latest_device = devices.groupby("customer_id")["updated_at"].max()
        for customer_id in chunk:
            preference = stated.get(customer_id)
            count = int(per_customer.at[customer_id, "active_devices"]) if customer_id in per_customer.index else 0
            device_opt_in = bool(per_customer.at[customer_id, "any_opted_in"]) if count else False
            push_enabled = device_opt_in if preference is None or preference.push_opt_in is None else (
                bool(preference.push_opt_in) and device_opt_in
            )  # fmt: skip
            categories = (
                preference.categories
                if preference is not None and preference.categories is not None
                else (per_customer.at[customer_id, "categories"] if count else "")
            )
            channels = json.loads(preference.preferred_channels) if preference and preference.preferred_channels else {}
            moments = [m for m in (latest_device.get(customer_id), preference and preference.updated_at) if m]
            updated_at = max(pd.Timestamp(m).to_pydatetime() for m in moments)
            yield [
                customer_id,
                "true" if push_enabled else "false",
                count,
                decide_channel(push_enabled, count, channels),
                categories,
                updated_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
            ]


@task(name="collect-preference-changes", cache_policy=NO_CACHE)
def collect_preference_changes(since: datetime | None, until: datetime) -> tuple[list[list[Any]], datetime | None]:
    """The rows to post and the watermark to keep once they are posted."""
    ledger = ledger_for(get_settings())
    customers, latest = changed_customers(ledger, since, until)
    return list(preference_rows(ledger, customers)), latest
