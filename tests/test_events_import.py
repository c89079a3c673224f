"""Engagement events: stored once per event_id, resolved by document id or by the push's opaque reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from exstream_push.cli import main
from exstream_push.content.links import document_ref
from exstream_push.ledger import EngagementEvent
from exstream_push.ledger.store import utcnow
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings


@pytest.fixture
def ledger_with_documents(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    monkeypatch.setenv("EXSTREAM_PUSH_HOME", str(tmp_path))
    monkeypatch.setenv("EXSTREAM_PUSH_DATABASE_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    monkeypatch.setenv("EXSTREAM_PUSH_LINK_SECRET", "events-secret")
    settings = get_settings()
    ref = document_ref(settings.link_key, "policy-change", "POL-1")
    ledger_for(settings).record_documents(
        [
            {
                "use_case": "policy-change",
                "document_id": "POL-1",
                "job_id": "J1",
                "step_id": "manifest",
                "position": 1,
                "customer_id": "C1",
                "document_type": "POLICY",
                "ref": ref,
                "first_seen_at": utcnow(),
            }
        ]
    )
    return ref


def _events() -> dict[str, EngagementEvent]:
    with ledger_for(get_settings()).engine.connect() as conn:
        return {row.event_id: row for row in conn.execute(select(EngagementEvent.__table__))}


def test_import_resolves_refs_skips_bad_lines_and_ignores_repeats(
    ledger_with_documents: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = ledger_with_documents
    lines = [
        {"event_id": "e1", "type": "opened", "document_ref": ref, "customer_id": "C1",
         "occurred_at": "2026-11-29T10:00:00+00:00", "device_id": "d1"},
        {"event_id": "e2", "type": "acknowledged", "document_id": "POL-1", "customer_id": "C1",
         "occurred_at": "2026-11-29T11:00:00+01:00"},
        "not json at all",
        {"event_id": "e3", "type": "clicked", "document_id": "POL-1", "customer_id": "C1",
         "occurred_at": "2026-11-29T11:00:00+00:00"},
        {"event_id": "e4", "type": "opened", "document_ref": "unknown-ref", "customer_id": "C1",
         "occurred_at": "2026-11-29T11:00:00+00:00"},
        {"event_id": "e5", "type": "opened", "document_id": "POL-1", "customer_id": "C1",
         "occurred_at": "2026-11-29T11:00:00"},
        {"event_id": "e6", "type": "opened", "document_id": "POL-1", "customer_id": "C2",
         "occurred_at": "2026-11-29T11:00:00+00:00"},
        {"event_id": "e1", "type": "opened", "document_ref": ref, "customer_id": "C1",
         "occurred_at": "2026-11-29T10:00:00+00:00"},
    ]  # fmt: skip
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")

    assert main(["events", "import", str(path)]) == 0
    captured = capsys.readouterr()
    assert "stored 2 event(s), 1 already known, skipped 5 bad line(s)" in captured.out
    for line, words in [(3, "not JSON"), (4, "type must be"), (5, "unknown document"), (6, "time zone"),
                        (7, "customer_id does not match")]:  # fmt: skip
        assert any(f"events.jsonl:{line}: skipped: " in e and words in e for e in captured.err.splitlines())

    events = _events()
    assert set(events) == {"e1", "e2"}
    assert events["e1"].document_id == "POL-1" and events["e1"].use_case == "policy-change"
    assert events["e2"].type == "acknowledged"

    assert main(["events", "import", str(path), "--strict"]) == 1
    assert "stored 0 event(s), 3 already known" in capsys.readouterr().out
    assert set(_events()) == {"e1", "e2"}
