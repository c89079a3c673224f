"""Payment reminders: the escalation ladder, payments, and the ledger reads that pick what is owed on a run.

A reminder document is registered once (from a manifest) and stays ``open`` until paid. Each run places every open
document on the ladder by its ``DueDate`` and the run's ``as_of``; a (document, stage) is decided once, ever: sent,
deferred to the end of quiet hours, capped or skipped. All reads and writes are bulk; customers are paged so one
customer's documents are always decided together (the frequency cap ranks them).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import yaml
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Select, bindparam, delete, func, select, update

from exstream_push.ledger import Ledger
from exstream_push.ledger.models import Device, Document, Notification
from exstream_push.ledger.store import notification_rows, utcnow
from exstream_push.retrying import retry_if_it_can_succeed
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push.status import DocumentState, QuarantineReason, SkipReason, Status
from exstream_push.tasks.extract import ExtractedManifest
from exstream_push.tasks.segment import category_allowed
from exstream_push.tasks.summary import artifact_key
from exstream_push.tasks.timing import FrequencyCap, QuietHours
from exstream_push.zones import TimeZoneName

# Manifest keys of a reminder document, kept in Document.attributes. None of them may appear in a push.
REMINDER_KEYS = ("DueDate", "AmountDue", "RiskSegment")
# Belongs in status.QuarantineReason (a DueDate missing or not an ISO date); kept here until it moves there.
PAYMENTS_HEADER = ("customer_id", "document_id", "paid_at")
UNKNOWN_SEGMENT = "unknown"
NO_STAGE = "-"
_CHUNK = 2_000


class ReminderStage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    days: int = Field(description="days after the due date the stage starts; negative: before it")
    template: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    priority: Literal["normal", "high"] = "normal"


class ReminderConfig(BaseModel):
    """``config/payment-reminders.yaml``: the escalation ladder, the frequency cap and quiet hours."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    due_date_timezone: TimeZoneName = Field("UTC", description="due dates are calendar days in this zone")
    stages: tuple[ReminderStage, ...]
    frequency_cap: FrequencyCap = FrequencyCap()
    quiet_hours: QuietHours = QuietHours()

    @field_validator("stages")
    @classmethod
    def _ladder(cls, stages: tuple[ReminderStage, ...]) -> tuple[ReminderStage, ...]:
        if not stages:
            raise ValueError("the ladder needs at least one stage")
        for what, values in (("name", [s.name for s in stages]), ("days", [s.days for s in stages])):
            if len(set(values)) != len(values):
                raise ValueError(f"two stages share a {what}")
        return tuple(sorted(stages, key=lambda stage: stage.days))

    def business_date(self, as_of: datetime) -> pd.Timestamp:
        """The calendar day ``as_of`` falls on where due dates are set."""
        return pd.Timestamp(as_of.astimezone(ZoneInfo(self.due_date_timezone)).date())


def load_reminder_config(path: Path | None = None) -> ReminderConfig:
    path = path or get_settings().config_dir / "payment-reminders.yaml"
    return ReminderConfig.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


@dataclass(frozen=True)
class CustomerPage:
    """Customers ``first <= customer_id < before`` (no upper bound when ``before`` is None)."""

    first: str
    before: str | None


# -- vectorised helpers ---------------------------------------------------------------------------------------------


def parse_attributes(attributes: pd.Series, index: pd.Index) -> pd.DataFrame:
    """Document.attributes (JSON objects) → one string column per reminder key, None where absent."""
    if attributes.empty:
        return pd.DataFrame({key: pd.Series(dtype=object) for key in REMINDER_KEYS}, index=index)
    lines = "\n".join(attributes.fillna("{}"))
    parsed = pd.read_json(io.StringIO(lines), lines=True, dtype=False).reindex(columns=list(REMINDER_KEYS))
    parsed = parsed.astype(object).where(parsed.notna(), None)
    parsed.index = index
    return parsed


def parse_due_dates(values: pd.Series) -> pd.Series:
    """ISO calendar dates (``YYYY-MM-DD``); anything else is NaT."""
    return pd.to_datetime(values, format="%Y-%m-%d", errors="coerce")


def stage_positions(due_dates: pd.Series, business_date: pd.Timestamp, config: ReminderConfig) -> np.ndarray:
    """Index into ``config.stages`` of the latest stage each document has reached, -1 for none (or no date)."""
    days_past_due = (business_date - due_dates).dt.days.to_numpy(dtype=float, na_value=-np.inf)
    starts = np.array([stage.days for stage in config.stages], dtype=float)
    return np.searchsorted(starts, days_past_due, side="right") - 1


def _ladder_columns(positions: np.ndarray, config: ReminderConfig) -> dict[str, np.ndarray]:
    return {
        "stage": np.array([s.name for s in config.stages], dtype=object)[positions],
        "template": np.array([s.template for s in config.stages], dtype=object)[positions],
        "priority": np.array([s.priority for s in config.stages], dtype=object)[positions],
    }


def _in_page(column: Any, page: CustomerPage) -> Any:
    return column >= page.first if page.before is None else (column >= page.first) & (column < page.before)


def customer_pages(ledger: Ledger, customer_ids: Select, size: int) -> list[CustomerPage]:
    """Pages of ``size`` distinct customers, by the first customer id of each; the database numbers them."""
    distinct = customer_ids.distinct().subquery()
    column = distinct.c[0]
    numbered = select(column.label("customer_id"), func.row_number().over(order_by=column).label("n")).subquery()
    starts_query = select(numbered.c.customer_id).where((numbered.c.n - 1) % size == 0).order_by(numbered.c.n)
    with ledger.engine.connect() as conn:
        starts = list(conn.scalars(starts_query))
    if not starts:
        return []
    return [CustomerPage(first, before) for first, before in zip(starts, [*starts[1:], None], strict=True)]


# -- registering documents and payments -----------------------------------------------------------------------------


@task(name="quarantine-invalid-due-dates", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def quarantine_invalid_due_dates(extracted: ExtractedManifest, use_case: str) -> int:
    """A document without a valid ISO ``DueDate`` cannot be placed on the ladder: it is quarantined with its
    position and line, and forgotten as a document, so a corrected manifest registers it afresh."""
    ledger = ledger_for(get_settings())
    source = extracted.source
    document = Document.__table__
    quarantined = 0
    for path in extracted.batches:
        frame = pd.read_parquet(path, columns=["position", "line", "document_id", "customer_id", "DueDate"])
        bad = frame[parse_due_dates(frame["DueDate"]).isna()]
        if bad.empty:
            continue
        now = utcnow()
        ledger.record_rejected(
            [
                {
                    "use_case": use_case,
                    "job_id": source.job_id,
                    "source": source.step_id,
                    "position": int(position),
                    "line": None if pd.isna(line) else int(line),
                    "status": Status.QUARANTINED,
                    "reason": QuarantineReason.INVALID_DUE_DATE.value,
                    "document_id": document_id,
                    "customer_id": customer_id,
                    "raw": json.dumps({"DueDate": due_date}),
                    "created_at": now,
                }
                for position, line, document_id, customer_id, due_date in bad.itertuples(index=False)
            ]
        )
        ids = bad["document_id"].tolist()
        with ledger.engine.begin() as conn:
            for start in range(0, len(ids), _CHUNK):
                conn.execute(
                    delete(document).where(
                        document.c.use_case == use_case,
                        document.c.job_id == source.job_id,
                        document.c.step_id == source.step_id,
                        document.c.document_id.in_(ids[start : start + _CHUNK]),
                    )
                )
        quarantined += len(bad)
    if quarantined:
        get_run_logger().warning(
            "job %s: %d document(s) without a valid DueDate quarantined", source.job_id, quarantined
        )
    return quarantined


def read_payments(path: Path) -> tuple[pd.DataFrame, list[tuple[int, str]]]:
    """Payments CSV ``customer_id,document_id,paid_at`` → (valid payments, [(line, reason)] of bad rows).

    ``paid_at`` is an ISO date or date-time; without a zone it is read as UTC. A row repeated keeps its earliest
    payment.
    """
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    missing = [name for name in PAYMENTS_HEADER if name not in frame.columns]
    if missing:
        raise ValueError(f"{path}: header lacks {', '.join(missing)}; expected {','.join(PAYMENTS_HEADER)}")
    frame = frame[list(PAYMENTS_HEADER)].apply(lambda column: column.str.strip())
    frame["line"] = frame.index + 2
    frame["paid_at"] = pd.to_datetime(frame["paid_at"], format="ISO8601", utc=True, errors="coerce")
    problems = pd.Series(None, index=frame.index, dtype=object)
    problems[frame["paid_at"].isna()] = "paid_at is not an ISO date or date-time"
    problems[frame["document_id"] == ""] = "document_id is empty"
    problems[frame["customer_id"] == ""] = "customer_id is empty"
    bad = problems.notna()
    errors = list(zip(frame.loc[bad, "line"].tolist(), problems[bad].tolist(), strict=True))
    valid = frame[~bad].sort_values("paid_at").drop_duplicates(["customer_id", "document_id"])
    return valid.reset_index(drop=True), errors


def _log_lines(file_name: str, problems: Sequence[tuple[int, str]], shown: int = 20) -> None:
    """The first problems by line, then a count: a bank's export may hold many payments that are not ours."""
    logger = get_run_logger()
    for line, reason in problems[:shown]:
        logger.warning("%s:%d: payment skipped: %s", file_name, line, reason)
    if len(problems) > shown:
        logger.warning("%s: %d more payment(s) skipped for the same reasons", file_name, len(problems) - shown)


@task(name="record-payments", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def record_payments(payments: Path, use_case: str, as_of: datetime) -> dict[str, int]:
    """Marks open documents paid (state ``paid``, one ``skipped``/``paid`` notification each) so no reminder follows.

    Only payments made by ``as_of`` count, so a replayed run decides as the original did. A payment must name the
    document's own customer; others are counted as unmatched and logged by line, never guessed at.
    """
    ledger = ledger_for(get_settings())
    logger = get_run_logger()
    valid, errors = read_payments(payments)
    _log_lines(payments.name, errors)
    later = valid["paid_at"] > as_of
    valid = valid[~later]

    document = Document.__table__
    ids = valid["document_id"].tolist()
    rows: list[Any] = []
    with ledger.engine.connect() as conn:
        for start in range(0, len(ids), _CHUNK):
            rows += conn.execute(
                select(document.c.document_id, document.c.customer_id, document.c.job_id, document.c.state).where(
                    document.c.use_case == use_case, document.c.document_id.in_(ids[start : start + _CHUNK])
                )
            ).fetchall()
    known = pd.DataFrame(rows, columns=["document_id", "known_customer", "job_id", "state"])
    matched = valid.merge(known, on="document_id")
    matched = matched[matched["known_customer"] == matched["customer_id"]]
    unmatched = valid[~valid["line"].isin(matched["line"])]
    _log_lines(payments.name, [(line, "matches no reminder document of that customer") for line in unmatched["line"]])
    newly_paid = matched[matched["state"] == DocumentState.OPEN]

    if len(newly_paid):
        statement = (
            update(document)
            .where(
                document.c.use_case == use_case,
                document.c.document_id == bindparam("b_document_id"),
                document.c.state == DocumentState.OPEN,
            )
            .values(state=DocumentState.PAID, state_changed_at=bindparam("b_paid_at"))
        )
        with ledger.engine.begin() as conn:
            conn.execute(
                statement,
                [
                    {"b_document_id": document_id, "b_paid_at": paid_at.to_pydatetime()}
                    for document_id, paid_at in zip(newly_paid["document_id"], newly_paid["paid_at"], strict=True)
                ],
            )
        ledger.record_final(
            notification_rows(newly_paid, use_case, Status.SKIPPED, reason=SkipReason.PAID, as_of=as_of)
        )
    counts = {
        "paid": len(newly_paid),
        "payments_already_recorded": len(matched) - len(newly_paid),
        "payments_unmatched": len(unmatched),
        "payments_after_as_of": int(later.sum()),
        "payments_invalid": len(errors),
    }
    logger.info("payments: %s", counts)
    return counts


# -- what a run owes: deferred and left-over sends ------------------------------------------------------------------


@task(name="release-deferred", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def release_deferred(use_case: str, as_of: datetime) -> int:
    """Deferred notifications whose quiet hours ended by ``as_of`` become ``pending`` (their key unchanged), so
    this run sends them, once. ``as_of`` moves to this run: that is when they go, which the cap counts."""
    table = Notification.__table__
    with ledger_for(get_settings()).engine.begin() as conn:
        released = conn.execute(
            update(table)
            .where(table.c.use_case == use_case, table.c.status == Status.DEFERRED, table.c.not_before <= as_of)
            .values(status=Status.PENDING, as_of=as_of, updated_at=utcnow())
        ).rowcount
    get_run_logger().info("%d deferred notification(s) released", released)
    return released


def _pending_customers(use_case: str) -> Select:
    table = Notification.__table__
    return select(table.c.customer_id).where(table.c.use_case == use_case, table.c.status == Status.PENDING)


@task(name="plan-owed-pages", cache_policy=NO_CACHE)
def owed_pages(use_case: str) -> list[CustomerPage]:
    """Pages of customers with notifications still ``pending``: released from quiet hours or left by a crash."""
    settings = get_settings()
    return customer_pages(ledger_for(settings), _pending_customers(use_case), settings.batch_size)


@task(name="owed-reminders", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def owed_reminders(page: CustomerPage, use_case: str, category: str, config: ReminderConfig) -> pd.DataFrame:
    """Pending notifications of a page of customers, ready to render; consent and payment are checked again.

    What changed since the decision wins: a paid or closed document is ``skipped`` (``paid``/``closed``), and a
    device now inactive, opted out or out of the category is ``skipped`` with that reason instead of sent.
    """
    ledger = ledger_for(get_settings())
    notification, document, device = Notification.__table__, Document.__table__, Device.__table__
    query = (
        select(
            notification.c.key,
            notification.c.document_id,
            notification.c.job_id,
            notification.c.customer_id,
            notification.c.device_id,
            notification.c.stage,
            document.c.state,
            document.c.document_type,
            document.c.locale,
            document.c.ref,
            document.c.attributes,
            device.c.token,
            device.c.locale.label("device_locale"),
            device.c.active,
            device.c.push_opt_in,
            device.c.categories,
        )
        .join(
            document,
            (document.c.use_case == notification.c.use_case) & (document.c.document_id == notification.c.document_id),
        )
        .join(device, device.c.device_id == notification.c.device_id, isouter=True)
        .where(
            notification.c.use_case == use_case,
            notification.c.status == Status.PENDING,
            _in_page(notification.c.customer_id, page),
        )
    )
    with ledger.engine.connect() as conn:
        result = conn.execute(query)
        owed = pd.DataFrame(result.fetchall(), columns=list(result.keys()))

    reasons = pd.Series(None, index=owed.index, dtype=object)
    no_device = ~owed["active"].fillna(False).astype(bool)
    opted_out = ~no_device & ~owed["push_opt_in"].fillna(False).astype(bool)
    category_out = ~no_device & ~opted_out & ~category_allowed(owed["categories"], category)
    reasons[category_out] = SkipReason.CATEGORY_OPTED_OUT.value
    reasons[opted_out] = SkipReason.OPTED_OUT.value
    reasons[no_device] = SkipReason.NO_DEVICE.value
    reasons[owed["state"] != DocumentState.OPEN] = SkipReason.CLOSED.value
    reasons[owed["state"] == DocumentState.PAID] = SkipReason.PAID.value
    dropped = reasons.notna()
    ledger.record_outcomes(
        [
            {"key": key, "status": Status.SKIPPED, "reason": reason, "attempts": 0}
            for key, reason in zip(owed.loc[dropped, "key"], reasons[dropped], strict=True)
        ]
    )

    ready = owed[~dropped].reset_index(drop=True)
    ready = pd.concat([ready, parse_attributes(ready.pop("attributes"), ready.index)], axis=1)
    # A stage since removed from the ladder still goes out once, by its own name's template.
    ready["template"] = ready["stage"].map({s.name: s.template for s in config.stages}).fillna(ready["stage"])
    ready["priority"] = ready["stage"].map({s.name: s.priority for s in config.stages}).fillna("normal")
    get_run_logger().info("owed: %d to send, %d skipped on a second look", len(ready), int(dropped.sum()))
    return ready.drop(columns=["state", "active", "push_opt_in", "categories"])


# -- what a run decides: documents reaching a stage -----------------------------------------------------------------


def _open_customers(use_case: str) -> Select:
    table = Document.__table__
    return select(table.c.customer_id).where(table.c.use_case == use_case, table.c.state == DocumentState.OPEN)


@task(name="plan-reminder-pages", cache_policy=NO_CACHE)
def reminder_pages(use_case: str) -> list[CustomerPage]:
    """Pages of ``batch_size`` customers with open reminder documents."""
    settings = get_settings()
    return customer_pages(ledger_for(settings), _open_customers(use_case), settings.batch_size)


def _open_documents(ledger: Ledger, use_case: str, page: CustomerPage) -> pd.DataFrame:
    table = Document.__table__
    query = select(
        table.c.document_id,
        table.c.job_id,
        table.c.customer_id,
        table.c.document_type,
        table.c.locale,
        table.c.ref,
        table.c.attributes,
    ).where(table.c.use_case == use_case, table.c.state == DocumentState.OPEN, _in_page(table.c.customer_id, page))
    with ledger.engine.connect() as conn:
        result = conn.execute(query)
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def _decided_stages(ledger: Ledger, use_case: str, page: CustomerPage) -> pd.DataFrame:
    table = Notification.__table__
    query = (
        select(table.c.document_id, table.c.stage)
        .where(table.c.use_case == use_case, table.c.stage != "", _in_page(table.c.customer_id, page))
        .distinct()
    )
    with ledger.engine.connect() as conn:
        return pd.DataFrame(conn.execute(query).fetchall(), columns=["document_id", "stage"])


@task(name="due-reminders", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def due_reminders(page: CustomerPage, use_case: str, config: ReminderConfig, as_of: datetime) -> pd.DataFrame:
    """One row per open document of the page whose stage at ``as_of`` has not been decided yet, with ``stage``,
    ``template`` and ``priority``; the most pressing first within each customer, for the frequency cap."""
    ledger = ledger_for(get_settings())
    documents = _open_documents(ledger, use_case, page)
    documents = pd.concat([documents, parse_attributes(documents.pop("attributes"), documents.index)], axis=1)
    due_dates = parse_due_dates(documents["DueDate"])
    positions = stage_positions(due_dates, config.business_date(as_of), config)
    reached = positions >= 0
    documents = documents[reached].assign(
        due_date=due_dates[reached], ladder_index=positions[reached], **_ladder_columns(positions[reached], config)
    )

    decided = _decided_stages(ledger, use_case, page)
    documents = documents.merge(decided, on=["document_id", "stage"], how="left", indicator=True)
    documents = documents[documents["_merge"] == "left_only"].drop(columns="_merge")
    documents = documents.sort_values(
        ["customer_id", "ladder_index", "due_date", "document_id"], ascending=[True, False, True, True], kind="stable"
    )
    get_run_logger().info("%d document(s) reached a stage not yet decided", len(documents))
    return documents.drop(columns=["due_date", "ladder_index"]).reset_index(drop=True)


# -- the run's table ------------------------------------------------------------------------------------------------


def outcome_counts(ledger: Ledger, use_case: str, as_of: datetime, stage_order: Sequence[str]) -> pd.DataFrame:
    """Notifications decided or sent by the run at ``as_of``: counts by stage × risk segment × status × reason,
    stages in ladder order (``-`` for notifications outside the ladder, e.g. a payment)."""
    notification, document = Notification.__table__, Document.__table__
    query = (
        select(notification.c.stage, notification.c.status, notification.c.reason, document.c.attributes)
        .join(
            document,
            (document.c.use_case == notification.c.use_case) & (document.c.document_id == notification.c.document_id),
        )
        .where(notification.c.use_case == use_case, notification.c.as_of == as_of)
    )
    keys = ["stage", "risk_segment", "status", "reason"]
    parts = []
    with ledger.engine.connect().execution_options(stream_results=True, yield_per=50_000) as conn:
        for rows in conn.execute(query).partitions():
            frame = pd.DataFrame(rows, columns=["stage", "status", "reason", "attributes"])
            segments = parse_attributes(frame.pop("attributes"), frame.index)["RiskSegment"]
            frame["risk_segment"] = segments.fillna(UNKNOWN_SEGMENT)
            frame["stage"] = frame["stage"].replace("", NO_STAGE)
            frame["reason"] = frame["reason"].fillna("")
            parts.append(frame.groupby(keys).size().rename("count"))
    if not parts:
        return pd.DataFrame(columns=[*keys, "count"])
    counts = pd.concat(parts).groupby(level=keys).sum().reset_index()
    ladder_order = {name: rank for rank, name in enumerate([NO_STAGE, *stage_order])}
    counts["rank"] = counts["stage"].map(ladder_order)
    return counts.sort_values(["rank", *keys]).drop(columns="rank").reset_index(drop=True)


@task(name="publish-reminder-summary", cache_policy=NO_CACHE)
def publish_reminder_summary(
    use_case: str, as_of: datetime, config: ReminderConfig, extra: dict[str, Any]
) -> list[dict[str, Any]]:
    """The run's counts as a table artifact, one key per use case so Prefect keeps the daily runs as versions."""
    stage_order = [stage.name for stage in config.stages]
    counts = outcome_counts(ledger_for(get_settings()), use_case, as_of, stage_order)
    table = [
        {key: (int(value) if key == "count" else value) for key, value in row.items()}
        for row in counts.to_dict(orient="records")
    ]
    description = f"{use_case} at {as_of.isoformat()}: notifications by stage, risk segment and status"
    if extra:
        description += "  \n" + ", ".join(f"{name}: {value}" for name, value in extra.items())
    create_table_artifact(key=artifact_key(use_case, "summary"), table=table, description=description)
    return table
