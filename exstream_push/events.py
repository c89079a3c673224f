"""Engagement events from the app back end and the portal: JSON Lines, stored once per ``event_id``.

``{"event_id", "type", "document_id" | "document_ref", "customer_id", "device_id"?, "occurred_at"}``. A
``document_ref`` is the opaque reference a push carried; it is resolved through the ledger to the document and its
use case, which attaches the event to that document's notification history.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from exstream_push.ledger import Ledger
from exstream_push.ledger.store import utcnow
from exstream_push.status import EngagementType

_TYPES = {member.value for member in EngagementType if member is not EngagementType.SENT}
_CHUNK = 5_000


@dataclass
class EventImportReport:
    stored: int = 0
    repeated: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)


class EventError(ValueError):
    pass


def parse_event(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate one event's fields; the document is resolved later, in bulk."""
    if not isinstance(raw, Mapping):
        raise EventError("an event must be a JSON object")
    event_id = raw.get("event_id")
    if not isinstance(event_id, str) or not event_id.strip():
        raise EventError("event_id is missing")
    kind = raw.get("type")
    if kind not in _TYPES:
        raise EventError(f"type must be one of {', '.join(sorted(_TYPES))}, not {kind!r}")
    document_id, document_ref = raw.get("document_id"), raw.get("document_ref")
    if not (isinstance(document_id, str) and document_id) and not (isinstance(document_ref, str) and document_ref):
        raise EventError("document_id or document_ref is required")
    customer_id = raw.get("customer_id")
    if not isinstance(customer_id, str) or not customer_id:
        raise EventError("customer_id is missing")
    device_id = raw.get("device_id")
    if device_id is not None and not isinstance(device_id, str):
        raise EventError("device_id must be a string")
    occurred = raw.get("occurred_at")
    try:
        occurred_at = datetime.fromisoformat(occurred) if isinstance(occurred, str) else None
    except ValueError:
        occurred_at = None
    if occurred_at is None or occurred_at.tzinfo is None:
        raise EventError("occurred_at must be an ISO date-time with a time zone")
    return {
        "event_id": event_id.strip(),
        "type": kind,
        "document_id": document_id or None,
        "document_ref": document_ref or None,
        "customer_id": customer_id,
        "device_id": device_id,
        "occurred_at": occurred_at,
    }


def store_events(ledger: Ledger, events: Iterable[tuple[int, dict[str, Any]]], report: EventImportReport) -> None:
    """Resolve each event's document, then insert; an event_id already stored is counted as a repeat."""
    batch = list(events)
    if not batch:
        return
    by_ref, by_id = ledger.engagement.resolve_documents(
        [event["document_ref"] for _, event in batch if event["document_ref"]],
        [event["document_id"] for _, event in batch if event["document_id"]],
    )
    known = ledger.engagement.known_event_ids([event["event_id"] for _, event in batch])
    rows, seen = [], set(known)
    now = utcnow()
    for line, event in batch:
        resolved = by_ref.get(event["document_ref"]) if event["document_ref"] else by_id.get(event["document_id"])
        if resolved is None:
            report.errors.append((line, "unknown document (no notification was sent for it)"))
            continue
        document_id, use_case, customer_id = resolved
        if customer_id != event["customer_id"]:
            report.errors.append((line, "customer_id does not match the document's customer"))
            continue
        if event["event_id"] in seen:
            report.repeated += 1
            continue
        seen.add(event["event_id"])
        rows.append(
            {
                "event_id": event["event_id"],
                "type": event["type"],
                "use_case": use_case,
                "document_id": document_id,
                "customer_id": customer_id,
                "device_id": event["device_id"],
                "occurred_at": event["occurred_at"],
                "received_at": now,
            }
        )
    ledger.record_events(rows)
    report.stored += len(rows)


def import_events(ledger: Ledger, path: Path) -> EventImportReport:
    report = EventImportReport()
    pending: list[tuple[int, dict[str, Any]]] = []
    with Path(path).open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                pending.append((line_number, parse_event(json.loads(line))))
            except json.JSONDecodeError as exc:
                report.errors.append((line_number, f"not JSON: {exc.msg}"))
            except EventError as exc:
                report.errors.append((line_number, str(exc)))
            if len(pending) >= _CHUNK:
                store_events(ledger, pending, report)
                pending = []
    store_events(ledger, pending, report)
    return report
