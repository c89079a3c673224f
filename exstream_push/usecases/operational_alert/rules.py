"""Operational alerts' rules as pure functions: the alert as the flow sees it, the audience as document-like
rows, the follow-up rows and the report."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from exstream_push.status import PushStatus


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


def alert_of(row: Mapping[str, Any]) -> Alert:
    """An ``ops_alert`` row as an ``Alert``."""
    return Alert(
        alert_id=row["alert_id"],
        kind=row["kind"],
        severity=row["severity"],
        message_key=row["message_key"],
        audience=json.loads(row["audience"]),
        occurred_at=utc(row["occurred_at"]),
        state=row["state"],
    )


def utc(moment: datetime | None) -> datetime | None:
    """SQLite hands datetimes back without their zone; every one the ledger stores is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def iso(moment: datetime | None) -> str | None:
    stamp = utc(moment)
    return stamp.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if stamp else None


def unique(values: Iterable[str]) -> Iterator[str]:
    """Each value once, in the order first seen, streamed."""
    seen: set[str] = set()
    for value in values:
        if value not in seen:
            seen.add(value)
            yield value


def customer_lines(lines: Iterable[str]) -> Iterator[str]:
    """The customer ids of a segment file: one a line, blank lines and ``#`` comments left out."""
    for line in lines:
        value = line.strip()
        if value and not value.startswith("#"):
            yield value


def audience_frame(alert: Alert, customer_ids: list[str], ref: str) -> pd.DataFrame:
    """Affected customers as document-like rows. Templates see only the alert's kind (as document type) and
    message key (as template); every row carries the same opaque ``ref``, so the push names neither the customer
    nor the alert."""
    return pd.DataFrame(
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


def follow_up_rows(alert: Alert, outcomes: Iterable[tuple[str, int]], requested_at: datetime) -> Iterator[list[Any]]:
    """One row per affected customer (``outcomes``: customer and devices reached), with what the push achieved,
    so the letter can say it or stand alone."""
    for customer_id, devices in outcomes:
        yield [
            alert.alert_id,
            customer_id,
            alert.kind,
            alert.severity,
            alert.message_key,
            iso(alert.occurred_at),
            PushStatus.NOTIFIED.value if devices else PushStatus.NOT_NOTIFIED.value,
            devices,
            iso(requested_at),
        ]


def report(
    alert: Mapping[str, Any],
    counts: tuple[int, int, int],
    posts: list[int],
    reasons: Mapping[tuple[str, str | None], int],
    channel: str,
) -> dict[str, Any]:
    """The push and the formal follow-up of one alert, side by side: what operations and auditors ask for."""
    customers, customers_notified, devices_notified = counts
    by_status: dict[str, dict[str, int]] = {}
    for (status, reason), count in reasons.items():
        by_status.setdefault(status, {})[reason or ""] = count
    return {
        "alert_id": alert["alert_id"],
        "kind": alert["kind"],
        "severity": alert["severity"],
        "message_key": alert["message_key"],
        "state": alert["state"],
        "occurred_at": iso(alert["occurred_at"]),
        "received_at": iso(alert["received_at"]),
        "push": {
            "pushed_at": iso(alert["pushed_at"]),
            "customers": customers,
            "customers_notified": customers_notified,
            "devices_notified": devices_notified,
            "by_status": by_status,
        },
        "follow_up": {
            "channel": channel,
            "posted_at": iso(alert["follow_up_posted_at"]),
            "posts": len(posts),
            "rows": posts[-1] if posts else 0,
        },
    }


def report_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """An alert ``report`` as rows a person reads: its facts, then the push's and the follow-up's, one level deep;
    what is not a number or a text (a time not yet reached, the counts by status) is left to the report itself."""
    rows = []
    for name, value in report.items():
        parts = value.items() if isinstance(value, Mapping) else [("", value)]
        for part, item in parts:
            if isinstance(item, int | str):
                rows.append({"of the alert": f"{name} {part}".strip(), "value": item})
    return rows
