"""The payment-reminder rules as pure functions on frames: the ladder, payments matched to documents, the second
look at what is owed, and the run's counts. No I/O: the tasks read the ledger and hand these what it holds."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from exstream_push.status import DocumentState, SkipReason
from exstream_push.tasks.segment import category_allowed
from exstream_push.usecases.payment_reminders.config import REMINDER_KEYS, ReminderConfig

PAYMENTS_HEADER = ("customer_id", "document_id", "paid_at")
UNKNOWN_SEGMENT = "unknown"
NO_STAGE = "-"
OUTCOME_KEYS = ["stage", "risk_segment", "status", "reason"]


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


def due_at(documents: pd.DataFrame, decided: pd.DataFrame, config: ReminderConfig, as_of: datetime) -> pd.DataFrame:
    """One row per open document whose stage at ``as_of`` has not been decided yet, with ``stage``, ``template``
    and ``priority``; the most pressing first within each customer, for the frequency cap.

    ``documents`` are a page's open documents (with ``attributes``); ``decided`` its (document, stage) pairs."""
    documents = pd.concat([documents, parse_attributes(documents.pop("attributes"), documents.index)], axis=1)
    due_dates = parse_due_dates(documents["DueDate"])
    positions = stage_positions(due_dates, config.business_date(as_of), config)
    reached = positions >= 0
    documents = documents[reached].assign(
        due_date=due_dates[reached], ladder_index=positions[reached], **_ladder_columns(positions[reached], config)
    )
    documents = documents.merge(decided, on=["document_id", "stage"], how="left", indicator=True)
    documents = documents[documents["_merge"] == "left_only"].drop(columns="_merge")
    documents = documents.sort_values(
        ["customer_id", "ladder_index", "due_date", "document_id"], ascending=[True, False, True, True], kind="stable"
    )
    return documents.drop(columns=["due_date", "ladder_index"]).reset_index(drop=True)


def check_payments(frame: pd.DataFrame, source: str) -> tuple[pd.DataFrame, list[tuple[int, str]]]:
    """A payments table (strings, ``customer_id,document_id,paid_at``) → (valid payments, [(line, reason)]).

    ``paid_at`` is an ISO date or date-time; without a zone it is read as UTC. A row repeated keeps its earliest
    payment.
    """
    missing = [name for name in PAYMENTS_HEADER if name not in frame.columns]
    if missing:
        raise ValueError(f"{source}: header lacks {', '.join(missing)}; expected {','.join(PAYMENTS_HEADER)}")
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


@dataclass
class PaymentMatch:
    """Payments against the documents they name."""

    matched: pd.DataFrame  # the document's own customer paid: payment columns plus job_id and state
    unmatched: pd.DataFrame  # no such reminder document of that customer

    @property
    def newly_paid(self) -> pd.DataFrame:
        return self.matched[self.matched["state"] == DocumentState.OPEN]


def match_payments(valid: pd.DataFrame, known: pd.DataFrame) -> PaymentMatch:
    """A payment must name the document's own customer; any other is unmatched, never guessed at."""
    matched = valid.merge(known, on="document_id")
    matched = matched[matched["known_customer"] == matched["customer_id"]]
    return PaymentMatch(matched=matched, unmatched=valid[~valid["line"].isin(matched["line"])])


def second_look(owed: pd.DataFrame, category: str) -> pd.Series:
    """Why each pending notification is no longer to be sent (None: send it): what changed since it was decided
    wins — the document paid or closed, the device gone, opted out or out of the category."""
    reasons = pd.Series(None, index=owed.index, dtype=object)
    no_device = ~owed["active"].fillna(False).astype(bool)
    opted_out = ~no_device & ~owed["push_opt_in"].fillna(False).astype(bool)
    category_out = ~no_device & ~opted_out & ~category_allowed(owed["categories"], category)
    reasons[category_out] = SkipReason.CATEGORY_OPTED_OUT.value
    reasons[opted_out] = SkipReason.OPTED_OUT.value
    reasons[no_device] = SkipReason.NO_DEVICE.value
    reasons[owed["state"] != DocumentState.OPEN] = SkipReason.CLOSED.value
    reasons[owed["state"] == DocumentState.PAID] = SkipReason.PAID.value
    return reasons


def ready_to_render(owed: pd.DataFrame, config: ReminderConfig) -> pd.DataFrame:
    """Pending notifications still to send, with their keys' values, template and priority, ready to render."""
    ready = owed.reset_index(drop=True)
    ready = pd.concat([ready, parse_attributes(ready.pop("attributes"), ready.index)], axis=1)
    # A stage since removed from the ladder still goes out once, by its own name's template.
    ready["template"] = ready["stage"].map({s.name: s.template for s in config.stages}).fillna(ready["stage"])
    ready["priority"] = ready["stage"].map({s.name: s.priority for s in config.stages}).fillna("normal")
    return ready.drop(columns=["state", "active", "push_opt_in", "categories"])


def tally_outcomes(frame: pd.DataFrame) -> pd.Series:
    """Counts of a page of notifications (``stage``, ``status``, ``reason``, ``attributes``) by OUTCOME_KEYS."""
    segments = parse_attributes(frame.pop("attributes"), frame.index)["RiskSegment"]
    frame["risk_segment"] = segments.fillna(UNKNOWN_SEGMENT)
    frame["stage"] = frame["stage"].replace("", NO_STAGE)
    frame["reason"] = frame["reason"].fillna("")
    return frame.groupby(OUTCOME_KEYS).size().rename("count")


def outcome_table(tallies: Sequence[pd.Series], stage_order: Sequence[str]) -> pd.DataFrame:
    """The pages' tallies summed, stages in ladder order (``-`` first: notifications outside the ladder)."""
    if not tallies:
        return pd.DataFrame(columns=[*OUTCOME_KEYS, "count"])
    counts = pd.concat(tallies).groupby(level=OUTCOME_KEYS).sum().reset_index()
    ladder_order = {name: rank for rank, name in enumerate([NO_STAGE, *stage_order])}
    counts["rank"] = counts["stage"].map(ladder_order)
    return counts.sort_values(["rank", *OUTCOME_KEYS]).drop(columns="rank").reset_index(drop=True)
