"""The lifecycle's rules as pure functions on frames: which step is furthest, and the rows Exstream is sent."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from exstream_push.status import LIFECYCLE_ORDER, EngagementType

SENT = EngagementType.SENT.value
# A document at one of these steps has not been opened yet.
UNOPENED_STEPS = (SENT, EngagementType.DELIVERED.value)


def utc(moment: Any) -> datetime:
    """Aggregates come back without the column's type: SQLite gives text, PostgreSQL an aware datetime."""
    stamp = pd.Timestamp(moment)
    return (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")).to_pydatetime()


def iso(moment: Any) -> str:
    return utc(moment).isoformat(timespec="seconds").replace("+00:00", "Z")


def candidates(sent: pd.DataFrame, seen: pd.DataFrame) -> pd.DataFrame:
    """(use_case, document_id, step, at): first pushes as the ``sent`` step, beside the events seen."""
    return pd.concat([sent.assign(step=SENT), seen], ignore_index=True)


def furthest(candidates: pd.DataFrame) -> pd.DataFrame:
    """Each document's furthest candidate step (the latest among equals), with its ``rank``."""
    if candidates.empty:
        return candidates
    return (
        candidates.assign(rank=candidates["step"].map(LIFECYCLE_ORDER), at=candidates["at"].map(utc))
        .sort_values(["rank", "at"])
        .drop_duplicates(["use_case", "document_id"], keep="last")
    )


def forward(best: pd.DataFrame, current: pd.DataFrame) -> pd.DataFrame:
    """The furthest steps that move a document forward beyond the one recorded (``current``'s ``engagement``)."""
    if best.empty:
        return best
    merged = best.merge(current, on=["use_case", "document_id"], how="inner")
    return merged[merged["rank"] > merged["engagement"].map(LIFECYCLE_ORDER).fillna(-1)]


def status_rows(frame: pd.DataFrame, as_of: datetime) -> list[list[Any]]:
    """STATUS_HEADER rows for the documents moving forward."""
    if frame.empty:
        return []
    updated = iso(as_of)
    return [
        [document_id, customer_id, use_case, step, iso(at), updated]
        for document_id, customer_id, use_case, step, at in zip(
            frame["document_id"], frame["customer_id"], frame["use_case"], frame["step"], frame["at"], strict=True
        )
    ]


def steps_of(rows: list[list[Any]]) -> list[dict[str, Any]]:
    """STATUS_HEADER rows back as the steps the ledger records."""
    return [
        {"use_case": use_case, "document_id": document_id, "step": step, "at": utc(at)}
        for document_id, _customer, use_case, step, at, _updated in rows
    ]


def fallback_rows(unopened: pd.DataFrame, as_of: datetime, fallback_after: timedelta) -> list[list[Any]]:
    """FALLBACK_HEADER rows for the documents not opened within ``fallback_after``."""
    updated = iso(as_of)
    hours = int(fallback_after.total_seconds() // 3600)
    return [
        [document_id, customer_id, use_case, document_type, iso(sent_at), f"not_opened_within_{hours}h", updated]
        for document_id, customer_id, use_case, document_type, sent_at in unopened.itertuples(index=False, name=None)
    ]


def funnel_table(counts: pd.DataFrame) -> list[dict[str, Any]]:
    """Documents that reached at least each step, per use case, Exstream job and document type, from per-step
    counts; each step's share of the documents follows as ``<step>_pct`` (one decimal)."""
    result = []
    for (use_case, job_id, document_type), group in counts.groupby(["use_case", "job_id", "document_type"]):
        ranks = group["engagement"].map(LIFECYCLE_ORDER).fillna(-1)
        documents = int(group["documents"].sum())
        row: dict[str, Any] = {
            "use_case": use_case,
            "job_id": job_id,
            "document_type": document_type,
            "documents": documents,
        }
        for step in EngagementType:
            if step is EngagementType.ACTION_COMPLETED:
                continue
            label = "acknowledged_or_completed" if step is EngagementType.ACKNOWLEDGED else step.value
            reached = int(group.loc[ranks >= LIFECYCLE_ORDER[step], "documents"].sum())
            row[label] = reached
            row[f"{label}_pct"] = round(100.0 * reached / documents, 1) if documents else 0.0
        result.append(row)
    return result


def funnel_display(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The funnel as a person reads it: each step's count with its share, ``7 (70.0%)``."""
    shown = []
    for row in table:
        steps = {name: f"{value:,} ({row[f'{name}_pct']}%)" for name, value in row.items() if f"{name}_pct" in row}
        shown.append({**{name: row[name] for name in ("use_case", "job_id", "document_type", "documents")}, **steps})
    return shown
