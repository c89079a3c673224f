"""Follow-ups: notify once, remind at offsets until an event closes the document, then hand it back to Exstream.

Policy change alerts (use case 3) and customer action prompts (use case 5) are one pattern with other numbers, so
they share everything here and differ only in their ``FollowUpRules``:

- a document is in scope when its manifest carries a deadline (and, for policies, ``RequiresAcknowledgement=Y``);
  records that do not are kept in ``rejected_record`` with the reason, so every record is accounted for;
- the first run that sees an open document sends the ``notice``; later runs send the latest reminder whose moment
  has come (``reminder+3d`` counts from the notice, ``reminder-7d`` from the deadline) and none that a customer
  could no longer act on — each stage goes into the idempotency key, so each is sent once, ever;
- the closing engagement event (``acknowledged``, ``action_completed``) ends the document's follow-up; anything
  still unsent for it is marked ``skipped``/``closed``;
- at the hand-back moment the document is posted to an Exstream batch-input channel (a formal letter, a printed
  reminder) once, recorded as a notification of its own stage so it is claimed before posting like a push;
- an action past its deadline expires and nothing more is sent.

Every decision is taken against the run's ``as_of``; apart from its default (now), the wall clock is read only for
the ledger's bookkeeping columns (``created_at``, ``updated_at``). Use-case ledger queries live here, as bulk
statements.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field, NegativeInt, NonNegativeInt, PositiveInt, field_validator
from sqlalchemy import and_, case, distinct, exists, func, select, update

from blocks.exstream import ExstreamConnection
from exstream_push.events import import_events
from exstream_push.ledger import Document, EngagementEvent, Ledger, Notification, RejectedRecord
from exstream_push.ledger.store import notification_rows, utcnow
from exstream_push.retrying import retry_if_it_can_succeed
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push.status import DocumentState, EngagementType, QuarantineReason, SkipReason, Status, UseCase
from exstream_push.tasks.extract import ManifestSource, fetch_job_manifests, job_id_for_file, rejected_rows, spool_dir
from exstream_push.tasks.post_back import post_driver_file
from exstream_push.tasks.summary import artifact_key
from exstream_push.zones import TimeZoneName

NOTICE = "notice"
REMINDER = "reminder"
UNSENT = (Status.PENDING.value, Status.DEFERRED.value)
_CHUNK = 2_000
_YES = frozenset({"y", "yes", "true", "1"})
_NO = frozenset({"n", "no", "false", "0"})
_DATE_ONLY = r"\d{4}-\d{2}-\d{2}"


# -- rules and configuration -------------------------------------------------------------------------------


class Attribute(NamedTuple):
    """A use-case manifest key: the stable column name we report it under, and the key's name in the manifest."""

    name: str
    key: str


@dataclass(frozen=True)
class HandBack:
    """When and where a document goes back to Exstream, and what that does to its follow-up."""

    stage: str
    channel: str
    days_before_deadline: int
    state: DocumentState
    closes: bool  # an escalation ends the follow-up; a print fallback leaves the last reminders to come
    at_column: str


@dataclass(frozen=True)
class FollowUpRules:
    """Everything that makes one follow-up use case differ from another."""

    use_case: str
    category: str
    deadline: Attribute
    attributes: tuple[Attribute, ...]  # reported in the hand-back file and the audit, in this order
    required_flag: Attribute | None  # a Y/N key that must be Y for the document to be in scope
    template_attribute: Attribute | None  # picks "{value}_{notice|reminder}" templates when they exist
    closing_event: EngagementType
    closed_state: DocumentState
    closed_at_column: str
    reminders_count_from_notice: bool  # otherwise from the deadline
    reminder_offsets_days: tuple[int, ...]
    hand_back: HandBack
    expires: bool
    deadline_timezone: str

    @property
    def extra_keys(self) -> tuple[str, ...]:
        """The manifest keys to extract; their values are also what the content guard keeps out of a push."""
        keys = [attribute.key for attribute in self.attributes]
        if self.required_flag is not None:
            keys.insert(0, self.required_flag.key)
        return tuple(keys)

    @property
    def active_states(self) -> tuple[str, ...]:
        """States still followed up: open, and handed back when the hand-back does not end the follow-up."""
        if self.hand_back.closes:
            return (DocumentState.OPEN.value,)
        return (DocumentState.OPEN.value, self.hand_back.state.value)


class _FollowUpConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    deadline_timezone: TimeZoneName = Field(
        "UTC", description="zone of deadlines given without one; a date means its end"
    )

    @field_validator("reminder_offsets_days", check_fields=False)
    @classmethod
    def _distinct_sorted(cls, offsets: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(offsets)) != len(offsets):
            raise ValueError("reminder offsets must be distinct")
        return tuple(sorted(offsets))


class PolicyChangeConfig(_FollowUpConfig):
    """``config/policy-change.yaml``."""

    requires_acknowledgement_key: str = "RequiresAcknowledgement"
    acknowledge_by_key: str = "AcknowledgeBy"
    reminder_offsets_days: tuple[PositiveInt, ...] = (3, 7)  # days after the first notice
    escalation_channel: str = "policy-ack-overdue"

    def rules(self) -> FollowUpRules:
        deadline = Attribute("acknowledge_by", self.acknowledge_by_key)
        return FollowUpRules(
            use_case=UseCase.POLICY_CHANGE.value,
            category="policies",
            deadline=deadline,
            attributes=(deadline,),
            required_flag=Attribute("requires_acknowledgement", self.requires_acknowledgement_key),
            template_attribute=None,
            closing_event=EngagementType.ACKNOWLEDGED,
            closed_state=DocumentState.ACKNOWLEDGED,
            closed_at_column="acknowledged_at",
            reminders_count_from_notice=True,
            reminder_offsets_days=self.reminder_offsets_days,
            hand_back=HandBack(
                stage="escalation",
                channel=self.escalation_channel,
                days_before_deadline=0,
                state=DocumentState.ESCALATED,
                closes=True,
                at_column="escalated_at",
            ),
            expires=False,
            deadline_timezone=self.deadline_timezone,
        )


class ActionRequiredConfig(_FollowUpConfig):
    """``config/action-required.yaml``."""

    action_type_key: str = "ActionType"
    action_deadline_key: str = "ActionDeadline"
    reminder_offsets_days: tuple[NegativeInt, ...] = (-7, -3, -1)  # days before the deadline
    print_fallback_days_before: NonNegativeInt = 2
    print_fallback_channel: str = "action-print-fallback"

    def rules(self) -> FollowUpRules:
        action_type = Attribute("action_type", self.action_type_key)
        deadline = Attribute("action_deadline", self.action_deadline_key)
        return FollowUpRules(
            use_case=UseCase.ACTION_REQUIRED.value,
            category="actions",
            deadline=deadline,
            attributes=(action_type, deadline),
            required_flag=None,
            template_attribute=action_type,
            closing_event=EngagementType.ACTION_COMPLETED,
            closed_state=DocumentState.ACTION_COMPLETED,
            closed_at_column="completed_at",
            reminders_count_from_notice=False,
            reminder_offsets_days=self.reminder_offsets_days,
            hand_back=HandBack(
                stage="print_fallback",
                channel=self.print_fallback_channel,
                days_before_deadline=self.print_fallback_days_before,
                state=DocumentState.PRINT_FALLBACK,
                closes=False,
                at_column="print_fallback_at",
            ),
            expires=True,
            deadline_timezone=self.deadline_timezone,
        )


CONFIG_MODELS: dict[str, type[PolicyChangeConfig] | type[ActionRequiredConfig]] = {
    UseCase.POLICY_CHANGE.value: PolicyChangeConfig,
    UseCase.ACTION_REQUIRED.value: ActionRequiredConfig,
}


def reminder_stage(offset_days: int) -> str:
    return f"{REMINDER}{offset_days:+d}d"


def load_rules(use_case: str, config_dir: Path | None = None) -> FollowUpRules:
    """The use case's rules from ``{config_dir}/{use_case}.yaml``; a missing file means the documented defaults."""
    model = CONFIG_MODELS[use_case]
    path = (config_dir or get_settings().config_dir) / f"{use_case}.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    return model.model_validate(raw or {}).rules()


def run_moment(as_of: datetime | None) -> datetime:
    """The one wall-clock read of a run: ``as_of`` defaults to now, and is kept in UTC so the ledger stores it so."""
    if as_of is None:
        return datetime.now(UTC)
    if as_of.tzinfo is None:
        raise ValueError(f"as_of needs a time zone: {as_of.isoformat()}")
    return as_of.astimezone(UTC)


def follow_up_run_name(use_case: str) -> str:
    """``policy-change-{job or manifest or 'ledger'}-{as_of}``: a run says what it took in and when it acted."""
    parameters = flow_run.parameters
    label = parameters.get("job_id") or (Path(parameters["manifest"]).name if parameters.get("manifest") else "ledger")
    as_of = parameters.get("as_of")
    if isinstance(as_of, str):  # a deployment's parameters arrive as JSON
        as_of = datetime.fromisoformat(as_of)
    moment = as_of.astimezone(UTC).strftime("%Y%m%dT%H%MZ") if isinstance(as_of, datetime) else "now"
    return f"{use_case}-{label}-{moment}"


def manifest_sources(
    manifest: str | None, job_id: str | None, exstream: ExstreamConnection, use_case: str
) -> list[ManifestSource]:
    """New input, if any: a manifest file, or every delivery file of an Exstream job; neither is a ledger-only run."""
    if manifest is not None:
        path = Path(manifest)
        return [ManifestSource(path=path, job_id=job_id or job_id_for_file(path), step_id="manifest")]
    if job_id is not None:
        return fetch_job_manifests(job_id, exstream, use_case)
    return []


def discard_manifest_spools(use_case: str, sources: Sequence[ManifestSource]) -> None:
    """Once every delivery file of the run is registered, its spooled copies and batches are no longer needed."""
    for job_id in {source.job_id for source in sources}:
        shutil.rmtree(spool_dir(get_settings(), use_case, job_id), ignore_errors=True)


# -- vectorised rules ------------------------------------------------------------------------------------------


def parse_deadlines(values: pd.Series, timezone: str) -> pd.Series:
    """Deadline moments in UTC, NaT where unreadable. A bare date means the end of that day in ``timezone``
    (so the deadline day is still on time); a date-time without a zone is read in ``timezone``."""
    zone = ZoneInfo(timezone)
    text = values.astype("string").str.strip()
    moments = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    date_only = text.str.fullmatch(_DATE_ONLY).fillna(False).astype(bool)
    if date_only.any():
        days = pd.to_datetime(text[date_only], format="%Y-%m-%d", errors="coerce") + pd.Timedelta(days=1)
        local = days.dt.tz_localize(zone, ambiguous="NaT", nonexistent="shift_forward")
        moments[date_only] = local.dt.tz_convert(UTC)
    others = text[~date_only & text.notna()]
    if len(others):
        moments[others.index] = pd.to_datetime([_moment(value, zone) for value in others], utc=True)
    return moments


def _moment(value: str, zone: ZoneInfo) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


def screen(records: pd.DataFrame, rules: FollowUpRules) -> pd.DataFrame:
    """``status`` and ``reason`` per record: both empty when it is in scope, otherwise why not."""
    status = pd.Series(None, index=records.index, dtype="object")
    reason = pd.Series(None, index=records.index, dtype="object")

    def reject(mask: pd.Series, new_status: Status, new_reason: str) -> None:
        mask = mask & status.isna()
        status[mask] = new_status.value
        reason[mask] = new_reason

    if rules.required_flag is not None:
        flag = records[rules.required_flag.key].astype("string").str.strip().str.lower()
        reject(flag.isna(), Status.QUARANTINED, f"{QuarantineReason.MISSING_KEY}:{rules.required_flag.key}")
        reject(
            ~flag.isin(_YES | _NO).fillna(False),
            Status.QUARANTINED,
            f"{QuarantineReason.INVALID_VALUE}:{rules.required_flag.key}",
        )
        reject(flag.isin(_NO).fillna(False), Status.SKIPPED, SkipReason.NOT_REQUIRED.value)
    for attribute in rules.attributes:
        reject(records[attribute.key].isna(), Status.QUARANTINED, f"{QuarantineReason.MISSING_KEY}:{attribute.key}")
    deadlines = parse_deadlines(records[rules.deadline.key], rules.deadline_timezone)
    reject(deadlines.isna(), Status.QUARANTINED, f"{QuarantineReason.INVALID_DATE}:{rules.deadline.key}")
    return pd.DataFrame({"status": status, "reason": reason})


def _template_stem(value: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", value.strip().lower()).strip("_")


def available_templates(use_case: str) -> set[str]:
    folder = get_settings().templates_dir / use_case
    return {path.name.split(".")[0] for path in folder.glob("*.j2")}


def _templates(kinds: pd.Series, documents: pd.DataFrame, rules: FollowUpRules) -> pd.Series:
    """``{action type}_{kind}`` where such a template exists (a sign-here prompt reads differently), else the kind."""
    if rules.template_attribute is None:
        return kinds
    available = available_templates(rules.use_case)
    specific = documents[rules.template_attribute.key].fillna("").map(_template_stem) + "_" + kinds
    return specific.where(specific.isin(available), kinds)


# -- ledger queries --------------------------------------------------------------------------------------------


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _utc(values: pd.Series | list[Any]) -> pd.Series:
    """Ledger date-times (and None) as a UTC datetime column, NaT where missing, to compare with ``as_of``."""
    return pd.to_datetime(pd.Series(values, dtype="object"), utc=True)


def _not_screened_out() -> Any:
    """A document whose first-seen record was kept out of the use case by ``screen_documents``."""
    document, rejected = Document.__table__, RejectedRecord.__table__
    return ~exists().where(
        rejected.c.use_case == document.c.use_case,
        rejected.c.job_id == document.c.job_id,
        rejected.c.source == document.c.step_id,
        rejected.c.position == document.c.position,
    )


SNAPSHOT_COLUMNS = [
    "id",
    "document_id",
    "job_id",
    "customer_id",
    "document_type",
    "locale",
    "ref",
    "attributes",
    "state",
]


def active_document_frames(ledger: Ledger, rules: FollowUpRules, batch_size: int) -> Iterator[pd.DataFrame]:
    """The use case's documents still followed up, streamed in batches (never the whole set in memory)."""
    document = Document.__table__
    statement = (
        select(*(document.c[name] for name in SNAPSHOT_COLUMNS))
        .where(document.c.use_case == rules.use_case, document.c.state.in_(rules.active_states), _not_screened_out())
        .order_by(document.c.id)
    )
    with ledger.engine.connect().execution_options(stream_results=True, yield_per=batch_size) as conn:
        for partition in conn.execute(statement).partitions(batch_size):
            yield pd.DataFrame(partition, columns=SNAPSHOT_COLUMNS)


def stage_history(ledger: Ledger, use_case: str, document_ids: Sequence[str]) -> pd.DataFrame:
    """Per (document, stage) already decided: when it was first decided, and how many of its rows are unsent."""
    table = Notification.__table__
    unsent = func.sum(case((table.c.status == Status.PENDING.value, 1), else_=0))
    rows: list[Any] = []
    with ledger.engine.connect() as conn:
        for chunk in _chunks(list(document_ids)):
            rows += conn.execute(
                select(table.c.document_id, table.c.stage, func.min(table.c.as_of), unsent)
                .where(table.c.use_case == use_case, table.c.document_id.in_(chunk))
                .group_by(table.c.document_id, table.c.stage)
            ).all()
    history = pd.DataFrame(rows, columns=["document_id", "stage", "first_as_of", "pending"])
    history["first_as_of"] = _utc(history["first_as_of"].tolist())
    return history


def closing_times(
    ledger: Ledger, rules: FollowUpRules, document_ids: Sequence[str], as_of: datetime | None = None
) -> pd.Series:
    """When each document's closing event first happened (up to ``as_of`` when given), by document id."""
    table = EngagementEvent.__table__
    conditions = [table.c.use_case == rules.use_case, table.c.type == rules.closing_event.value]
    if as_of is not None:
        conditions.append(table.c.occurred_at <= as_of)
    rows: list[Any] = []
    with ledger.engine.connect() as conn:
        for chunk in _chunks(list(document_ids)):
            rows += conn.execute(
                select(table.c.document_id, func.min(table.c.occurred_at))
                .where(*conditions, table.c.document_id.in_(chunk))
                .group_by(table.c.document_id)
            ).all()
    return pd.Series(_utc([at for _, at in rows]).to_numpy(), index=[d for d, _ in rows], dtype="datetime64[ns, UTC]")


def document_evidence(ledger: Ledger, rules: FollowUpRules, document_ids: Sequence[str]) -> pd.DataFrame:
    """Per document: first push that reached a device, devices reached, reminder stages sent, hand-back time."""
    table = Notification.__table__
    sent = table.c.status == Status.SENT.value
    pushed = and_(sent, table.c.stage != rules.hand_back.stage)
    statement_columns = (
        table.c.document_id,
        func.min(case((pushed, table.c.as_of))),
        func.count(distinct(case((pushed, table.c.device_id)))),
        func.count(distinct(case((and_(sent, table.c.stage.startswith(REMINDER)), table.c.stage)))),
        func.min(case((and_(sent, table.c.stage == rules.hand_back.stage), table.c.as_of))),
    )
    rows: list[Any] = []
    with ledger.engine.connect() as conn:
        for chunk in _chunks(list(document_ids)):
            rows += conn.execute(
                select(*statement_columns)
                .where(table.c.use_case == rules.use_case, table.c.document_id.in_(chunk))
                .group_by(table.c.document_id)
            ).all()
    columns = ["document_id", "first_notified_at", "devices_notified", "reminders_sent", "handed_back_at"]
    evidence = pd.DataFrame(rows, columns=columns)
    for column in ("first_notified_at", "handed_back_at"):
        evidence[column] = _utc(evidence[column].tolist())
    return (
        evidence.set_index("document_id")
        .reindex(list(document_ids))
        .assign(
            devices_notified=lambda frame: frame["devices_notified"].fillna(0).astype("int64"),
            reminders_sent=lambda frame: frame["reminders_sent"].fillna(0).astype("int64"),
        )
    )


def set_state(
    ledger: Ledger,
    use_case: str,
    document_ids: Sequence[str],
    state: DocumentState,
    from_states: Sequence[str],
    at: datetime,
) -> int:
    """Move documents to ``state`` in bulk, only from ``from_states``, so a closed document is never reopened."""
    table = Document.__table__
    changed = 0
    with ledger.engine.begin() as conn:
        for chunk in _chunks(sorted(set(document_ids))):
            changed += conn.execute(
                update(table)
                .where(table.c.use_case == use_case, table.c.document_id.in_(chunk), table.c.state.in_(from_states))
                .values(state=state.value, state_changed_at=at)
            ).rowcount
    return changed


def cancel_unsent(ledger: Ledger, use_case: str, document_ids: Sequence[str]) -> int:
    """Whatever is still owed to closed documents (left pending, deferred) is skipped as ``closed``, never sent."""
    table = Notification.__table__
    cancelled = 0
    with ledger.engine.begin() as conn:
        for chunk in _chunks(sorted(set(document_ids))):
            cancelled += conn.execute(
                update(table)
                .where(table.c.use_case == use_case, table.c.document_id.in_(chunk), table.c.status.in_(UNSENT))
                .values(status=Status.SKIPPED.value, reason=SkipReason.CLOSED.value, updated_at=utcnow())
            ).rowcount
    return cancelled


def attribute_frame(attributes: pd.Series, keys: Sequence[str]) -> pd.DataFrame:
    """``Document.attributes`` (the JSON of the use case's manifest keys) as one string column per key."""
    parsed = [json.loads(raw) if isinstance(raw, str) and raw else {} for raw in attributes]
    return pd.DataFrame(
        {key: [values.get(key) for values in parsed] for key in keys}, index=attributes.index, dtype="object"
    )


# -- tasks -----------------------------------------------------------------------------------------------------


@task(name="screen-documents", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def screen_documents(batch: Path, source: ManifestSource, rules: FollowUpRules) -> dict[str, int]:
    """Keep out of the follow-up, with the reason, the documents that lack its keys or do not need it."""
    records = pd.read_parquet(batch)
    verdict = screen(records, rules)
    out = records[verdict["status"].notna()]
    if len(out):
        ledger_for(get_settings()).record_rejected(
            rejected_rows(
                out,
                rules.use_case,
                source,
                verdict.loc[out.index, "status"].tolist(),
                verdict.loc[out.index, "reason"].tolist(),
            )
        )
    counts = Counter(verdict["status"].dropna())
    return {
        "in_scope": int(verdict["status"].isna().sum()),
        "quarantined": counts[Status.QUARANTINED.value],
        SkipReason.NOT_REQUIRED.value: counts[Status.SKIPPED.value],
    }


@task(name="import-engagement-events", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def import_engagement_events(path: str) -> dict[str, int]:
    """Store the events file once per event id, before the run decides anything from them."""
    report = import_events(ledger_for(get_settings()), Path(path))
    if report.errors:
        logger = get_run_logger()
        logger.warning("%s: %d line(s) skipped", path, len(report.errors))
        for line, reason in report.errors[:20]:
            logger.warning("%s:%d: %s", Path(path).name, line, reason)
    return {"events_stored": report.stored, "events_repeated": report.repeated, "events_rejected": len(report.errors)}


@dataclass
class Snapshot:
    """A run's working set, spooled: the documents still followed up when the run began, in batches."""

    folder: Path
    batches: list[Path]


def _snapshot_folder(use_case: str, as_of: datetime) -> Path:
    return get_settings().home / "spool" / use_case / f"follow-ups-{as_of:%Y%m%dT%H%M%S%fZ}"


@task(name="snapshot-active-documents", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def snapshot_active_documents(rules: FollowUpRules, as_of: datetime) -> Snapshot:
    """Spool the documents still followed up as Parquet batches, so each is decided once per run, in bulk."""
    settings = get_settings()
    folder = _snapshot_folder(rules.use_case, as_of)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    batches = []
    for number, frame in enumerate(active_document_frames(ledger_for(settings), rules, settings.batch_size), 1):
        path = folder / f"batch-{number:06d}.parquet"
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
        batches.append(path)
    get_run_logger().info("%s: %d batch(es) of active documents", rules.use_case, len(batches))
    return Snapshot(folder=folder, batches=batches)


def discard_snapshot(snapshot: Snapshot) -> None:
    shutil.rmtree(snapshot.folder, ignore_errors=True)


DUE_COLUMNS = [
    "document_id",
    "job_id",
    "customer_id",
    "document_type",
    "locale",
    "ref",
    "stage",
    "template",
    "priority",
]


@dataclass
class FollowUpPlan:
    """What one batch of documents is owed at ``as_of``."""

    due: pd.DataFrame  # one row per document owed a push: DUE_COLUMNS plus the use case's manifest keys
    closing: list[str]  # the closing event has happened
    expiring: list[str]  # past the deadline without it
    hand_back: pd.DataFrame  # due to go back to Exstream: document_id, job_id, customer_id

    def stage_counts(self) -> dict[str, int]:
        """Documents owed each stage in this batch (sent or not: segmentation decides who can be reached)."""
        return dict(Counter(self.due["stage"]))


@task(name="plan-follow-ups", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def plan_follow_ups(batch: Path, rules: FollowUpRules, as_of: datetime) -> FollowUpPlan:
    """Decide, for a batch at once: which documents close, expire, go back to Exstream, or are owed which push."""
    ledger = ledger_for(get_settings())
    documents = pd.read_parquet(batch)
    documents = documents.join(attribute_frame(documents["attributes"], rules.extra_keys))
    documents = documents[screen(documents, rules)["status"].isna()]
    ids = documents["document_id"].tolist()
    documents = documents.set_index("document_id", drop=False)
    deadline = parse_deadlines(documents[rules.deadline.key], rules.deadline_timezone)
    moment = pd.Timestamp(as_of)

    closed_at = closing_times(ledger, rules, ids, as_of).reindex(documents.index)
    closing = closed_at.notna()
    past_deadline = (deadline <= moment) & ~closing
    expiring = past_deadline if rules.expires else pd.Series(False, index=documents.index)
    hand_back_from = deadline - pd.Timedelta(days=rules.hand_back.days_before_deadline)
    hand_back = ~closing & ~expiring & (documents["state"] == DocumentState.OPEN.value) & (hand_back_from <= moment)

    history = stage_history(ledger, rules.use_case, ids)
    notices = history[history["stage"] == NOTICE].set_index("document_id")
    noticed_at = notices["first_as_of"].reindex(documents.index)
    anchor = noticed_at if rules.reminders_count_from_notice else deadline
    # The current stage: the latest reminder whose moment came after the notice, else the notice itself. It is
    # owed when nothing was decided for it yet, or when some of it is still pending (retries ran out last time).
    stage = pd.Series(NOTICE, index=documents.index, dtype="object")
    for offset in rules.reminder_offsets_days:  # ascending, so the latest reminder reached wins
        at = anchor + pd.Timedelta(days=offset)
        stage = stage.mask((at > noticed_at) & (at <= moment), reminder_stage(offset))
    decided = history.set_index(["document_id", "stage"])["pending"]
    pending = decided.reindex(pd.MultiIndex.from_arrays([documents.index, stage])).fillna(-1).to_numpy()
    owed = pd.Series((pending == -1) | (pending > 0), index=documents.index)
    due = documents[~closing & (deadline > moment) & owed].copy()
    due["stage"] = stage[due.index]
    kinds = pd.Series(REMINDER, index=due.index).where(due["stage"] != NOTICE, NOTICE)
    due["template"] = _templates(kinds, due, rules)
    last_reminder = reminder_stage(rules.reminder_offsets_days[-1]) if rules.reminder_offsets_days else None
    due["priority"] = pd.Series("normal", index=due.index).where(due["stage"] != last_reminder, "high")
    extra = list(rules.extra_keys)
    due[extra] = due[extra].fillna("")

    return FollowUpPlan(
        due=due[[*DUE_COLUMNS, *extra]].reset_index(drop=True),
        closing=documents.index[closing].tolist(),
        expiring=documents.index[expiring].tolist(),
        hand_back=documents.loc[hand_back, ["document_id", "job_id", "customer_id"]].reset_index(drop=True),
    )


@task(name="settle-documents", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def settle_documents(plan: FollowUpPlan, rules: FollowUpRules, as_of: datetime) -> dict[str, int]:
    """Close the documents whose event came, expire those past their deadline; cancel whatever they were owed."""
    ledger = ledger_for(get_settings())
    closed = set_state(ledger, rules.use_case, plan.closing, rules.closed_state, rules.active_states, as_of)
    expired = set_state(ledger, rules.use_case, plan.expiring, DocumentState.EXPIRED, rules.active_states, as_of)
    cancelled = cancel_unsent(ledger, rules.use_case, [*plan.closing, *plan.expiring])
    counts = {rules.closed_state.value: closed, "cancelled": cancelled}
    if rules.expires:
        counts[DocumentState.EXPIRED.value] = expired
    return counts


def hand_back_header(rules: FollowUpRules) -> list[str]:
    """The driver file's columns; the last one is the request's moment, which the post's digest leaves out."""
    return [
        "document_id",
        "customer_id",
        "document_type",
        "job_id",
        *(attribute.name for attribute in rules.attributes),
        "devices_notified",
        "reminders_sent",
        rules.hand_back.at_column,
    ]


@task(name="claim-hand-backs", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def claim_hand_backs(documents: pd.DataFrame, rules: FollowUpRules, as_of: datetime) -> dict[str, int]:
    """Queue the batch's documents for the hand-back in the ledger, as notifications of the hand-back stage with
    the channel in place of a device; ``post_hand_backs`` sends the whole run's queue as one file."""
    hand_back = rules.hand_back
    claims = documents.assign(stage=hand_back.stage, device_id=f"exstream:{hand_back.channel}")
    owed = ledger_for(get_settings()).claim(notification_rows(claims, rules.use_case, Status.PENDING, as_of=as_of))
    return {f"{hand_back.stage}_due": len(owed)}


def pending_hand_backs(ledger: Ledger, rules: FollowUpRules, batch_size: int) -> Iterator[pd.DataFrame]:
    """The hand-backs claimed and not yet posted, with their documents, streamed in document order."""
    notification, document = Notification.__table__, Document.__table__
    columns = ["document_id", "customer_id", "document_type", "job_id", "attributes"]
    statement = (
        select(*(document.c[name] for name in columns))
        .join(
            notification,
            and_(notification.c.use_case == document.c.use_case, notification.c.document_id == document.c.document_id),
        )
        .where(
            notification.c.use_case == rules.use_case,
            notification.c.stage == rules.hand_back.stage,
            notification.c.status == Status.PENDING.value,
        )
        .order_by(document.c.document_id)
    )
    with ledger.engine.connect().execution_options(stream_results=True, yield_per=batch_size) as conn:
        for partition in conn.execute(statement).partitions(batch_size):
            yield pd.DataFrame(partition, columns=columns)


def mark_hand_backs_sent(ledger: Ledger, rules: FollowUpRules, document_ids: Sequence[str]) -> None:
    """Only once Exstream accepted the file: until then the claims stay pending, to be posted again."""
    table = Notification.__table__
    with ledger.engine.begin() as conn:
        for chunk in _chunks(list(document_ids)):
            conn.execute(
                update(table)
                .where(
                    table.c.use_case == rules.use_case,
                    table.c.stage == rules.hand_back.stage,
                    table.c.status == Status.PENDING.value,
                    table.c.document_id.in_(chunk),
                )
                .values(status=Status.SENT.value, attempts=table.c.attempts + 1, updated_at=utcnow())
            )


def handed_back_but_open(ledger: Ledger, rules: FollowUpRules) -> list[str]:
    """Open documents whose hand-back went out: this run's, and any a crash left between post and state."""
    document, notification = Document.__table__, Notification.__table__
    sent = exists().where(
        notification.c.use_case == document.c.use_case,
        notification.c.document_id == document.c.document_id,
        notification.c.stage == rules.hand_back.stage,
        notification.c.status == Status.SENT.value,
    )
    with ledger.engine.connect() as conn:
        return list(
            conn.scalars(
                select(document.c.document_id).where(
                    document.c.use_case == rules.use_case, document.c.state == DocumentState.OPEN.value, sent
                )
            )
        )


@task(
    name="post-hand-backs-to-exstream",
    retries=3,
    retry_delay_seconds=10,
    retry_condition_fn=retry_if_it_can_succeed,
    cache_policy=NO_CACHE,
)
def post_hand_backs(rules: FollowUpRules, exstream: ExstreamConnection, as_of: datetime) -> dict[str, int]:
    """One CSV per run to the hand-back channel with every claimed document, then their state moves.

    A claim is marked sent only after Exstream accepted the file, and the state moves only after that, so a failed
    post is simply tried again (by the task's retry or the next run) and a closing event that comes first cancels
    the claim; an identical file is never posted twice (``post_driver_file``'s digest).
    """
    hand_back = rules.hand_back
    settings = get_settings()
    ledger = ledger_for(settings)
    requested_at = as_of.isoformat(timespec="seconds").replace("+00:00", "Z")
    posted: list[str] = []

    def lines() -> Iterator[list[Any]]:
        for frame in pending_hand_backs(ledger, rules, settings.batch_size):
            ids = frame["document_id"].tolist()
            evidence = document_evidence(ledger, rules, ids)
            attributes = attribute_frame(frame["attributes"], [attribute.key for attribute in rules.attributes])
            columns = [
                frame["document_id"],
                frame["customer_id"],
                frame["document_type"],
                frame["job_id"],
                *(attributes[attribute.key] for attribute in rules.attributes),
                evidence["devices_notified"],
                evidence["reminders_sent"],
            ]
            for values in zip(*columns, strict=True):
                yield [*values, requested_at]
            posted.extend(ids)

    run_label = f"{rules.use_case}-{hand_back.stage}-{as_of:%Y%m%dT%H%M%SZ}"
    post = post_driver_file(exstream, hand_back.channel, run_label, hand_back_header(rules), lines())
    mark_hand_backs_sent(ledger, rules, posted)
    moving = handed_back_but_open(ledger, rules)
    moved = set_state(ledger, rules.use_case, moving, hand_back.state, (DocumentState.OPEN.value,), as_of)
    if hand_back.closes:
        cancel_unsent(ledger, rules.use_case, moving)
    return {hand_back.state.value: moved, f"{hand_back.stage}_rows_posted": post["rows"] if post["posted"] else 0}


@task(name="publish-follow-up-summary", cache_policy=NO_CACHE)
def publish_follow_up_summary(rules: FollowUpRules, as_of: datetime, totals: dict[str, float]) -> list[dict[str, Any]]:
    """The run's counts as a table artifact: what came in, which stages were owed, what closed, what went back."""
    table = [{"count_of": name, "count": count} for name, count in sorted(totals.items())]
    create_table_artifact(
        key=artifact_key(rules.use_case, "run"),
        table=table,
        description=f"{rules.use_case} run at {as_of.isoformat()}",
    )
    return table


def completion_rates(ledger: Ledger, rules: FollowUpRules, batch_size: int) -> list[dict[str, Any]]:
    """Per value of the template attribute (the action type), then overall: how the in-scope documents stand and
    the share completed. Streamed, so the whole use case is never in memory."""
    if rules.template_attribute is None:
        raise ValueError(f"{rules.use_case} has no attribute to break completion down by")
    document, notification = Document.__table__, Notification.__table__
    handed_back = exists().where(
        notification.c.use_case == document.c.use_case,
        notification.c.document_id == document.c.document_id,
        notification.c.stage == rules.hand_back.stage,
        notification.c.status == Status.SENT.value,
    )
    statement = select(document.c.attributes, document.c.state, handed_back).where(
        document.c.use_case == rules.use_case, _not_screened_out()
    )
    key = rules.template_attribute.key
    states: Counter[tuple[str, str]] = Counter()
    handed: Counter[str] = Counter()
    with ledger.engine.connect().execution_options(stream_results=True, yield_per=batch_size) as conn:
        for partition in conn.execute(statement).partitions(batch_size):
            frame = pd.DataFrame(partition, columns=["attributes", "state", "handed_back"])
            values = attribute_frame(frame["attributes"], [key])[key].fillna("")
            states.update(zip(values, frame["state"], strict=True))
            handed.update(values[frame["handed_back"].astype(bool)])
    labels = sorted({value for value, _ in states})
    rows = [_completion_row(rules, label, [label], states, handed) for label in labels]
    return [*rows, _completion_row(rules, "(all)", labels, states, handed)]


def _completion_row(
    rules: FollowUpRules, label: str, values: list[str], states: Counter[tuple[str, str]], handed: Counter[str]
) -> dict[str, Any]:
    def count(*wanted: str) -> int:
        return sum(states[(value, state)] for value in values for state in wanted)

    documents = count(*(state.value for state in DocumentState))
    completed = count(rules.closed_state.value)
    return {
        rules.template_attribute.name if rules.template_attribute else "value": label,
        "documents": documents,
        "completed": completed,
        "in_progress": count(*rules.active_states),
        "expired": count(DocumentState.EXPIRED.value),
        f"{rules.hand_back.stage}_sent": sum(handed[value] for value in values),
        "completion_rate": f"{completed / documents:.1%}" if documents else "",
    }


@task(name="publish-completion-rates", cache_policy=NO_CACHE)
def publish_completion_rates(rules: FollowUpRules, as_of: datetime) -> list[dict[str, Any]]:
    """Completion rate by action type, over every document of the use case so far, as a table artifact."""
    settings = get_settings()
    table = completion_rates(ledger_for(settings), rules, settings.batch_size)
    create_table_artifact(
        key=artifact_key(rules.use_case, "completion-rate"),
        table=table,
        description=f"{rules.use_case}: completion by {rules.template_attribute.name} as of {as_of.isoformat()}"
        if rules.template_attribute
        else None,
    )
    return table
