"""Statement ready end to end: real Prefect, real firebase-admin model, emulators on loopback, SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from exstream_push.cli import main
from exstream_push.content.links import document_ref
from exstream_push.flows.statement_ready import statement_ready
from exstream_push.ledger import Device
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push_dev.emulators.samples import write_devices, write_manifest
from tests.conftest import exstream_inbox, fcm_messages
from tests.oracle import read_scenario

CUSTOMERS = 3_000
JOB_ID = "JOB-E2E-1"
USE_CASE = "statement-ready"


@pytest.fixture
def scenario(tmp_path: Path) -> tuple[Path, Path]:
    manifest = tmp_path / "_STDDELIVERYFILE.xml"
    devices = tmp_path / "devices.csv"
    write_manifest(manifest, CUSTOMERS, seed=21, job_id=JOB_ID)
    write_devices(devices, CUSTOMERS, seed=22)
    return manifest, devices


def _ref_to_document(document_ids: list[str]) -> dict[str, str]:
    key = get_settings().link_key
    return {document_ref(key, USE_CASE, document_id): document_id for document_id in document_ids}


def _token_to_device(tokens: dict[str, str]) -> dict[str, str]:
    return {token: device_id for device_id, token in tokens.items()}


def test_statement_ready_end_to_end(
    prefect_harness: None,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    scenario: tuple[Path, Path],
    fcm,
    exstream,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("EXSTREAM_PUSH_DATABASE_URL", database_url)
    monkeypatch.setenv("EXSTREAM_PUSH_BATCH_SIZE", "1000")  # several batches, several task runs
    manifest, devices = scenario
    expected = read_scenario(manifest, devices, JOB_ID)
    assert expected.quarantined and expected.conflicting and expected.no_device and expected.failed

    assert main(["devices", "import", str(devices)]) == 0
    result = statement_ready(manifest=str(manifest), job_id=JOB_ID)
    assert result["customers"] == CUSTOMERS

    # Exactly one accepted message per eligible (document, active device) whose token is not dead.
    messages = fcm_messages(fcm)
    refs = _ref_to_document(list(expected.documents))
    devices_by_token = _token_to_device(expected.tokens)
    delivered = Counter((refs[m["data"]["document_ref"]], devices_by_token[m["token"]]) for m in messages)
    assert set(delivered) == expected.accepted
    assert max(delivered.values()) == 1

    # No manifest value other than the document type anywhere in any message.
    for message in messages:
        document_id = refs[message["data"]["document_ref"]]
        keys = expected.documents[document_id]
        text = json.dumps({k: v for k, v in message.items() if k != "token"})
        leaked = [v for name, v in keys.items() if name not in ("DocumentType", "Locale") and v in text]
        assert not leaked, f"message for {document_id} carries manifest values {leaked}"
        collapse_key = message["android"]["collapse_key"]
        assert message["apns"]["headers"]["apns-collapse-id"]
        assert message["webpush"]["headers"]["Topic"]
        assert collapse_key and collapse_key not in (document_id, keys["CustomerId"])

    # Every document and every bad record accounted for in report --json.
    capsys.readouterr()
    assert main(["report", "--json"]) == 0
    reported = json.loads(capsys.readouterr().out)
    report, rejected = reported["notifications"][USE_CASE], reported["rejected_records"][USE_CASE]
    assert report["sent"] == len(expected.accepted)
    assert report["failed"] == len(expected.failed)
    assert report["skipped"] == len(expected.no_device) + len(expected.opted_out) + len(expected.category_opted_out)
    assert rejected["quarantined"] == expected.quarantined and rejected.get("skipped", 0) == expected.duplicates
    assert "pending" not in report and "quarantined" not in report

    # ... and in the CSV posted back to Exstream, one row per document plus the quarantined records.
    posts = [p for p in exstream_inbox(exstream) if p["path"].endswith("/push-status")]
    assert len(posts) == 1
    assert posts[0]["path"] == "/orchestration/api/v1/inputs/batch/default/push-status"
    rows = list(csv.DictReader(io.StringIO(posts[0]["body"])))
    assert list(rows[0]) == [
        "document_id",
        "customer_id",
        "push_status",
        "reason",
        "devices_notified",
        "correction",
        "updated_at",
    ]
    assert {row["correction"] for row in rows} == {"false"}
    assert len({row["document_id"] for row in rows}) == len(rows)
    quarantine_reasons = ("missing_customer_id", "missing_document_type", "conflicting_document_id")
    by_document = {row["document_id"]: row for row in rows if row["reason"] not in quarantine_reasons}
    assert len(rows) - len(by_document) == expected.quarantined
    assert set(by_document) == set(expected.documents)
    conflicting = {row["document_id"]: row for row in rows if row["reason"] == "conflicting_document_id"}
    assert {document_id: row["customer_id"] for document_id, row in conflicting.items()} == expected.conflicting
    notified = {document_id for document_id, _ in expected.accepted}
    for document_id, row in by_document.items():
        if document_id in notified:
            assert row["push_status"] == "notified"
            assert int(row["devices_notified"]) == sum(1 for d, _ in expected.accepted if d == document_id)
        else:
            assert row["push_status"] == "not_notified"
            assert row["devices_notified"] == "0"
    for document_id in expected.no_device:
        assert by_document[document_id]["reason"] == "no_device"

    # unregistered- devices are deactivated; the others stay active.
    with ledger_for(get_settings()).engine.connect() as conn:
        inactive = set(conn.scalars(select(Device.device_id).where(Device.active.is_(False))))
    reached_dead = {device for _, device in expected.failed if device in expected.unregistered_devices}
    assert inactive == reached_dead

    # Running it again adds no message and posts nothing new.
    statement_ready(manifest=str(manifest), job_id=JOB_ID)
    assert len(fcm_messages(fcm)) == len(messages)
    assert len([p for p in exstream_inbox(exstream) if p["path"].endswith("/push-status")]) == 1


def test_a_finished_run_started_again_is_up_to_date_until_something_changes(
    prefect_harness: None,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    scenario: tuple[Path, Path],
    fcm,
    exstream,
    tmp_path: Path,
) -> None:
    manifest, devices = scenario
    expected = read_scenario(manifest, devices, JOB_ID)
    assert main(["devices", "import", str(devices)]) == 0
    first = statement_ready(manifest=str(manifest), job_id=JOB_ID)
    assert first["sent"] == len(expected.accepted) and not first["up_to_date"]
    sent_so_far = len(fcm_messages(fcm))

    again = statement_ready(manifest=str(manifest), job_id=JOB_ID)
    assert again["up_to_date"] and again["sent"] == 0
    assert set(again) == set(first)  # the same shape as a run that sent: a script reads both the same way
    assert again["customers"] == CUSTOMERS  # the finished run's counts
    assert len(fcm_messages(fcm)) == sent_so_far

    # A customer who had no device registers one: the run is no longer up to date, and only that one is sent.
    document_id = sorted(expected.no_device)[0]
    customer_id = expected.documents[document_id]["CustomerId"]
    late = tmp_path / "late-device.csv"
    late.write_text(
        "customer_id,device_id,platform,token,push_opt_in,locale,timezone,categories\n"
        f"{customer_id},dev-late-1,android,tok-late-1,true,en,Europe/London,\n"
    )
    assert main(["devices", "import", str(late)]) == 0
    after_device = statement_ready(manifest=str(manifest), job_id=JOB_ID)
    assert not after_device["up_to_date"] and after_device["sent"] == 1
    assert [m["token"] for m in fcm_messages(fcm)[sent_so_far:]] == ["tok-late-1"]
    assert statement_ready(manifest=str(manifest), job_id=JOB_ID)["up_to_date"]

    # Other content under the same job id is a new run, not a repeat.
    changed = tmp_path / "changed" / "_STDDELIVERYFILE.xml"
    changed.parent.mkdir()
    write_manifest(changed, 50, seed=23, job_id=JOB_ID)
    assert not statement_ready(manifest=str(changed), job_id=JOB_ID)["up_to_date"]


def test_a_run_with_neither_manifest_nor_job_id_fails_at_once_naming_both(
    prefect_harness: None, env: dict[str, str]
) -> None:
    with pytest.raises(ValueError) as refused:
        statement_ready()
    assert "`manifest`" in str(refused.value) and "`job_id`" in str(refused.value)
