"""Operational alerts: who an alert reaches, the formal follow-up asked of Exstream, and one report of both.

An alert's audience is its own ``customer_ids`` or a named segment of ``config/ops-alert-segments.yaml``. Each
affected customer becomes one document-like row (``document_id`` ``alert:<alert_id>/<customer_id>``, ``job_id`` the
alert id), so the statement-ready tasks segment, render and send it, and every customer — even one without a
device — has its own notification outcome. The push and the follow-up letter share the alert id as ``job_id``
(notifications, post-back), which is how ``alert_report`` puts the two side by side.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import case, func, select, update

from exstream_push.blocks.exstream import ExstreamConnection
from exstream_push.content.links import document_ref
from exstream_push.ledger import Device, Ledger, Notification, OpsAlert, PostBack
from exstream_push.retrying import retry_if_it_can_succeed
from exstream_push.runtime import ledger_for
from exstream_push.settings import Settings, get_settings
from exstream_push.status import OpsAlertState, PushStatus, Status, UseCase
from exstream_push.tasks.extract import spool_dir
from exstream_push.tasks.post_back import post_driver_file

USE_CASE = UseCase.OPERATIONAL_ALERT.value
SEGMENTS_FILE = "ops-alert-segments.yaml"
FOLLOW_UP_CHANNEL = "ops-follow-up"
FOLLOW_UP_HEADER = [
    "alert_id",
    "customer_id",
    "kind",
    "severity",
    "message_key",
    "occurred_at",
    "push_status",
    "devices_notified",
    "requested_at",
]


class SegmentError(LookupError):
    """A segment that is not defined, or defined wrongly; the message says which and why."""


class DeviceSelector(BaseModel):
    """Customers with at least one active device matching every attribute given; none given: every such customer."""

    model_config = ConfigDict(extra="forbid")

    platform: str | None = None
    locale: str | None = None
    timezone: str | None = None


class Segment(BaseModel):
    """A named audience: a short fixed list, a file of customer ids, or a device attribute."""

    model_config = ConfigDict(extra="forbid")

    customer_ids: list[str] | None = None
    file: Path | None = Field(None, description="one customer id per line, relative to the config folder")
    devices: DeviceSelector | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Segment:
        if sum(source is not None for source in (self.customer_ids, self.file, self.devices)) != 1:
            raise ValueError("a segment has exactly one of customer_ids, file or devices")
        return self


def load_segments(settings: Settings) -> dict[str, Segment]:
    """Read on every use, so an edited segment file applies to the next alert without a restart."""
    path = settings.config_dir / SEGMENTS_FILE
    if not path.exists():
        return {}
    raw = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("segments") or {}
    try:
        return {str(name): Segment.model_validate(definition or {}) for name, definition in raw.items()}
    except ValueError as exc:
        raise SegmentError(f"{path}: {exc}") from None


def segment_customers(ledger: Ledger, settings: Settings, name: str) -> Iterator[str]:
    """Each customer of a segment once, streamed: a segment may hold millions."""
    segment = load_segments(settings).get(name)
    if segment is None:
        raise SegmentError(f"no segment named {name!r} in {settings.config_dir / SEGMENTS_FILE}")
    if segment.customer_ids is not None:
        yield from sorted(set(segment.customer_ids))
    elif segment.file is not None:
        yield from _unique(_file_customers(settings.config_dir / segment.file))
    elif segment.devices is not None:
        yield from _device_customers(ledger, segment.devices)


def _unique(values: Iterable[str]) -> Iterator[str]:
    seen: set[str] = set()
    for value in values:
        if value not in seen:
            seen.add(value)
            yield value


def _file_customers(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            value = line.strip()
            if value and not value.startswith("#"):
                yield value


def _device_customers(ledger: Ledger, selector: DeviceSelector) -> Iterator[str]:
    table = Device.__table__
    conditions = [table.c.active.is_(True)]
    conditions += [table.c[name] == value for name, value in selector.model_dump(exclude_none=True).items()]
    statement = select(table.c.customer_id).where(*conditions).distinct().order_by(table.c.customer_id)
    with ledger.engine.connect().execution_options(stream_results=True, yield_per=10_000) as conn:
        yield from conn.scalars(statement)


@dataclass(frozen=True)
class Alert:
    """An ``OpsAlert`` row as the flow needs it, detached from any session."""

    alert_id: str
    kind: str
    severity: str
    message_key: str
    audience: dict[str, Any]
    occurred_at: datetime
    state: str


def read_alert(ledger: Ledger, alert_id: str) -> Alert:
    with ledger.engine.connect() as conn:
        row = conn.execute(select(OpsAlert.__table__).where(OpsAlert.alert_id == alert_id)).mappings().first()
    if row is None:
        raise LookupError(f"no operational alert {alert_id!r} in the ledger (the ingress stores them)")
    return Alert(
        alert_id=row["alert_id"],
        kind=row["kind"],
        severity=row["severity"],
        message_key=row["message_key"],
        audience=json.loads(row["audience"]),
        occurred_at=_utc(row["occurred_at"]),
        state=row["state"],
    )


def mark_alert(ledger: Ledger, alert_id: str, state: OpsAlertState, **moments: datetime | None) -> None:
    """Move the alert on (``pushed_at`` or ``follow_up_posted_at`` with it), so a re-run skips what is done."""
    with ledger.engine.begin() as conn:
        conn.execute(update(OpsAlert).where(OpsAlert.alert_id == alert_id).values(state=state.value, **moments))


def _utc(moment: datetime | None) -> datetime | None:
    """SQLite hands datetimes back without their zone; every one the ledger stores is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _iso(moment: datetime | None) -> str | None:
    utc = _utc(moment)
    return utc.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if utc else None


def alert_spool(settings: Settings, alert_id: str) -> Path:
    return spool_dir(settings, USE_CASE, alert_id)


@task(name="spool-alert-audience", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def spool_alert_audience(alert: Alert) -> list[Path]:
    """The affected customers as document-like Parquet batches, so memory stays flat for a segment of millions.

    Templates see only the alert's kind (as document type) and message key (as template); every row carries the
    same opaque reference to the alert, so the push names neither the customer nor the alert.
    """
    settings = get_settings()
    ledger = ledger_for(settings)
    out_dir = alert_spool(settings, alert.alert_id)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    if "customer_ids" in alert.audience:
        customers: Iterable[str] = alert.audience["customer_ids"]
    else:
        customers = segment_customers(ledger, settings, alert.audience["segment"])
    ref = document_ref(settings.link_key, USE_CASE, f"alert:{alert.alert_id}")
    batches: list[Path] = []
    chunk: list[str] = []
    for customer_id in customers:
        chunk.append(customer_id)
        if len(chunk) == settings.batch_size:
            batches.append(_write_batch(out_dir, len(batches) + 1, alert, chunk, ref))
            chunk = []
    if chunk:
        batches.append(_write_batch(out_dir, len(batches) + 1, alert, chunk, ref))
    get_run_logger().info("alert %s: %d batch(es) of affected customers", alert.alert_id, len(batches))
    return batches


def _write_batch(out_dir: Path, number: int, alert: Alert, customer_ids: list[str], ref: str) -> Path:
    frame = pd.DataFrame(
        {
            "document_id": [f"alert:{alert.alert_id}/{customer_id}" for customer_id in customer_ids],
            "customer_id": customer_ids,
            "job_id": alert.alert_id,
            "document_type": alert.kind,
            "template": alert.message_key,
            "locale": pd.Series([None] * len(customer_ids), dtype="object"),
            "ref": ref,
        }
    )
    path = out_dir / f"batch-{number:06d}.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return path


def _customer_outcomes(ledger: Ledger, alert_id: str) -> Iterator[tuple[str, int]]:
    """(customer_id, devices the alert reached), one row per affected customer, in customer order."""
    table = Notification.__table__
    sent = func.sum(case((table.c.status == Status.SENT.value, 1), else_=0))
    statement = (
        select(table.c.customer_id, sent)
        .where(table.c.use_case == USE_CASE, table.c.job_id == alert_id)
        .group_by(table.c.customer_id)
        .order_by(table.c.customer_id)
    )
    with ledger.engine.connect().execution_options(stream_results=True, yield_per=10_000) as conn:
        for customer_id, devices in conn.execute(statement):
            yield customer_id, int(devices or 0)


def follow_up_rows(ledger: Ledger, alert: Alert, requested_at: datetime) -> Iterator[list[Any]]:
    """One row per affected customer, with what the push achieved, so the letter can say it or stand alone."""
    for customer_id, devices in _customer_outcomes(ledger, alert.alert_id):
        yield [
            alert.alert_id,
            customer_id,
            alert.kind,
            alert.severity,
            alert.message_key,
            _iso(alert.occurred_at),
            PushStatus.NOTIFIED.value if devices else PushStatus.NOT_NOTIFIED.value,
            devices,
            _iso(requested_at),
        ]


@task(
    name="request-alert-follow-up",
    retries=3,
    retry_delay_seconds=10,
    retry_condition_fn=retry_if_it_can_succeed,
    cache_policy=NO_CACHE,
)
def request_follow_up(alert: Alert, exstream: ExstreamConnection, as_of: datetime) -> dict[str, Any]:
    """One batch-input POST to ``ops-follow-up`` listing the affected customers; never posted twice.

    The post-back record (channel, alert id, digest) is the link to the push; the alert is marked afterwards, so a
    crash in between only leads a re-run to find the file already posted.
    """
    ledger = ledger_for(get_settings())
    summary = post_driver_file(
        exstream, FOLLOW_UP_CHANNEL, alert.alert_id, FOLLOW_UP_HEADER, follow_up_rows(ledger, alert, as_of)
    )
    mark_alert(
        ledger,
        alert.alert_id,
        OpsAlertState.FOLLOW_UP_REQUESTED,
        follow_up_posted_at=as_of if summary["rows"] else None,
    )
    return summary


def alert_report(ledger: Ledger, alert_id: str) -> dict[str, Any]:
    """The push and the formal follow-up of one alert, side by side: what operations and auditors ask for."""
    alerts, post_backs, notifications = OpsAlert.__table__, PostBack.__table__, Notification.__table__
    sent = notifications.c.status == Status.SENT.value
    with ledger.engine.connect() as conn:
        alert = conn.execute(select(alerts).where(alerts.c.alert_id == alert_id)).mappings().first()
        if alert is None:
            raise LookupError(f"no operational alert {alert_id!r} in the ledger")
        customers, customers_notified, devices_notified = conn.execute(
            select(
                func.count(notifications.c.customer_id.distinct()),
                func.count(case((sent, notifications.c.customer_id)).distinct()),
                func.count(case((sent, 1))),
            ).where(notifications.c.use_case == USE_CASE, notifications.c.job_id == alert_id)
        ).one()
        posts = (
            conn.execute(
                select(post_backs.c.rows)
                .where(post_backs.c.channel == FOLLOW_UP_CHANNEL, post_backs.c.job_id == alert_id)
                .order_by(post_backs.c.posted_at)
            )
            .scalars()
            .all()
        )
    by_status: dict[str, dict[str, int]] = {}
    for (status, reason), count in ledger.job_reason_counts(USE_CASE, alert_id).items():
        by_status.setdefault(status, {})[reason or ""] = count
    return {
        "alert_id": alert_id,
        "kind": alert["kind"],
        "severity": alert["severity"],
        "message_key": alert["message_key"],
        "state": alert["state"],
        "occurred_at": _iso(alert["occurred_at"]),
        "received_at": _iso(alert["received_at"]),
        "push": {
            "pushed_at": _iso(alert["pushed_at"]),
            "customers": customers,
            "customers_notified": customers_notified,
            "devices_notified": devices_notified,
            "by_status": by_status,
        },
        "follow_up": {
            "channel": FOLLOW_UP_CHANNEL,
            "posted_at": _iso(alert["follow_up_posted_at"]),
            "posts": len(posts),
            "rows": posts[-1] if posts else 0,
        },
    }
