"""Audit export: one row per document, the evidence a compliance officer asks for.

A follow-up use case (policy change, action required) gets its own columns: when the customer was first reached
and on how many devices, how many reminders went out, when the document was acknowledged or completed, when it
went back to Exstream (formal letter, printed reminder) or expired, and where it stands; documents kept out of the
use case at registration are listed too, with their reason. Every other use case, and ``all`` of them, is folded
from the evidence log (``ledger/evidence.py``): when each document was generated, first notified, on how many
devices, reminded, failed, delivered, opened, accessed, acknowledged, completed, handed back, expired.

Written batch by batch (CSV, Parquet or JSON Lines), never held whole, and beside it ``<file>.head``: the evidence
log's head digest when the export began (Parquet also carries it in its metadata), so the file can be tied to the
chain ``audit verify`` checks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from exstream_push.csvfiles import CsvWriter
from exstream_push.ledger import Ledger
from exstream_push.ledger.evidence import EXPORT_COLUMNS
from exstream_push.settings import get_settings
from exstream_push.status import DocumentState
from exstream_push.usecases.follow_up.config import REMINDER, FollowUpRules, load_rules
from exstream_push.usecases.follow_up.rules import attribute_frame
from exstream_push.usecases.registry import USE_CASES

FORMATS = ("csv", "parquet", "jsonl")
ALL = "all"
"""``--use-case all``: every use case's documents, from the evidence log."""
HEAD_METADATA = b"exstream_push.evidence_head"
_TIMESTAMP = pa.timestamp("us", tz="UTC")
_TEXTS = ("use_case", "document_id", "customer_id", "job_id")
_COUNTS = ("devices_notified", "pushes_sent", "reminders_sent", "failures", "evidence_records")
EVIDENCE_SCHEMA = pa.schema(
    [
        pa.field(name, pa.string(), nullable=name != "document_id")
        if name in _TEXTS
        else pa.field(name, pa.int64(), nullable=False)
        if name in _COUNTS
        else pa.field(name, _TIMESTAMP)
        for name in EXPORT_COLUMNS
    ]
)
"""The evidence export's columns, in order (``ledger.evidence.EXPORT_COLUMNS``, typed)."""


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


def audit_frames(
    ledger: Ledger,
    rules: FollowUpRules,
    batch_size: int,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[pd.DataFrame]:
    """The export's rows, a batch at a time, with three bulk reads per batch whatever its size."""
    schema = audit_schema(rules)
    for page in ledger.audit.document_pages(rules.use_case, batch_size, since, until):
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


def evidence_frames(
    ledger: Ledger, use_case: str, batch_size: int, since: datetime | None, until: datetime | None
) -> Iterator[pd.DataFrame]:
    """One row per document of the evidence log (EVIDENCE_SCHEMA), folded by the database, a batch at a time."""
    for page in ledger.evidence_documents(None if use_case == ALL else use_case, since, until, batch_size):
        for field in EVIDENCE_SCHEMA:
            if field.type == _TIMESTAMP:
                page[field.name] = pd.to_datetime(page[field.name], utc=True)
        yield page


def _csv_value(value: Any) -> Any:
    if value is None or value is pd.NaT or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


def _json_value(value: Any) -> Any:
    if value is None or value is pd.NaT or (isinstance(value, float) and pd.isna(value)):
        return None
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value.item() if hasattr(value, "item") else value


def _write(fmt: str, path: Path, schema: pa.Schema, frames: Iterator[pd.DataFrame], head: str) -> int:
    written = 0
    if fmt == "parquet":
        with pq.ParquetWriter(path, schema.with_metadata({HEAD_METADATA: head.encode()})) as writer:
            for frame in frames:
                writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
                written += len(frame)
        return written
    with path.open("w", newline="", encoding="utf-8") as handle:
        write_row: Callable[[tuple[Any, ...]], None]
        if fmt == "csv":
            writer = CsvWriter(handle)
            writer.writerow(schema.names)

            def write_row(row: tuple[Any, ...]) -> None:
                writer.writerow([_csv_value(value) for value in row])
        else:

            def write_row(row: tuple[Any, ...]) -> None:
                record = {name: _json_value(value) for name, value in zip(schema.names, row, strict=True)}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")

        for frame in frames:
            for row in frame.itertuples(index=False, name=None):
                write_row(row)
            written += len(frame)
    return written


def head_path(out_path: Path) -> Path:
    """Where an export's evidence head is written: ``<file>.head``."""
    return out_path.with_name(f"{out_path.name}.head")


def export_audit(
    ledger: Ledger,
    use_case: str,
    fmt: str,
    out_path: Path,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """Write the use case's audit (``all``: every use case's) to ``out_path``; returns the rows written.

    ``since``/``until``: only documents that entered the ledger in [since, until). The file and its ``.head``
    appear complete or not at all: each is written beside its target, then renamed over it.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    settings = get_settings()
    head = ledger.evidence_head()
    entry = USE_CASES.get(use_case)
    if entry is not None and entry.audit_export:
        rules = load_rules(use_case, settings.config_dir)
        schema = audit_schema(rules)
        frames = audit_frames(ledger, rules, settings.batch_size, since, until)
    elif entry is not None or use_case == ALL:
        schema, frames = EVIDENCE_SCHEMA, evidence_frames(ledger, use_case, settings.batch_size, since, until)
    else:
        raise ValueError(f"use case must be {ALL} or one of {', '.join(USE_CASES)}, not {use_case!r}")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(f".{out_path.name}.partial")
    partial_head = out_path.with_name(f".{out_path.name}.head.partial")
    try:
        written = _write(fmt, partial, schema, frames, head)
        partial_head.write_text(
            json.dumps({"evidence_head": head, "use_case": use_case, "rows": written}) + "\n", encoding="utf-8"
        )
        os.replace(partial, out_path)
        os.replace(partial_head, head_path(out_path))
    finally:
        partial.unlink(missing_ok=True)
        partial_head.unlink(missing_ok=True)
    return written
