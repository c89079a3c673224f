"""Lifecycle tracking: events fold forward only, changes go back to Exstream once, one fallback per document."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from exstream_push.cli import main
from exstream_push.flows.lifecycle_tracking import lifecycle_tracking
from exstream_push.flows.statement_ready import statement_ready
from exstream_push_dev.emulators.samples import write_devices, write_manifest
from tests.conftest import exstream_inbox

JOB_ID = "JOB-LIFECYCLE"


def _posted(exstream, channel: str) -> list[list[dict[str, str]]]:
    return [
        list(csv.DictReader(io.StringIO(p["body"])))
        for p in exstream_inbox(exstream)
        if p["path"].endswith(f"/{channel}")
    ]


def test_lifecycle_moves_forward_reports_once_and_falls_back_once(
    prefect_harness: None, env: dict[str, str], fcm, exstream, tmp_path: Path
) -> None:
    write_manifest(tmp_path / "m.xml", 120, seed=41, job_id=JOB_ID)
    write_devices(tmp_path / "d.csv", 120, seed=42)
    assert main(["devices", "import", str(tmp_path / "d.csv")]) == 0
    statement_ready(manifest=str(tmp_path / "m.xml"), job_id=JOB_ID)
    now = datetime.now(UTC)

    first = lifecycle_tracking(as_of=now + timedelta(hours=1))
    sent_rows = _posted(exstream, "document-status")[-1]
    assert first["status_changes"] == len(sent_rows) > 10
    assert {row["status"] for row in sent_rows} == {"sent"}
    a, b, c = (row["document_id"] for row in sent_rows[:3])
    customer = {row["document_id"]: row["customer_id"] for row in sent_rows}

    events = [
        ("e1", "opened", a, "2026-11-29T10:00:00+00:00"),
        ("e2", "document_accessed", b, "2026-11-29T10:05:00+00:00"),
        ("e3", "delivered", b, "2026-11-29T10:06:00+00:00"),  # arrives late: must not move b backwards
        ("e4", "delivered", c, "2026-11-29T10:00:00+00:00"),
        ("e5", "acknowledged", c, "2026-11-29T11:00:00+00:00"),
    ]
    (tmp_path / "events.jsonl").write_text(
        "".join(
            json.dumps({"event_id": i, "type": t, "document_id": d, "customer_id": customer[d], "occurred_at": at})
            + "\n"
            for i, t, d, at in events
        )
    )
    assert main(["events", "import", str(tmp_path / "events.jsonl")]) == 0

    second = lifecycle_tracking(as_of=now + timedelta(hours=2))
    changes = {row["document_id"]: row["status"] for row in _posted(exstream, "document-status")[-1]}
    assert changes == {a: "opened", b: "document_accessed", c: "acknowledged"}
    assert second["status_changes"] == 3 and second["fallbacks_requested"] == 0

    posts_before = len(exstream_inbox(exstream))
    assert lifecycle_tracking(as_of=now + timedelta(hours=3))["status_changes"] == 0
    assert len(exstream_inbox(exstream)) == posts_before

    late = lifecycle_tracking(as_of=now + timedelta(hours=50))
    fallbacks = _posted(exstream, "fallback-delivery")
    assert len(fallbacks) == 1
    unopened = {row["document_id"] for row in fallbacks[0]}
    assert unopened == set(customer) - {a, b, c}
    assert late["fallbacks_requested"] == len(unopened)
    assert all(row["reason"] == "not_opened_within_48h" for row in fallbacks[0])

    assert lifecycle_tracking(as_of=now + timedelta(hours=51))["fallbacks_requested"] == 0
    assert len(_posted(exstream, "fallback-delivery")) == 1
