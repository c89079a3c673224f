"""When a push may go: quiet hours in each device's time zone, and a frequency cap per customer, as rules.

Generic to every use case that reminds. Both decide by the run's ``as_of`` (and, for the cap, by what the ledger
counted), never by the wall clock, so a run replayed at the same ``as_of`` takes the same decisions. No I/O here:
the tasks that apply them are in ``exstream_push.notify.pipeline``.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from exstream_push.zones import TimeZoneName


def zone_or_none(name: str | None) -> ZoneInfo | None:
    try:
        return ZoneInfo(name) if name else None
    except (ZoneInfoNotFoundError, ValueError):
        return None


class QuietHours(BaseModel):
    """A daily window, in each device's own time zone, in which nothing is sent; ``start == end`` means none."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: time = time(21, 0)
    end: time = time(8, 0)
    default_timezone: TimeZoneName = Field("UTC", description="for devices that registered no (or an unknown) zone")

    @field_validator("start", "end", mode="before")
    @classmethod
    def _quoted_time(cls, value: Any) -> Any:
        # YAML 1.1 reads an unquoted 21:00 as the number 1260, which pydantic would take for seconds.
        if isinstance(value, int | float):
            raise ValueError("write times as quoted strings, e.g. '21:00'")
        return value


class FrequencyCap(BaseModel):
    """At most ``max_notifications`` notices per customer in any ``window_days`` days."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_notifications: int = Field(2, ge=1)
    window_days: int = Field(7, ge=1)

    @property
    def window(self) -> timedelta:
        return timedelta(days=self.window_days)


def quiet_hours_end(as_of: datetime, zone: ZoneInfo, quiet: QuietHours) -> datetime | None:
    """When the quiet window ``as_of`` falls in ends (in UTC), or None when ``as_of`` is outside quiet hours."""
    if quiet.start == quiet.end:
        return None
    local = as_of.astimezone(zone)
    now = local.time().replace(tzinfo=None)
    if quiet.start < quiet.end:  # a window within one day, e.g. 12:00–14:00
        inside, ends_tomorrow = quiet.start <= now < quiet.end, False
    else:  # a window across midnight, e.g. 21:00–08:00
        inside, ends_tomorrow = now >= quiet.start or now < quiet.end, now >= quiet.start
    if not inside:
        return None
    day = local.date() + timedelta(days=1 if ends_tomorrow else 0)
    return datetime.combine(day, quiet.end, tzinfo=zone).astimezone(UTC)


def quiet_until(as_of: datetime, timezones: pd.Series, quiet: QuietHours) -> pd.Series:
    """Per device, when its quiet hours end (UTC), NaT when it may be sent to now.

    One run acts at one moment, so the answer depends on the zone only: computed once per distinct zone.
    """
    default = ZoneInfo(quiet.default_timezone)
    names = timezones.fillna("").astype(str)
    ends = {name: quiet_hours_end(as_of, zone_or_none(name) or default, quiet) for name in names.unique()}
    return pd.to_datetime(names.map(ends), utc=True)


def allowed_by_cap(customer_ids: pd.Series, already: pd.Series, limit: int) -> pd.Series:
    """Rows are candidate notices, most wanted first; each customer's first ``limit - already`` pass."""
    rank = customer_ids.groupby(customer_ids, sort=False).cumcount()
    prior = customer_ids.map(already).fillna(0).astype(int)
    return (rank + prior) < limit
