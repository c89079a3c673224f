"""Preference sync's rules as pure functions: the channel decision and one row per customer from frames.

The channel rule, in order: **push** when the customer is opted in and has an active device; else the **stated
preference** (the ``default`` entry of the customer's preferred channels, else any stated one); else **print**.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

import pandas as pd

from exstream_push.status import Channel

CHANNELS = tuple(Channel)


def decide_channel(push_enabled: bool, active_devices: int, stated: dict[str, str]) -> str:
    if push_enabled and active_devices > 0:
        return Channel.PUSH.value
    if stated.get("default") in CHANNELS:
        return stated["default"]
    for channel in stated.values():
        if channel in CHANNELS:
            return channel
    return Channel.PRINT.value


def changed_customers(changes: Iterable[tuple[str, datetime]]) -> tuple[list[str], datetime | None]:
    """The customers changed, and the latest change time seen.

    The latest change time, not the run's as_of, becomes the next watermark: changes are stamped when they are
    written, so a run acting at a later as_of must not hide the ones written after it read.
    """
    latest: datetime | None = None
    customers: set[str] = set()
    for customer_id, updated_at in changes:
        customers.add(customer_id)
        latest = updated_at if latest is None else max(latest, updated_at)
    return sorted(customers), latest


def preference_rows(
    customers: list[str], devices: pd.DataFrame, stated: Mapping[str, Mapping[str, Any]]
) -> Iterator[list[Any]]:
    """The latest state of each customer, once: ``devices`` (every device of them, a ``device`` frame) folded per
    customer, then the stated preferences (``preference`` rows by customer) over them."""
    active = devices[devices["active"].astype(bool)]
    per_customer = active.groupby("customer_id").agg(
        active_devices=("device_id", "count"),
        any_opted_in=("push_opt_in", "max"),
        categories=("categories", lambda c: ";".join(sorted({x for v in c for x in v.split(";") if x}))),
    )
    latest_device = devices.groupby("customer_id")["updated_at"].max()
    for customer_id in customers:
        preference = stated.get(customer_id)
        count = int(per_customer.at[customer_id, "active_devices"]) if customer_id in per_customer.index else 0
        device_opt_in = bool(per_customer.at[customer_id, "any_opted_in"]) if count else False
        push_enabled = device_opt_in if preference is None or preference["push_opt_in"] is None else (
            bool(preference["push_opt_in"]) and device_opt_in
        )  # fmt: skip
        categories = (
            preference["categories"]
            if preference is not None and preference["categories"] is not None
            else (per_customer.at[customer_id, "categories"] if count else "")
        )
        channels = (
            json.loads(preference["preferred_channels"]) if preference and preference["preferred_channels"] else {}
        )
        moments = [m for m in (latest_device.get(customer_id), preference and preference["updated_at"]) if m]
        updated_at = max(pd.Timestamp(m).to_pydatetime() for m in moments)
        yield [
            customer_id,
            "true" if push_enabled else "false",
            count,
            decide_channel(push_enabled, count, channels),
            categories,
            updated_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        ]
