"""The audit export: one correct row per document of a follow-up use case, identical in CSV and Parquet.

Small scenarios are run through the flows at fixed moments; the expected rows are spelled out from the scenario
(who was reachable, who acknowledged or completed when), not read back from the ledger.
"""

from __future__ import annotations

import csv
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from exstream_push.audit import export_audit
from exstream_push.cli import main
from exstream_push.flows.action_required import action_required
from exstream_push.flows.policy_change import policy_change
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from tests.test_action_required import DEADLINE, action_record, completion
from tests.test_action_required import document_id as action_document_id
from tests.test_action_required import group as action_group
from tests.test_action_required import out_of_scope as action_out_of_scope
from tests.test_policy_change import (
    ACKNOWLEDGE_BY,
    T0,
    acknowledgement,
    customer_devices,
    eligible_devices,
    group,
    iso,
    out_of_scope,
    policy_record,
    write_devices,
    write_events,
    write_manifest,
)


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return {row["document_id"]: row for row in csv.DictReader(handle)}


def read_parquet_as_text(path: Path) -> dict[str, dict[str, str]]:
    """The Parquet rows written the way the CSV writes them, so both formats compare to one expectation."""

    def text(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, datetime):
            return iso(value)
        return str(value)

    rows = pq.read_table(path).to_pylist()
    return {row["document_id"]: {name: text(value) for name, value in row.items()} for row in rows}


def moment(value: datetime | None) -> str:
    return iso(value) if value else ""


def test_policy_change_audit_has_one_correct_row_per_document(
    prefect_harness: None,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    fcm: Any,
    exstream: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("EXSTREAM_PUSH_DATABASE_URL", database_url)
    monkeypatch.setenv("EXSTREAM_PUSH_BATCH_SIZE", "7")  # the export pages through several batches
    job = "POL-AUDIT"
    numbers = list(range(1, 61))
    write_manifest(tmp_path / "manifest.xml", (policy_record(n, job) for n in numbers))
    write_devices(tmp_path / "devices.csv", (d for n in numbers for d in customer_devices(n, "policies")))
    assert main(["devices", "import", str(tmp_path / "devices.csv")]) == 0
    in_scope = [n for n in numbers if out_of_scope(n) is None]
    acknowledged_at = {"ack_early": T0 + timedelta(days=2), "ack_late": T0 + timedelta(days=5)}
    write_events(
        tmp_path / "early.jsonl",
        [acknowledgement(n, job, acknowledged_at["ack_early"]) for n in in_scope if group(n) == "ack_early"],
    )
    write_events(
        tmp_path / "late.jsonl",
        [acknowledgement(n, job, acknowledged_at["ack_late"]) for n in in_scope if group(n) == "ack_late"],
    )

    policy_change(manifest=str(tmp_path / "manifest.xml"), job_id=job, as_of=T0)
    policy_change(events=str(tmp_path / "early.jsonl"), as_of=T0 + timedelta(days=3))
    policy_change(events=str(tmp_path / "late.jsonl"), as_of=T0 + timedelta(days=7))
    policy_change(as_of=T0 + timedelta(days=14))

    capsys.readouterr()
    for fmt in ("csv", "parquet"):
        assert (
            main(
                ["audit", "export", "--use-case", "policy-change", "--format", fmt, "--out", str(tmp_path / f"a.{fmt}")]
            )
            == 0
        )
        out = tmp_path / f"a.{fmt}"
        assert (
            capsys.readouterr().out.strip() == f"wrote {len(numbers)} row(s) to {out}, the evidence head to {out}.head"
        )
    exported_csv, exported_parquet = read_csv(tmp_path / "a.csv"), read_parquet_as_text(tmp_path / "a.parquet")

    header = [
        "document_id",
        "customer_id",
        "document_type",
        "job_id",
        "acknowledge_by",
        "first_notified_at",
        "devices_notified",
        "reminders_sent",
        "acknowledged_at",
        "escalated_at",
        "state",
        "state_changed_at",
        "reason",
    ]
    assert list(next(iter(exported_csv.values()))) == header
    assert pq.read_schema(tmp_path / "a.parquet").names == header
    assert pq.read_schema(tmp_path / "a.parquet").field("first_notified_at").type == pa.timestamp("us", tz="UTC")
    assert pq.read_schema(tmp_path / "a.parquet").field("reminders_sent").type == pa.int64()

    expected: dict[str, dict[str, str]] = {}
    for number in numbers:
        record = policy_record(number, job)
        reachable = eligible_devices(number, "policies")
        row = {
            "document_id": record["DocumentId"],
            "customer_id": record["CustomerId"],
            "document_type": record["DocumentType"],
            "job_id": job,
            "acknowledge_by": record["AcknowledgeBy"] or "",
            "first_notified_at": "",
            "devices_notified": "0",
            "reminders_sent": "0",
            "acknowledged_at": "",
            "escalated_at": "",
            "state": "",
            "state_changed_at": "",
            "reason": out_of_scope(number) or "",
        }
        if out_of_scope(number):
            row["state"] = "skipped" if out_of_scope(number) == "not_required" else "quarantined"
        else:
            kind = group(number)
            reminders = {"ack_early": 0, "ack_late": 1, "never": 2}[kind]
            closed = {"ack_early": T0 + timedelta(days=3), "ack_late": T0 + timedelta(days=7)}
            row |= {
                "first_notified_at": moment(T0 if reachable else None),
                "devices_notified": str(len(reachable)),
                "reminders_sent": str(reminders if reachable else 0),
                "acknowledged_at": moment(acknowledged_at.get(kind)),
                "escalated_at": moment(T0 + timedelta(days=14) if kind == "never" else None),
                "state": "escalated" if kind == "never" else "acknowledged",
                "state_changed_at": moment(closed.get(kind, T0 + timedelta(days=14))),
            }
        expected[row["document_id"]] = row
    assert exported_csv == expected
    assert exported_parquet == expected
    assert {row["acknowledge_by"] for row in expected.values()} == {ACKNOWLEDGE_BY, "14/12/2026", ""}


def test_action_required_audit_and_an_unknown_format(
    prefect_harness: None, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, fcm: Any, exstream: Any, tmp_path: Path
) -> None:
    monkeypatch.setenv("EXSTREAM_PUSH_BATCH_SIZE", "9")
    numbers = list(range(1, 41))
    write_manifest(tmp_path / "manifest.xml", (action_record(n) for n in numbers))
    write_devices(tmp_path / "devices.csv", (d for n in numbers for d in customer_devices(n, "actions")))
    assert main(["devices", "import", str(tmp_path / "devices.csv")]) == 0
    in_scope = [n for n in numbers if not action_out_of_scope(n)]
    completed_at = {
        "early": "2026-12-05T10:00:00Z",
        "after_first_reminder": "2026-12-16T08:00:00Z",
        "after_print": "2026-12-19T12:00:00Z",
    }
    for name, when in completed_at.items():
        write_events(tmp_path / f"{name}.jsonl", [completion(n, when) for n in in_scope if action_group(n) == name])

    def run(when: str, **inputs: str) -> None:
        action_required(as_of=datetime.fromisoformat(when), **inputs)

    run("2026-12-01T09:00:00+00:00", manifest=str(tmp_path / "manifest.xml"), job_id="ACT-2026-12")
    run("2026-12-14T00:00:00+00:00", events=str(tmp_path / "early.jsonl"))  # reminder −7d
    run("2026-12-16T09:00:00+00:00", events=str(tmp_path / "after_first_reminder.jsonl"))
    run("2026-12-19T09:00:00+00:00")  # the −3d reminder, a day late, and the print fallback
    run("2026-12-19T15:00:00+00:00", events=str(tmp_path / "after_print.jsonl"))
    run("2026-12-21T09:00:00+00:00")  # past the deadline: expired, the −1d reminder never sent

    ledger = ledger_for(get_settings())
    assert export_audit(ledger, "action-required", "csv", tmp_path / "out" / "audit.csv") == len(numbers)
    assert export_audit(ledger, "action-required", "parquet", tmp_path / "out" / "audit.parquet") == len(numbers)
    exported_csv = read_csv(tmp_path / "out" / "audit.csv")
    assert exported_csv == read_parquet_as_text(tmp_path / "out" / "audit.parquet")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "audit.csv",
        "audit.csv.head",
        "audit.parquet",
        "audit.parquet.head",
    ]

    reasons = {7: "missing_key:ActionType", 8: "invalid_date:ActionDeadline", 9: "missing_key:ActionDeadline"}
    closed_at = {
        "early": "2026-12-14T00:00:00Z",
        "after_first_reminder": "2026-12-16T09:00:00Z",
        "after_print": "2026-12-19T15:00:00Z",
        "never": "2026-12-21T09:00:00Z",
    }
    for number in numbers:
        row = exported_csv[action_document_id(number)]
        record = action_record(number)
        assert (row["customer_id"], row["document_type"], row["job_id"]) == (
            record["CustomerId"],
            record["DocumentType"],
            "ACT-2026-12",
        )
        assert (row["action_type"], row["action_deadline"]) == (
            record["ActionType"] or "",
            record["ActionDeadline"] or "",
        )
        if action_out_of_scope(number):
            assert (row["state"], row["reason"], row["first_notified_at"]) == ("quarantined", reasons[number % 40], "")
            continue
        kind = action_group(number)
        reachable = eligible_devices(number, "actions")
        reminders = {"early": 0, "after_first_reminder": 1, "after_print": 2, "never": 2}[kind]
        assert row == {
            **row,
            "first_notified_at": "2026-12-01T09:00:00Z" if reachable else "",
            "devices_notified": str(len(reachable)),
            "reminders_sent": str(reminders if reachable else 0),
            "completed_at": completed_at.get(kind, ""),
            "print_fallback_at": "2026-12-19T09:00:00Z" if kind in ("after_print", "never") else "",
            "expired_at": closed_at["never"] if kind == "never" else "",
            "state": "expired" if kind == "never" else "action_completed",
            "state_changed_at": closed_at[kind],
            "reason": "",
        }
        assert row["action_deadline"] == DEADLINE

    with pytest.raises(ValueError, match="format must be one of csv, parquet, jsonl"):
        export_audit(ledger, "action-required", "xlsx", tmp_path / "audit.xlsx")
    assert not (tmp_path / "audit.xlsx").exists()
