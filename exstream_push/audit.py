"""Audit export: one row per document of a follow-up use case, the evidence a compliance officer asks for.

When the customer was first reached and on how many devices, how many reminders went out, when the document was
acknowledged or completed, when it went back to Exstream (formal letter, printed reminder) or expired, and where it
stands. Documents kept out of the use case at registration are listed too, with their reason, so the export
accounts for every document the use case received. Written batch by batch (CSV or Parquet), never held whole.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from exstream_push.csvfiles import CsvWriter
from exstream_push.ledger import Ledger
from exstream_push.settings import get_settings
from exstream_push.status import DocumentState
from exstream_push.usecases.follow_up.config import REMINDER, FollowUpRules, load_rules
from exstream_push.usecases.follow_up.rules import attribute_frame

FORMATS = ("csv", "parquet")
_TIMESTAMP = pa.timestamp("us", tz="UTC")


def audit_schema(rules: FollowUpRules) -> pa.Schema:
    """The export's columns, in order: the same in both formats and for every run."""
    fields = [
        pa.field("document_id", pa.string(), nullable=False),
        pa.field("customer_id", pa.string(), nullable=False),
        pa.field("document_type", pa.string()),
        pa.field("job_id", pa.string()),
        *(pa.field(attribute.name, pa.string()) for attribute in rules.attributes),
        pa.field("first_notified_at", _TIMESTAMP),
        pa.field("devices_notified", pa.int64(), nullable=False),
        pa.field("reminders_sent", pa.int64(), nullable=False),
        pa.field(rules.closed_at_column, _TIMESTAMP),
        pa.field(rules.hand_back.at_column, _TIMESTAMP),
        *([pa.field("expired_at", _TIMESTAMP)] if rules.expires else []),
        pa.field("state", pa.string(), nullable=False),
        pa.field("state_changed_at", _TIMESTAMP),
        pa.field("reason", pa.string()),
    ]
    return pa.schema(fields)


def audit_frames(ledger: Ledger, rules: FollowUpRules, batch_size: int) -> Iterator[pd.DataFrame]:
    """The export's rows, a batch at a time, with three bulk reads per batch whatever its size."""
    schema = audit_schema(rules)
    for page in ledger.audit.document_pages(rules.use_case, batch_size):
        ids = page["document_id"].tolist()
        evidence = ledger.follow_ups.evidence(rules.use_case, rules.hand_back.stage, REMINDER, ids)
        closed_at = ledger.follow_ups.closing_times(rules.use_case, rules.closing_event.value, ids).reindex(ids)
        attributes = attribute_frame(page["attributes"], [attribute.key for attribute in rules.attributes])
        state_changed_at = pd.to_datetime(page["state_changed_at"], utc=True)
        rows = {
            "document_id": page["document_id"],
            "customer_id": page["customer_id"],
            "document_type": page["document_type"],
            "job_id": page["job_id"],
            **{attribute.name: attributes[attribute.key] for attribute in rules.attributes},
            "first_notified_at": evidence["first_notified_at"].to_numpy(),
            "devices_notified": evidence["devices_notified"].to_numpy(),
            "reminders_sent": evidence["reminders_sent"].to_numpy(),
            rules.closed_at_column: closed_at.to_numpy(),
            rules.hand_back.at_column: evidence["handed_back_at"].to_numpy(),
            "expired_at": state_changed_at.where(page["state"] == DocumentState.EXPIRED.value),
            "state": page["rejected_status"].fillna(page["state"]),
            "state_changed_at": state_changed_at,
            "reason": page["rejected_reason"],
        }
        yield pd.DataFrame({name: rows[name] for name in schema.names})


def _csv_value(value: Any) -> Any:
    if value is None or value is pd.NaT or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


def export_audit(ledger: Ledger, use_case: str, fmt: str, out_path: Path) -> int:
    """Write the use case's audit to ``out_path`` as CSV or Parquet; returns the rows written.

    The file appears complete or not at all: it is written beside the target, then renamed over it.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    settings = get_settings()
    rules = load_rules(use_case, settings.config_dir)
    schema = audit_schema(rules)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(f".{out_path.name}.partial")
    written = 0
    try:
        if fmt == "csv":
            with partial.open("w", newline="", encoding="utf-8") as handle:
                writer = CsvWriter(handle)
                writer.writerow(schema.names)
                for frame in audit_frames(ledger, rules, settings.batch_size):
                    for row in frame.itertuples(index=False, name=None):
                        writer.writerow([_csv_value(value) for value in row])
                    written += len(frame)
        else:
            with pq.ParquetWriter(partial, schema) as writer:
                for frame in audit_frames(ledger, rules, settings.batch_size):
                    writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
                    written += len(frame)
        os.replace(partial, out_path)
    finally:
        partial.unlink(missing_ok=True)
    return written
