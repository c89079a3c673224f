"""Delivery exceptions: documents Exstream failed to deliver, the rule table that says what to do about each, and
the operator's actions on them (list, reissue).

Three sources feed one ``delivery_exception`` table: jobs in status ``error``, ERROR/SEVERE lines of a job's message
file, and tracking events whose ``schemaType`` ends in ``-Failed`` or is ``Exstream-Email-NDLV``. A failed document
is recorded once whichever sources report it: its key is (job, channel, document), or the event id when the event
names no document. Tracking events carry personal data in ``user{}``: only the document id, a masked customer
reference and a vetted document type are kept.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from re import Pattern
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Table, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from exstream_push.ledger import DeliveryException, Ledger
from exstream_push.message_file import EngineMessage
from exstream_push.settings import ManifestKeys, Settings, get_settings
from exstream_push.status import DocumentState, UseCase
from exstream_push.tasks.post_back import post_driver_file
from exstream_push.zones import TimeZoneName

if TYPE_CHECKING:
    from exstream_push.blocks.exstream import ExstreamConnection

log = logging.getLogger(__name__)

USE_CASE = UseCase.DELIVERY_EXCEPTIONS.value
CONFIG_FILE = "delivery-exceptions.yaml"
NDLV_SCHEMA_TYPE = "exstream-email-ndlv"
REPROCESSING = "reprocessing"  # the PostBack "channel" that records a reprocessing request, so it is made once
REISSUE_HEADER = [
    "document_id",
    "job_id",
    "channel",
    "failure_class",
    "document_type",
    "reissue_via",
    "requested_at",
]
IDENTITY_GROUPS = ("document_id", "customer_id", "document_type")
_CHUNK = 2_000  # rows per statement: 13 columns stay under SQLite's 32,766 bind variables
_NAME = r"^[a-z0-9][a-z0-9_-]*$"
_TOPIC = r"^[a-zA-Z0-9\-_.~%]+$"  # what FCM accepts as a topic name
_DOCUMENT_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_. -]{0,39}")
_JOB_IN_PATH = re.compile(r"/jobs/([^/]+)/")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
_LONG_NUMBER = re.compile(r"\d[\d -]{4,}\d")
_DETAIL_LENGTH = 300


class FailureRule(BaseModel):
    """One row of the rule table: what a failure is called, on which channel, and what operations do next."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    failure_class: str = Field(pattern=_NAME)
    channel: str = Field(pattern=_NAME)
    next_action: str = Field(min_length=1, max_length=300)
    reissue_via: str = "original"
    schema_types: tuple[str, ...] = ()
    message_patterns: tuple[Pattern[str], ...] = ()

    def matches_event(self, schema_type: str) -> bool:
        lowered = schema_type.lower()
        return any(fnmatch.fnmatchcase(lowered, glob.lower()) for glob in self.schema_types)

    def matches_message(self, text: str) -> bool:
        return any(pattern.search(text) for pattern in self.message_patterns)


class DeliveryExceptionsConfig(BaseModel):
    """``config/delivery-exceptions.yaml``: the rule table and the few tunables of the use case."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    operations_topic: str = Field("ops-delivery-exceptions", pattern=_TOPIC)
    reissue_channel: str = Field("reissue", min_length=1)
    masked_reference_chars: int = Field(4, ge=0, le=8)
    message_file_timezone: TimeZoneName = "UTC"
    initial_lookback: timedelta = timedelta(days=1)
    late_job_grace: timedelta = timedelta(minutes=15)
    tracking_event_job_key: str = "JobId"
    message_identity_patterns: tuple[Pattern[str], ...] = ()
    rules: tuple[FailureRule, ...] = Field(min_length=1)
    unmatched: FailureRule
    job_failed: FailureRule

    @field_validator("message_identity_patterns")
    @classmethod
    def _names_an_identity(cls, patterns: tuple[Pattern[str], ...]) -> tuple[Pattern[str], ...]:
        for pattern in patterns:
            if not set(pattern.groupindex) & set(IDENTITY_GROUPS):
                raise ValueError(f"{pattern.pattern!r} names none of the groups {', '.join(IDENTITY_GROUPS)}")
        return patterns

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.message_file_timezone)

    def rule_for_event(self, schema_type: str) -> FailureRule:
        return next((rule for rule in self.rules if rule.matches_event(schema_type)), self.unmatched)

    def rule_for_message(self, message: EngineMessage) -> FailureRule:
        text = f"{message.code or ''} {message.text}".strip()
        return next((rule for rule in self.rules if rule.matches_message(text)), self.unmatched)

    def rule_named(self, failure_class: str) -> FailureRule:
        every = (*self.rules, self.unmatched, self.job_failed)
        return next((rule for rule in every if rule.failure_class == failure_class), self.unmatched)

    def identity_in(self, text: str) -> dict[str, str]:
        """The document id, customer id and document type a message names, each from the first pattern finding it."""
        found: dict[str, str] = {}
        for pattern in self.message_identity_patterns:
            match = pattern.search(text)
            if match is None:
                continue
            for name, value in match.groupdict().items():
                if name in IDENTITY_GROUPS and value and name not in found:
                    found[name] = value
        return found


def load_config(settings: Settings | None = None) -> DeliveryExceptionsConfig:
    settings = settings or get_settings()
    path = settings.config_dir / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"delivery exceptions need their rule table at {path} (EXSTREAM_PUSH_CONFIG_DIR)")
    return DeliveryExceptionsConfig.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})


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
    """Engine messages may quote data: e-mail addresses and long numbers are blanked before they are stored."""
    return _LONG_NUMBER.sub("[number]", _EMAIL.sub("[e-mail]", text))[:_DETAIL_LENGTH]


def dedup_key(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


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


def is_failure(schema_type: str) -> bool:
    lowered = schema_type.lower()
    return lowered.endswith("-failed") or lowered == NDLV_SCHEMA_TYPE


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
    if not is_failure(schema_type):
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


# -- the ledger --------------------------------------------------------------------------------------------------


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _dialect(ledger: Ledger) -> Any:
    return postgresql if ledger.engine.dialect.name == "postgresql" else sqlite


def record_exceptions(ledger: Ledger, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert, ignoring keys already recorded; returns how many records are new."""
    unique = list({row["dedup_key"]: row for row in rows}.values())
    if not unique:
        return 0
    table: Table = DeliveryException.__table__  # type: ignore[attr-defined]
    statement = _dialect(ledger).insert(table).on_conflict_do_nothing()
    known = 0
    with ledger.engine.begin() as conn:
        for chunk in _chunks(unique):
            keys = [row["dedup_key"] for row in chunk]
            known += conn.scalar(select(func.count()).select_from(table).where(table.c.dedup_key.in_(keys))) or 0
            conn.execute(statement, list(chunk))
    return len(unique) - known


def document_exception_count(ledger: Ledger, job_id: str) -> int:
    with ledger.engine.connect() as conn:
        return (
            conn.scalar(
                select(func.count())
                .select_from(DeliveryException)
                .where(DeliveryException.job_id == job_id, DeliveryException.document_id.is_not(None))
            )
            or 0
        )


def unalerted_exceptions(ledger: Ledger) -> pd.DataFrame:
    """Every record of each (job, channel, failure class) that has records no operations push covered yet."""
    columns = ["dedup_key", "job_id", "channel", "failure_class", "customer_ref", "document_type", "next_action"]
    table = DeliveryException.__table__
    owed = (
        select(table.c.job_id, table.c.channel, table.c.failure_class)
        .where(table.c.alert_key.is_(None))
        .group_by(table.c.job_id, table.c.channel, table.c.failure_class)
    )
    frames = []
    with ledger.engine.connect() as conn:
        for job_id, channel, failure_class in conn.execute(owed).fetchall():
            result = conn.execute(
                select(*(table.c[name] for name in columns), table.c.occurred_at, table.c.alert_key)
                .where(
                    table.c.job_id == job_id,
                    table.c.channel == channel,
                    table.c.failure_class == failure_class,
                )
                .order_by(table.c.occurred_at, table.c.dedup_key)
            )
            frames.append(pd.DataFrame(result.fetchall(), columns=[*columns, "occurred_at", "alert_key"]))
    if not frames:
        return pd.DataFrame(columns=[*columns, "occurred_at", "alert_key"])
    return pd.concat(frames, ignore_index=True)


def mark_alerted(ledger: Ledger, alert_key: str, dedup_keys: Sequence[str]) -> int:
    table = DeliveryException.__table__
    marked = 0
    with ledger.engine.begin() as conn:
        for chunk in _chunks(list(dedup_keys)):
            result = conn.execute(
                update(table)
                .where(table.c.dedup_key.in_(chunk), table.c.alert_key.is_(None))
                .values(alert_key=alert_key)
            )
            marked += result.rowcount
    return marked


# -- the operator's commands -------------------------------------------------------------------------------------


def list_exceptions(ledger: Ledger, job_id: str | None = None) -> list[dict[str, Any]]:
    """Every exception record, grouped as operations are alerted: by job, channel and failure class."""
    table = DeliveryException.__table__
    statement = select(table).order_by(
        table.c.job_id, table.c.channel, table.c.failure_class, table.c.document_id, table.c.dedup_key
    )
    if job_id is not None:
        statement = statement.where(table.c.job_id == job_id)
    with ledger.engine.connect() as conn:
        return [dict(row) for row in conn.execute(statement).mappings()]


def _open_exceptions(ledger: Ledger, job_id: str) -> list[dict[str, Any]]:
    table = DeliveryException.__table__
    statement = (
        select(table)
        .where(table.c.job_id == job_id, table.c.state == DocumentState.OPEN.value)
        .order_by(table.c.document_id, table.c.dedup_key)
    )
    with ledger.engine.connect() as conn:
        return [dict(row) for row in conn.execute(statement).mappings()]


def _mark_reissue_requested(ledger: Ledger, dedup_keys: Sequence[str]) -> int:
    table = DeliveryException.__table__
    marked = 0
    with ledger.engine.begin() as conn:
        for chunk in _chunks(list(dedup_keys)):
            result = conn.execute(
                update(table)
                .where(table.c.dedup_key.in_(chunk), table.c.state == DocumentState.OPEN.value)
                .values(state=DocumentState.REISSUE_REQUESTED.value)
            )
            marked += result.rowcount
    return marked


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def request_reissue(
    ledger: Ledger, exstream: ExstreamConnection, job_id: str, *, as_of: datetime | None = None
) -> dict[str, Any]:
    """Ask Exstream to reissue a job's open exceptions and mark them ``reissue_requested``.

    A job whose failed documents are known gets exactly those posted to the reissue channel, since reprocessing it
    would send again to every customer it did reach; a job known only to have failed as a whole is reprocessed
    through the API. Either request is made once for the same content, so a repeated command asks nothing twice.
    """
    settings = get_settings()
    config = load_config(settings)
    as_of = as_of or datetime.now(UTC)
    records = _open_exceptions(ledger, job_id)
    result: dict[str, Any] = {"job_id": job_id, "action": "none", "documents": 0, "requested": False, "marked": 0}
    if not records:
        return result
    documents = [record for record in records if record["document_id"]]
    if documents:
        requested_at = _iso(as_of)
        rows = [
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
        requested = post_driver_file(exstream, config.reissue_channel, job_id, REISSUE_HEADER, rows)["posted"]
        result.update(action="reissue_documents", channel=config.reissue_channel, documents=len(documents))
    else:
        fingerprint = dedup_key(REPROCESSING, job_id, *sorted(record["dedup_key"] for record in records))
        requested = not ledger.already_posted(REPROCESSING, job_id, fingerprint)
        if requested:
            with exstream.get_client() as client:
                answer = client.reprocess_job(job_id)
            ledger.record_post_back(REPROCESSING, job_id, fingerprint, len(records), repr(answer)[:2000])
        result.update(action="reprocess_job")
    result.update(requested=requested, marked=_mark_reissue_requested(ledger, [r["dedup_key"] for r in records]))
    log.info("job %s: %s; %d record(s) now reissue_requested", job_id, result["action"], result["marked"])
    return result
