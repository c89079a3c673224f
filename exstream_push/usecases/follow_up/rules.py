"""The follow-up rules as pure functions on frames: screening records, reading deadlines, planning a batch of
documents at ``as_of``, the hand-back file's rows and the completion table. No I/O: the tasks read the ledger and
hand these functions what it holds."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from exstream_push.status import DocumentState, QuarantineReason, SkipReason, Status
from exstream_push.usecases.follow_up.config import NOTICE, REMINDER, FollowUpRules, reminder_stage

_YES = frozenset({"y", "yes", "true", "1"})
_NO = frozenset({"n", "no", "false", "0"})
_DATE_ONLY = r"\d{4}-\d{2}-\d{2}"

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


def attribute_frame(attributes: pd.Series, keys: Sequence[str]) -> pd.DataFrame:
    """``Document.attributes`` (the JSON of the use case's manifest keys) as one string column per key."""
    parsed = [json.loads(raw) if isinstance(raw, str) and raw else {} for raw in attributes]
    return pd.DataFrame(
        {key: [values.get(key) for values in parsed] for key in keys}, index=attributes.index, dtype="object"
    )


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


def in_scope(snapshot: pd.DataFrame, rules: FollowUpRules) -> pd.DataFrame:
    """A snapshot batch's documents still in scope, their manifest keys as columns, indexed by document id."""
    documents = snapshot.join(attribute_frame(snapshot["attributes"], rules.extra_keys))
    documents = documents[screen(documents, rules)["status"].isna()]
    return documents.set_index("document_id", drop=False)


def template_stem(value: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", value.strip().lower()).strip("_")


def choose_templates(kinds: pd.Series, documents: pd.DataFrame, rules: FollowUpRules, available: set[str]) -> pd.Series:
    """``{action type}_{kind}`` where such a template exists (a sign-here prompt reads differently), else the kind."""
    if rules.template_attribute is None:
        return kinds
    specific = documents[rules.template_attribute.key].fillna("").map(template_stem) + "_" + kinds
    return specific.where(specific.isin(available), kinds)


@dataclass
class FollowUpPlan:
    """What one batch of documents is owed at ``as_of``. Each frame of pushes has DUE_COLUMNS plus the use case's
    manifest keys, one row per document."""

    # The first notice, sent as soon as the document is seen; and a stage decided before with rows still pending
    # (retries ran out, quiet hours ended): sent without deciding again.
    immediate: pd.DataFrame
    reminders: pd.DataFrame  # a reminder newly reached, most pressing first per customer: for cap and quiet hours
    closing: list[str]  # the closing event has happened
    expiring: list[str]  # past the deadline without it
    hand_back: pd.DataFrame  # due to go back to Exstream: document_id, job_id, customer_id

    def stage_counts(self) -> dict[str, int]:
        """Documents owed each stage in this batch (sent or not: segmentation decides who can be reached)."""
        return dict(Counter([*self.immediate["stage"], *self.reminders["stage"]]))


def plan(
    documents: pd.DataFrame,
    rules: FollowUpRules,
    as_of: datetime,
    closed_at: pd.Series,
    history: pd.DataFrame,
    templates: set[str],
) -> FollowUpPlan:
    """Decide, for a batch at once: which documents close, expire, go back to Exstream, or are owed which push.

    ``documents`` is ``in_scope``'s; ``closed_at`` the first closing event per document up to ``as_of``;
    ``history`` per (document, stage) decided its ``first_as_of`` and how many rows are still ``pending``;
    ``templates`` the use case's template names.
    """
    deadline = parse_deadlines(documents[rules.deadline.key], rules.deadline_timezone)
    moment = pd.Timestamp(as_of)

    closing = closed_at.reindex(documents.index).notna()
    past_deadline = (deadline <= moment) & ~closing
    expiring = past_deadline if rules.expires else pd.Series(False, index=documents.index)
    hand_back_from = deadline - pd.Timedelta(days=rules.hand_back.days_before_deadline)
    hand_back = ~closing & ~expiring & (documents["state"] == DocumentState.OPEN.value) & (hand_back_from <= moment)

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
    new = pd.Series(pending == -1, index=documents.index)
    owed = new | pd.Series(pending > 0, index=documents.index)
    due = documents[~closing & (deadline > moment) & owed].copy()
    due["stage"] = stage[due.index]
    kinds = pd.Series(REMINDER, index=due.index).where(due["stage"] != NOTICE, NOTICE)
    due["template"] = choose_templates(kinds, due, rules, templates)
    last_reminder = reminder_stage(rules.reminder_offsets_days[-1]) if rules.reminder_offsets_days else None
    due["priority"] = pd.Series("normal", index=due.index).where(due["stage"] != last_reminder, "high")
    extra = list(rules.extra_keys)
    due[extra] = due[extra].fillna("")
    due["deadline"] = deadline[due.index]

    reminding = (new[due.index] & (due["stage"] != NOTICE)).to_numpy()
    due = due.reset_index(drop=True)
    columns = [*DUE_COLUMNS, *extra]
    reminders = due[reminding].sort_values(["customer_id", "deadline", "document_id"], kind="stable")
    return FollowUpPlan(
        immediate=due.loc[~reminding, columns].reset_index(drop=True),
        reminders=reminders[columns].reset_index(drop=True),
        closing=documents.index[closing].tolist(),
        expiring=documents.index[expiring].tolist(),
        hand_back=documents.loc[hand_back, ["document_id", "job_id", "customer_id"]].reset_index(drop=True),
    )


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


def hand_back_lines(
    documents: pd.DataFrame, evidence: pd.DataFrame, rules: FollowUpRules, requested_at: str
) -> Iterator[list[Any]]:
    """The driver file's rows for a page of documents being handed back, with each one's evidence."""
    attributes = attribute_frame(documents["attributes"], [attribute.key for attribute in rules.attributes])
    columns = [
        documents["document_id"],
        documents["customer_id"],
        documents["document_type"],
        documents["job_id"],
        *(attributes[attribute.key] for attribute in rules.attributes),
        evidence["devices_notified"],
        evidence["reminders_sent"],
    ]
    for values in zip(*columns, strict=True):
        yield [*values, requested_at]


@dataclass
class Standing:
    """How the use case's documents stand, counted by value of the template attribute (the action type)."""

    states: Counter[tuple[str, str]]
    handed: Counter[str]

    def add(self, frame: pd.DataFrame, key: str) -> None:
        """Count a page of ``attributes``, ``state`` and ``handed_back``."""
        values = attribute_frame(frame["attributes"], [key])[key].fillna("")
        self.states.update(zip(values, frame["state"], strict=True))
        self.handed.update(values[frame["handed_back"].astype(bool)])


def completion_table(rules: FollowUpRules, standing: Standing) -> list[dict[str, Any]]:
    """Per value of the template attribute, then overall: how the documents stand and the share completed."""
    labels = sorted({value for value, _ in standing.states})
    rows = [_completion_row(rules, label, [label], standing) for label in labels]
    return [*rows, _completion_row(rules, "(all)", labels, standing)]


def _completion_row(rules: FollowUpRules, label: str, values: list[str], standing: Standing) -> dict[str, Any]:
    def count(*wanted: str) -> int:
        return sum(standing.states[(value, state)] for value in values for state in wanted)

    documents = count(*(state.value for state in DocumentState))
    completed = count(rules.closed_state.value)
    return {
        rules.template_attribute.name if rules.template_attribute else "value": label,
        "documents": documents,
        "completed": completed,
        "in_progress": count(*rules.active_states),
        "expired": count(DocumentState.EXPIRED.value),
        f"{rules.hand_back.stage}_sent": sum(standing.handed[value] for value in values),
        "completion_rate": f"{completed / documents:.1%}" if documents else "",
    }
