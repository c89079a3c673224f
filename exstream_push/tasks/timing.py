"""When a push may go: quiet hours in each device's time zone, and a frequency cap per customer.

Generic to every reminder use case. Both decide by the run's ``as_of`` and what the ledger holds, never by the
wall clock, so a run replayed at the same ``as_of`` takes the same decisions.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import func, select

from exstream_push.ledger import Ledger
from exstream_push.ledger.models import Notification
from exstream_push.ledger.store import notification_rows
from exstream_push.retrying import retry_if_it_can_succeed
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push.status import SkipReason, Status
from exstream_push.zones import TimeZoneName

# A notice counts against the cap once it has gone, is going, or waits for quiet hours to end.
CAPPED_STATUSES = (Status.SENT.value, Status.PENDING.value, Status.DEFERRED.value)
_CHUNK = 2_000


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


def recent_notice_counts(
    ledger: Ledger, use_case: str, customer_ids: Sequence[str], as_of: datetime, window: timedelta
) -> pd.Series:
    """Notices (a document at a stage, however many devices) per customer decided in (as_of − window, as_of]."""
    table = Notification.__table__
    counts: dict[str, int] = {}
    with ledger.engine.connect() as conn:
        for start in range(0, len(customer_ids), _CHUNK):
            notices = (
                select(table.c.customer_id, table.c.document_id, table.c.stage)
                .where(
                    table.c.use_case == use_case,
                    table.c.customer_id.in_(customer_ids[start : start + _CHUNK]),
                    table.c.status.in_(CAPPED_STATUSES),
                    table.c.as_of > as_of - window,
                    table.c.as_of <= as_of,
                )
                .distinct()
                .subquery()
            )
            rows = conn.execute(select(notices.c.customer_id, func.count()).group_by(notices.c.customer_id))
            counts.update({customer_id: count for customer_id, count in rows})
    return pd.Series(counts, dtype="int64")


@task(name="apply-frequency-cap", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def apply_frequency_cap(candidates: pd.DataFrame, use_case: str, as_of: datetime, cap: FrequencyCap) -> pd.DataFrame:
    """Keeps the notices the cap allows; the rest are recorded ``skipped``/``frequency_capped`` for good.

    ``candidates`` holds one row per notice (document and stage, before devices), most wanted first, with
    ``customer_id``, ``document_id``, ``job_id`` and ``stage``.
    """
    ledger = ledger_for(get_settings())
    customers = candidates["customer_id"].unique().tolist()
    already = recent_notice_counts(ledger, use_case, customers, as_of, cap.window)
    allowed = allowed_by_cap(candidates["customer_id"], already, cap.max_notifications)
    capped = candidates[~allowed]
    ledger.record_final(
        notification_rows(capped, use_case, Status.SKIPPED, reason=SkipReason.FREQUENCY_CAPPED, as_of=as_of)
    )
    get_run_logger().info("frequency cap: %d notice(s) allowed, %d capped", int(allowed.sum()), len(capped))
    return candidates[allowed].reset_index(drop=True)


@task(name="defer-quiet-hours", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def defer_quiet_hours(recipients: pd.DataFrame, use_case: str, as_of: datetime, quiet: QuietHours) -> pd.DataFrame:
    """Returns the recipients that may be sent to now; those in their quiet hours are recorded ``deferred``.

    A deferred row keeps its idempotency key and gets ``not_before`` (when the window ends in the device's
    ``timezone``), so the first run at or after that moment sends it, once.
    """
    later = quiet_until(as_of, recipients["timezone"], quiet)
    deferred = later.notna()
    ledger_for(get_settings()).record_final(
        notification_rows(
            recipients[deferred].assign(not_before=later[deferred]), use_case, Status.DEFERRED, as_of=as_of
        )
    )
    get_run_logger().info("quiet hours: %d deferred, %d to send now", int(deferred.sum()), int((~deferred).sum()))
    return recipients[~deferred].reset_index(drop=True)
