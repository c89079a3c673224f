"""What a run reports: a job with nothing to read fails, one push-status row per document id, only settled
outcomes reach Exstream (later changes as corrections), and a run that could not do its whole job says so."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from exstream_push.cli import main
from exstream_push.errors import RunIncomplete
from exstream_push.flows.statement_ready import statement_ready
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push.tasks.completeness import ensure_complete
from exstream_push_dev.emulators.exstream import job_uuid
from tests.conftest import exstream_inbox, fcm_messages, printed_json

USE_CASE = "statement-ready"
NOFILE_JOB, EMPTY_JOB = job_uuid("J-NOFILE"), job_uuid("J-EMPTY")
DEVICES_HEADER = "customer_id,device_id,platform,token,push_opt_in,locale,timezone,categories\n"


def manifest_text(records: list[dict[str, str]]) -> str:
    """A delivery manifest of the given records' keys (a missing key is left out of its record)."""
    lines = [f'<?xml version="1.0" encoding="UTF-8"?>\n<outputList customersProcessed="{len(records)}">']
    for keys in records:
        lines.append("  <customer>")
        lines.extend(f'    <key name="{name}">{escape(value)}</key>' for name, value in keys.items())
        lines.append("  </customer>")
    lines.append("</outputList>\n")
    return "\n".join(lines)


def record(customer: str | None, document: str | None, document_type: str | None = "Statement") -> dict[str, str]:
    keys = {"CustomerId": customer, "DocumentId": document, "DocumentType": document_type, "Locale": "en"}
    return {name: value for name, value in keys.items() if value is not None}


def import_devices(path: Path, rows: list[tuple[str, str, str]]) -> None:
    """(customer, device, token) rows, android, opted in to everything."""
    path.write_text(
        DEVICES_HEADER
        + "".join(f"{customer},{device},android,{token},true,en,Europe/London,\n" for customer, device, token in rows)
    )
    assert main(["devices", "import", str(path)]) == 0


def status_posts(exstream) -> list[list[dict[str, str]]]:
    """Every push-status CSV Exstream received, oldest first, as rows."""
    posts = [p for p in exstream_inbox(exstream) if p["path"].endswith("/push-status")]
    return [list(csv.DictReader(io.StringIO(post["body"]))) for post in posts]


# -- the rule ------------------------------------------------------------------------------------------------


def test_unreadable_records_or_unsettled_documents_make_a_run_incomplete() -> None:
    ensure_complete(USE_CASE, "J-1", {"customers": 10, "sent": 10, "unreadable": 0, "unsettled": 0})

    with pytest.raises(RunIncomplete) as caught:
        ensure_complete(USE_CASE, "J-1", {"customers": 10, "unreadable": 2, "unsettled": 3})
    message = str(caught.value)
    assert "J-1" in message
    assert "2 manifest record(s) declared but unreadable" in message
    assert "3 document(s) with notifications still pending" in message
    assert caught.value.counts == {"customers": 10, "unreadable": 2, "unsettled": 3}


def test_a_run_that_read_no_customer_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="exstream_push"):
        ensure_complete(USE_CASE, "J-EMPTY", {"customers": 0})
        ensure_complete(USE_CASE, None, {"released": 0})  # a ledger-only run read no delivery file at all
    assert [r.getMessage() for r in caplog.records] == [
        "statement-ready run of job J-EMPTY: the delivery file(s) hold no customer; nothing to notify"
    ]


# -- item 1: a job with nothing to read -------------------------------------------------------------------------


def test_an_unknown_job_fails_the_run_and_is_not_remembered(
    prefect_harness: None, env, fcm, exstream, tmp_path
) -> None:
    import_devices(tmp_path / "devices.csv", [("C1", "dev-1", "tok-1")])

    missing = job_uuid("NOPE-123")
    state = statement_ready(job_id=missing, return_state=True)
    assert state.is_failed()
    assert f"Exstream job {missing} not found" in state.message
    assert fcm_messages(fcm) == [] and status_posts(exstream) == []

    # The job turns out to exist after all: the next run processes it instead of answering "up to date".
    exstream.app.state.exstream.put_job({"id": missing}, delivery_text=manifest_text([record("C1", "D-1")]))
    result = statement_ready(job_id=missing)
    assert not result["up_to_date"] and result["customers"] == 1 and result["sent"] == 1
    assert [m["token"] for m in fcm_messages(fcm)] == ["tok-1"]


def test_a_job_without_a_delivery_file_fails_until_the_file_appears(
    prefect_harness: None, env, fcm, exstream, tmp_path
) -> None:
    import_devices(tmp_path / "devices.csv", [("C1", "dev-1", "tok-1")])
    emulator = exstream.app.state.exstream
    emulator.put_job({"id": NOFILE_JOB, "status": "complete"})

    for _ in range(2):  # failing does not make it "done": it fails again, the same way
        state = statement_ready(job_id=NOFILE_JOB, return_state=True)
        assert state.is_failed()
        assert f"Exstream job {NOFILE_JOB} (status complete) has no delivery file to fetch" in state.message

    emulator.put_job({"id": NOFILE_JOB}, delivery_text=manifest_text([record("C1", "D-1")]))
    result = statement_ready(job_id=NOFILE_JOB)
    assert not result["up_to_date"] and result["customers"] == 1 and result["sent"] == 1
    assert [row["document_id"] for row in status_posts(exstream)[0]] == ["D-1"]


def test_a_delivery_file_without_customers_completes(prefect_harness: None, env, fcm, exstream) -> None:
    exstream.app.state.exstream.put_job({"id": EMPTY_JOB}, delivery_text=manifest_text([]))
    state = statement_ready(job_id=EMPTY_JOB, return_state=True)
    assert state.is_completed()
    assert state.result()["customers"] == 0


# -- item 4: one row per document id ------------------------------------------------------------------------------


def test_one_push_status_row_per_document_id(prefect_harness: None, env, fcm, exstream, tmp_path) -> None:
    import_devices(tmp_path / "devices.csv", [("C1", "dev-1", "tok-1"), ("C3", "dev-3", "tok-3")])
    manifest = tmp_path / "_STDDELIVERYFILE.xml"
    manifest.write_text(
        manifest_text(
            [
                record("C1", "D-1"),  # 1: notified
                record("C1", "D-1"),  # 2: the same document again: a duplicate, no row of its own
                record("C2", "D-1"),  # 3: another customer's record under D-1: a conflicting reuse
                record("C3", "D-5", None),  # 4: quarantined, its id shared with the valid record that follows
                record("C3", "D-5"),  # 5: notified
            ]
        )
    )
    result = statement_ready(manifest=str(manifest), job_id="J-IDS")
    assert result["customers"] == 5 and result["duplicates"] == 1 and result["quarantined"] == 2

    [rows] = status_posts(exstream)
    by_id = {row["document_id"]: row for row in rows}
    assert len(by_id) == len(rows)
    assert {
        document_id: (row["customer_id"], row["push_status"], row["reason"]) for document_id, row in by_id.items()
    } == {
        "D-1": ("C1", "notified", ""),
        "J-IDS/manifest/3": ("C2", "not_notified", "conflicting_document_id"),
        "J-IDS/manifest/4": ("C3", "not_notified", "missing_document_type"),
        "D-5": ("C3", "notified", ""),
    }
    rejected = ledger_for(get_settings()).job_reason_counts(USE_CASE, "J-IDS")
    assert rejected[("skipped", "duplicate")] == 1
    assert rejected[("quarantined", "conflicting_document_id")] == 1


# -- item 5: only settled outcomes, changes as corrections --------------------------------------------------------


def test_retry_exhausted_documents_wait_until_settled_and_changes_are_corrections(
    prefect_harness: None, env, fcm, exstream, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXSTREAM_PUSH_FCM_MAX_ATTEMPTS", "1")  # the flaky token's one 503 exhausts the retries
    import_devices(tmp_path / "devices.csv", [("C1", "dev-1", "flaky-1")])
    manifest = tmp_path / "_STDDELIVERYFILE.xml"
    manifest.write_text(manifest_text([record("C1", "D-1"), record("C2", "D-2")]))

    first = statement_ready(manifest=str(manifest), job_id="J-RETRY", return_state=True)
    assert first.is_failed()
    assert "job J-RETRY is incomplete: 1 document(s) with notifications still pending" in first.message
    # What was settled went back; the pending document was not told "not notified".
    assert [
        (row["document_id"], row["push_status"], row["reason"], row["correction"]) for row in status_posts(exstream)[0]
    ] == [("D-2", "not_notified", "no_device", "false")]

    second = statement_ready(manifest=str(manifest), job_id="J-RETRY")  # the token answers this time
    assert second["sent"] == 1 and second["unsettled"] == 0
    assert [(row["document_id"], row["push_status"], row["correction"]) for row in status_posts(exstream)[1]] == [
        ("D-1", "notified", "false")
    ]

    # C2 registers a device: D-2, reported not notified, is notified now, and Exstream is told so as a correction.
    import_devices(tmp_path / "late.csv", [("C2", "dev-2", "tok-2")])
    statement_ready(manifest=str(manifest), job_id="J-RETRY")
    posts = status_posts(exstream)
    assert [
        (row["document_id"], row["push_status"], row["devices_notified"], row["correction"]) for row in posts[2]
    ] == [("D-2", "notified", "1", "true")]
    assert [m["token"] for m in fcm_messages(fcm)] == ["flaky-1", "tok-2"]

    # Nothing changed since: nothing more is posted.
    statement_ready(manifest=str(manifest), job_id="J-RETRY")
    assert len(status_posts(exstream)) == 3


def test_an_incomplete_run_prints_its_counts_and_exits_non_zero(
    prefect_harness: None, env, fcm, exstream, tmp_path, monkeypatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EXSTREAM_PUSH_FCM_MAX_ATTEMPTS", "1")
    import_devices(tmp_path / "devices.csv", [("C1", "dev-1", "quota-1"), ("C2", "dev-2", "tok-2")])
    manifest = tmp_path / "_STDDELIVERYFILE.xml"
    manifest.write_text(manifest_text([record("C1", "D-1"), record("C2", "D-2")]))
    capsys.readouterr()

    assert main(["run", "statement-ready", "--manifest", str(manifest), "--job", "J-CLI"]) == 1
    counts = printed_json(capsys)
    assert counts["job_id"] == "J-CLI" and counts["unsettled"] == 1 and counts["sent"] == 1
    assert counts["post_back"]["rows"] == 1


# -- a hand-back Exstream refuses is not lost -------------------------------------------------------------------


def test_a_hand_back_to_an_unknown_domain_fails_the_run_and_is_posted_by_the_next_one(
    prefect_harness: None, env, fcm, exstream, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import_devices(tmp_path / "devices.csv", [("C1", "dev-1", "tok-1")])
    manifest = tmp_path / "_STDDELIVERYFILE.xml"
    manifest.write_text(manifest_text([record("C1", "D-1"), record("C2", "D-2")]))
    accepted = "/orchestration/api/v1/inputs/batch/default/push-status"

    monkeypatch.setenv("EXSTREAM_PUSH_EXSTREAM_DOMAIN", "no-such-domain")
    first = statement_ready(manifest=str(manifest), job_id="J-DOMAIN", return_state=True)
    assert first.is_failed()
    assert "HTTP 404: Not Found: Domain no-such-domain not found" in first.message
    refused = [p for p in exstream_inbox(exstream) if p["path"].endswith("/push-status")]
    assert [p["path"] for p in refused] == ["/orchestration/api/v1/inputs/batch/no-such-domain/push-status"]
    assert [m["token"] for m in fcm_messages(fcm)] == ["tok-1"]

    monkeypatch.setenv("EXSTREAM_PUSH_EXSTREAM_DOMAIN", "default")
    second = statement_ready(manifest=str(manifest), job_id="J-DOMAIN")
    assert second["post_back"]["posted"] is True
    [post] = [p for p in exstream_inbox(exstream) if p["path"] == accepted]
    rows = list(csv.DictReader(io.StringIO(post["body"])))
    assert [(row["document_id"], row["push_status"], row["correction"]) for row in rows] == [
        ("D-1", "notified", "false"),
        ("D-2", "not_notified", "false"),
    ]
    assert [m["token"] for m in fcm_messages(fcm)] == ["tok-1"]  # the push itself was not repeated

    statement_ready(manifest=str(manifest), job_id="J-DOMAIN")
    assert len([p for p in exstream_inbox(exstream) if p["path"] == accepted]) == 1
