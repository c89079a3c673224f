"""The pure rules of delivery exceptions: what may be kept of a failure, the exception row a tracking event, an
engine message line or a failed job becomes, the operations push per failure group and the rows of a reissue
request. No I/O: frames and mappings in, rows and frames out."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from jinja2 import Template

from exstream_push.connectors.fcm import build_message
from exstream_push.content import guard
from exstream_push.keys import stable_key
from exstream_push.ledger.store import notification_key
from exstream_push.message_file import EngineMessage
from exstream_push.settings import ManifestKeys
from exstream_push.status import DocumentState, PushProvider, is_failed_delivery
from exstream_push.usecases.delivery_exceptions.config import USE_CASE, DeliveryExceptionsConfig, FailureRule

REISSUE_HEADER = [
    "document_id",
    "job_id",
    "channel",
    "failure_class",
    "document_type",
    "reissue_via",
    "requested_at",
]
OPERATIONS = "operations"  # the customer_id of an operations push in the notification ledger
MAX_TYPES_SHOWN = 3
_DOCUMENT_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_. -]{0,39}")
_JOB_IN_PATH = re.compile(r"/jobs/([^/]+)/")
_DETAIL_LENGTH = 300


# -- what may be kept of a failure ------------------------------------------------------------------------------


def mask_reference(value: object, visible: int) -> str | None:
    """Enough of a customer id for operations to find the case, too little to identify anyone; length hidden."""
    text = str(value).strip() if value is not None else ""
    if not text:
        return None
    shown = text[-visible:] if visible and len(text) > visible * 2 else ""
    return "****" + shown


def clean_document_type(value: object) -> str | None:
    """A document type is a short code (STATEMENT); anything else is not trusted into a push."""
    text = str(value).strip() if value is not None else ""
    return text if _DOCUMENT_TYPE.fullmatch(text) else None


def redact(text: str) -> str:
    """Engine messages may quote data: it is blanked (``content.guard``'s patterns) before a detail is stored."""
    return guard.redact(text, _DETAIL_LENGTH)


def dedup_key(*parts: str) -> str:
    """One record per failure, whichever run or source reports it again."""
    return stable_key(*parts)


def document_key(job_id: str, channel: str, document_id: str) -> str:
    """One record per failed document on a channel, whichever source reported it."""
    return dedup_key("document", job_id, channel, document_id)


def _moment(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _row(
    *,
    key: str,
    job_id: str,
    rule: FailureRule,
    source: str,
    occurred_at: datetime,
    as_of: datetime,
    document_id: str | None = None,
    customer_ref: str | None = None,
    document_type: str | None = None,
    detail: str | None = None,
) -> dict[str, Any]:
    return {
        "dedup_key": key,
        "job_id": job_id,
        "channel": rule.channel,
        "failure_class": rule.failure_class,
        "document_id": document_id,
        "customer_ref": customer_ref,
        "document_type": document_type,
        "source": source,
        "detail": detail,
        "next_action": rule.next_action,
        "state": DocumentState.OPEN.value,
        "occurred_at": occurred_at.astimezone(UTC),  # stored in UTC: SQLite keeps no offset
        "recorded_at": as_of.astimezone(UTC),
        "alert_key": None,
    }


# -- tracking events ---------------------------------------------------------------------------------------------


class TrackingEventError(ValueError):
    """An event without the ``expctr.schemaType`` every Exstream tracking event has."""


def _event_job_id(event: Mapping[str, Any], user: Mapping[str, Any], job_key: str) -> str:
    """The job an event belongs to: named by the event or the application's metadata, else read from the output
    path (``.../jobs/{jobId}/...``), else the communication it came from."""
    job = event.get("exstreamJob") if isinstance(event.get("exstreamJob"), Mapping) else {}
    for candidate in (job.get("jobId"), user.get(job_key)):
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip()
    path = user.get("QueueFilename")
    found = _JOB_IN_PATH.search(path) if isinstance(path, str) else None
    if found:
        return found.group(1)
    email = event.get("exstreamEmailStatistics") if isinstance(event.get("exstreamEmailStatistics"), Mapping) else {}
    communication = job.get("communicationId") or email.get("communicationId")
    return f"communication:{communication}" if communication else "unknown"


def exception_from_event(
    event: object, config: DeliveryExceptionsConfig, keys: ManifestKeys, as_of: datetime
) -> dict[str, Any] | None:
    """The exception row for a failure event, None for any other event; personal data is left behind."""
    if not isinstance(event, Mapping):
        raise TrackingEventError("an event must be a JSON object")
    header = event.get("expctr")
    schema_type = header.get("schemaType") if isinstance(header, Mapping) else None
    if not isinstance(header, Mapping) or not isinstance(schema_type, str) or not schema_type:
        raise TrackingEventError("no expctr.schemaType")
    if not is_failed_delivery(schema_type):
        return None
    user = event.get("user") if isinstance(event.get("user"), Mapping) else {}
    job = event.get("exstreamJob") if isinstance(event.get("exstreamJob"), Mapping) else {}
    email = event.get("exstreamEmailStatistics") if isinstance(event.get("exstreamEmailStatistics"), Mapping) else {}
    rule = config.rule_for_event(schema_type)
    job_id = _event_job_id(event, user, config.tracking_event_job_key)
    document_id = str(user.get(keys.document_id) or "").strip() or None
    event_id = str(header.get("eventId") or "").strip()
    if document_id:
        key = document_key(job_id, rule.channel, document_id)
    elif event_id:
        key = dedup_key("event", event_id)
    else:
        key = dedup_key("event-content", json.dumps(event, sort_keys=True, default=str))
    status = job.get("status") or email.get("eventType")
    detail = " ".join(part for part in (schema_type, f"status={status}" if status else "", event_id) if part)
    occurred_at = (
        _moment(header.get("eventDate")) or _moment(job.get("creationTime")) or _moment(email.get("creationTime"))
    )
    return _row(
        key=key,
        job_id=job_id,
        rule=rule,
        source="tracking_event",
        occurred_at=occurred_at or as_of,
        as_of=as_of,
        document_id=document_id,
        customer_ref=mask_reference(user.get(keys.customer_id), config.masked_reference_chars),
        document_type=clean_document_type(user.get(keys.document_type)),
        detail=redact(detail),
    )


# -- message files and jobs --------------------------------------------------------------------------------------


def exception_from_message(
    message: EngineMessage,
    job_id: str,
    step_id: str,
    config: DeliveryExceptionsConfig,
    fallback_time: datetime,
    as_of: datetime,
) -> dict[str, Any] | None:
    """The exception row for an ERROR/SEVERE line naming a document; None when it names none (a job-level error)."""
    identity = config.identity_in(message.text)
    document_id = identity.get("document_id")
    if not document_id:
        return None
    rule = config.rule_for_message(message)
    occurred_at = message.timestamp.replace(tzinfo=config.zone) if message.timestamp else fallback_time
    code = f" {message.code}" if message.code else ""
    customer_id = identity.get("customer_id")
    customer_ref = mask_reference(customer_id, config.masked_reference_chars)
    text = message.text.replace(customer_id, customer_ref or "") if customer_id else message.text
    return _row(
        key=document_key(job_id, rule.channel, document_id),
        job_id=job_id,
        rule=rule,
        source="message_file",
        occurred_at=occurred_at,
        as_of=as_of,
        document_id=document_id,
        customer_ref=customer_ref,
        document_type=clean_document_type(identity.get("document_type")),
        detail=redact(f"step {step_id} line {message.line_number}: {message.level}{code} {text}"),
    )


def job_failure(
    job_id: str,
    config: DeliveryExceptionsConfig,
    occurred_at: datetime,
    as_of: datetime,
    job_message: str | None,
    unattributed: Sequence[EngineMessage],
) -> dict[str, Any]:
    """The one record of a job that failed with no failed document known: it is reprocessed as a whole."""
    codes = sorted({message.code for message in unattributed if message.code})[:5]
    parts = [f"job status error: {job_message or 'no message'}"]
    if unattributed:
        parts.append(
            f"{len(unattributed)} error line(s) naming no document" + (f" ({', '.join(codes)})" if codes else "")
        )
    return _row(
        key=dedup_key("job", job_id),
        job_id=job_id,
        rule=config.job_failed,
        source="job_status",
        occurred_at=occurred_at,
        as_of=as_of,
        detail=redact("; ".join(parts)),
    )


# -- operations pushes -------------------------------------------------------------------------------------------


@dataclass
class OperationsAlerts:
    """Pushes for send-push (one row per (job, channel, failure class)) and the records each one covers."""

    messages: pd.DataFrame
    covered: dict[str, list[str]] = field(default_factory=dict)


def _document_types(types: pd.Series) -> str:
    counted = Counter(types.fillna("untyped").tolist()).most_common()
    counted.sort(key=lambda item: (-item[1], item[0]))
    shown = [f"{name} ×{count:,}" for name, count in counted[:MAX_TYPES_SHOWN]]
    rest = sum(count for _, count in counted[MAX_TYPES_SHOWN:])
    return ", ".join(shown) + (f", others ×{rest:,}" if rest else "")


def operations_alerts(records: pd.DataFrame, template: Template, topic: str) -> OperationsAlerts:
    """One topic push per (job, channel, failure class) among ``records`` (``ledger.exceptions.unalerted()``).

    Its idempotency key includes the triple's total, so a re-run sends nothing while more failures arriving later
    send one update carrying the new total; the collapse key stays the triple's, so it replaces the earlier
    notice on the operations devices.
    """
    device_id = f"topic:{topic}"
    rows, covered = [], {}
    for (job_id, channel, failure_class), group in records.groupby(["job_id", "channel", "failure_class"], sort=True):
        new = group[group["alert_key"].isna()]
        references = new["customer_ref"].dropna()
        subject = f"{job_id}/{channel}/{failure_class}"
        stage = f"documents:{len(group)}"
        key = notification_key(USE_CASE, subject, device_id, stage)
        variables = {
            "job_id": job_id,
            "channel": channel,
            "failure_label": str(failure_class).replace("_", " ").capitalize(),
            "documents": len(group),
            "new_documents": len(new),
            "document_types": _document_types(group["document_type"]),
            "customer_ref": references.iloc[0] if len(references) else None,
            "others": len(new) - 1 if len(references) else 0,
            "next_action": str(new["next_action"].iloc[-1]).rstrip("."),
        }
        context = template.new_context(variables)
        title = "".join(template.blocks["title"](context)).strip()
        body = "".join(template.blocks["body"](context)).strip()
        data = {
            "use_case": USE_CASE,
            "job_id": str(job_id),
            "channel": str(channel),
            "failure_class": str(failure_class),
            "documents": str(len(group)),
            "new_documents": str(len(new)),
            "customer_ref": variables["customer_ref"] or "",
            "next_action": variables["next_action"],
        }
        message = build_message(
            topic=topic,
            title=title,
            body=body,
            data=data,
            collapse_key=notification_key(USE_CASE, subject, device_id),
            priority="high",
        )
        rows.append(
            {
                "key": key,
                "document_id": subject,
                "job_id": job_id,
                "customer_id": OPERATIONS,
                "device_id": device_id,
                "stage": stage,
                "provider": PushProvider.FCM.value,  # operations devices follow an FCM topic
                "payload": message,
                "channel": channel,
                "failure_class": failure_class,
                "documents": len(group),
                "new_documents": len(new),
            }
        )
        covered[key] = new["dedup_key"].tolist()
    return OperationsAlerts(messages=pd.DataFrame(rows), covered=covered)


# -- reissue -----------------------------------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def reissue_rows(
    documents: Sequence[Mapping[str, Any]], job_id: str, config: DeliveryExceptionsConfig, as_of: datetime
) -> list[list[str]]:
    """The driver rows (REISSUE_HEADER) asking the reissue channel for exactly these failed documents."""
    requested_at = _iso(as_of)
    return [
        [
            record["document_id"],
            job_id,
            record["channel"],
            record["failure_class"],
            record["document_type"] or "",
            config.rule_named(record["failure_class"]).reissue_via,
            requested_at,
        ]
        for record in documents
    ]
