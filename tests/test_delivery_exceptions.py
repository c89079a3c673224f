"""Delivery exceptions end to end: real Prefect, the emulators, SQLite and PostgreSQL; plus the event and rule parts."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from exstream_push.cli import main
from exstream_push.flows.delivery_exceptions import delivery_exceptions
from exstream_push.flows.exstream_watcher import exstream_watcher
from exstream_push.ledger import Evidence, TrackingEvent
from exstream_push.message_file import parse_line
from exstream_push.runtime import _ledger, ledger_for
from exstream_push.settings import ManifestKeys, get_settings
from exstream_push.usecases.delivery_exceptions.commands import list_exceptions
from exstream_push.usecases.delivery_exceptions.config import DeliveryExceptionsConfig, load_config
from exstream_push.usecases.delivery_exceptions.rules import (
    TrackingEventError,
    exception_from_event,
    exception_from_message,
    mask_reference,
)
from exstream_push_dev.emulators.exstream import job_uuid
from exstream_push_dev.emulators.failures import failure_events, write_failed_job
from tests.conftest import exstream_inbox, fcm_messages, printed_json

JOB_ID = job_uuid("STMT-2026-11-ERR")
DOCS_JOB, WHOLE_JOB = job_uuid("JOB-DOCS"), job_uuid("JOB-WHOLE")
AS_OF = datetime(2026, 11, 29, 7, 0, tzinfo=UTC)
FAILED = 3_000
TOPIC = "ops-delivery-exceptions"
MASKED = re.compile(r"\*\*\*\*\d{4}")


def _groups(messages: list[dict]) -> dict[tuple[str, str, str], dict]:
    return {(m["data"]["job_id"], m["data"]["channel"], m["data"]["failure_class"]): m for m in messages}


def _failed_facts() -> dict[str, tuple[str, str]]:
    """The delivery-exception evidence: (channel, failure class) by document, failing if one is recorded twice or
    carries a customer field."""
    table = Evidence.__table__
    statement = select(table.c.document_id, table.c.provider, table.c.detail, table.c.customer_id).where(
        table.c.use_case == "delivery-exceptions", table.c.fact == "failed"
    )
    with ledger_for(get_settings()).engine.connect() as conn:
        rows = conn.execute(statement).all()
    assert all(customer is None for *_, customer in rows)
    facts = {document_id: (channel, code) for document_id, channel, code, _ in rows}
    assert len(facts) == len(rows)
    return facts


def test_thousands_of_failures_make_one_operations_push_per_group(
    prefect_harness: None,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    fcm,
    exstream,
    exstream_data: Path,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("EXSTREAM_PUSH_DATABASE_URL", database_url)
    scenario = write_failed_job(exstream_data / "jobs", JOB_ID, FAILED, events_path=tmp_path / "events.jsonl")
    exstream.app.state.exstream.load_job_folder(scenario.folder)

    result = delivery_exceptions(job_id=JOB_ID, events=str(scenario.events), as_of=AS_OF)
    assert result["jobs"] == [JOB_ID]
    assert result["exceptions_new"] == FAILED
    assert result["events_malformed"] == 2 and result["events_ignored"] > 0
    assert result["alerts"] == result["alerts_sent"] == 3

    # One topic push per (job, channel, failure class), counting every failed document of the group.
    messages = fcm_messages(fcm)
    assert all(m["topic"] == TOPIC and "token" not in m for m in messages)
    groups = _groups(messages)
    expected = {
        (JOB_ID, "print", "print_failure"): scenario.print_failed,
        (JOB_ID, "email", "email_not_delivered"): scenario.email_undelivered,
        (JOB_ID, "composition", "composition_rejected"): scenario.rejected,
    }
    assert len(messages) == len(groups) == len(expected)
    for group, documents in expected.items():
        message = groups[group]
        assert message["data"]["documents"] == message["data"]["new_documents"] == str(len(documents))
        assert f"{len(documents):,} documents" in message["notification"]["title"]
        assert JOB_ID in message["notification"]["title"]
        reference = message["data"]["customer_ref"]
        assert MASKED.fullmatch(reference)
        assert any(customer.endswith(reference[4:]) for customer in documents.values())
        assert reference in message["notification"]["body"]
        assert f"and {len(documents) - 1:,} more" in message["notification"]["body"]
    email = groups[(JOB_ID, "email", "email_not_delivered")]
    assert "Next: Verify the e-mail address, then reissue by post" in email["notification"]["body"]
    email_types = Counter(scenario.document_types[d] for d in scenario.email_undelivered)
    assert f"STATEMENT ×{email_types['STATEMENT']:,}" in email["notification"]["body"]
    assert "through the print queue" in groups[(JOB_ID, "print", "print_failure")]["data"]["next_action"]

    # No customer data anywhere in a push: ids, names, e-mail addresses, account numbers, document ids.
    text = json.dumps(messages)
    leaked = [value for value in scenario.personal_data | set(scenario.failed) if value in text]
    assert not leaked, leaked[:5]

    # Every failed document listed once, with its group and next action, covered by its group's push.
    listed = list_exceptions(ledger_for(get_settings()), job_id=JOB_ID)
    assert len(listed) == FAILED
    by_document = {row["document_id"]: row for row in listed}
    for (_, channel, failure_class), documents in expected.items():
        for document_id in documents:
            row = by_document[document_id]
            assert (row["channel"], row["failure_class"], row["state"]) == (channel, failure_class, "open")
            assert row["alert_key"] and row["next_action"]
    listing = json.dumps(listed, default=str)
    assert not [value for value in scenario.personal_data if value in listing]

    # Each failed document is evidence too: its channel and failure class, once, and nothing that identifies anyone.
    failed_facts = _failed_facts()
    assert Counter(failed_facts.values()) == Counter(
        {(channel, failure_class): len(documents) for (_, channel, failure_class), documents in expected.items()}
    )
    assert set(failed_facts) == set(scenario.failed)
    assert ledger_for(get_settings()).verify_evidence().broken is None

    # A re-run (same job, same events, repeated events included) records nothing and alerts nobody.
    again = delivery_exceptions(job_id=JOB_ID, events=str(scenario.events), as_of=AS_OF)
    assert again["exceptions_new"] == 0 and again["alerts"] == 0
    assert len(fcm_messages(fcm)) == len(messages)
    assert _failed_facts() == failed_facts

    # More failures of one group arriving later: one update with the new total that replaces the earlier notice.
    more = {f"{JOB_ID}-D9{n:06d}": f"C9{n:07d}" for n in range(5)}
    later = delivery_exceptions(
        job_id=JOB_ID,
        events=str(failure_events(tmp_path / "later.jsonl", JOB_ID, more)),
        as_of=AS_OF + timedelta(minutes=15),
    )
    assert later["exceptions_new"] == 5 and later["alerts_sent"] == 1
    update = fcm_messages(fcm)[len(messages) :]
    assert len(update) == 1
    first = groups[(JOB_ID, "print", "print_failure")]
    assert update[0]["data"]["documents"] == str(len(scenario.print_failed) + 5)
    assert update[0]["data"]["new_documents"] == "5"
    assert update[0]["android"]["collapse_key"] == first["android"]["collapse_key"]
    assert not [value for value in more.values() if value in json.dumps(update)]


def _ids(*names: str) -> list[str]:
    return [job_uuid(name) for name in names]


def _error_job(exstream, name: str, ended: str) -> None:
    exstream.app.state.exstream.put_job(
        {"id": job_uuid(name), "status": "error", "msg": "Engine aborted", "endDate": ended},
        message_text="11/29/2026 09:00:00 SEVERE E0101 License check failed: engine aborted\n",
    )


def test_the_poll_neither_misses_nor_repeats_a_failed_job(
    prefect_harness: None, env: dict[str, str], fcm, exstream
) -> None:
    def run(hour: int, minute: int) -> list[str]:
        """The watcher records the job ends (the one job-end cursor), then delivery-exceptions takes the failed."""
        as_of = datetime(2026, 11, 29, hour, minute, tzinfo=UTC)
        _ledger.cache_clear()  # a new process each time: only the ledger remembers
        exstream_watcher(as_of=as_of)
        _ledger.cache_clear()
        return delivery_exceptions(as_of=as_of)["jobs"]

    _error_job(exstream, "A", "2026-11-29T09:00:00.000Z")
    _error_job(exstream, "B", "2026-11-29T10:05:00.000Z")
    _error_job(exstream, "AFTER-AS-OF", "2026-11-29T10:20:00.000Z")
    fine = {"id": job_uuid("FINE"), "status": "complete", "endDate": "2026-11-29T10:01:00.000Z"}
    exstream.app.state.exstream.put_job(fine)
    assert run(10, 6) == _ids("A", "B")

    _error_job(exstream, "C", "2026-11-29T10:05:00.000Z")  # same instant as B, listed only now
    _error_job(exstream, "LISTED-LATE", "2026-11-29T10:01:00.000Z")  # behind the watermark, within its settle window
    assert run(10, 10) == _ids("LISTED-LATE", "C")
    assert run(10, 30) == _ids("AFTER-AS-OF")
    assert run(10, 35) == []

    pushes = fcm_messages(fcm)
    assert sorted(m["data"]["job_id"] for m in pushes) == sorted(_ids("A", "AFTER-AS-OF", "B", "C", "LISTED-LATE"))
    assert {m["data"]["failure_class"] for m in pushes} == {"job_failed"}


def test_cli_lists_and_reissues_to_exstream(
    prefect_harness: None,
    env: dict[str, str],
    fcm,
    exstream,
    exstream_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    documents = write_failed_job(exstream_data / "jobs", DOCS_JOB, 400, events_path=tmp_path / "events.jsonl")
    whole = write_failed_job(exstream_data / "jobs", WHOLE_JOB, 0, ended_at="2026-11-29T06:55:00.000Z")
    for scenario in (documents, whole):
        exstream.app.state.exstream.load_job_folder(scenario.folder)

    as_of = "2026-11-29T07:00:00+00:00"
    exstream_watcher(as_of=datetime.fromisoformat(as_of))  # records the failed job ends the run then takes
    assert main(["run", "delivery-exceptions", "--events", str(documents.events), "--as-of", as_of]) == 0
    result = printed_json(capsys)
    assert result["jobs"] == [DOCS_JOB, WHOLE_JOB] and result["exceptions_new"] == 401
    assert {m["data"]["failure_class"] for m in fcm_messages(fcm)} == {
        "print_failure",
        "email_not_delivered",
        "composition_rejected",
        "job_failed",
    }

    assert main(["exceptions", "list", "--json", "--job", WHOLE_JOB]) == 0
    [job_record] = printed_json(capsys)
    assert (job_record["channel"], job_record["failure_class"], job_record["document_id"]) == (
        "job",
        "job_failed",
        None,
    )
    assert "E0101" in job_record["detail"] and "Reprocess" in job_record["next_action"]
    assert main(["exceptions", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 401 and sum("print_failure" in line for line in lines) == len(documents.print_failed)

    # A job that failed as a whole is reprocessed through the Orchestration API.
    assert main(["exceptions", "reissue", "--job", WHOLE_JOB]) == 0
    assert printed_json(capsys).items() >= {"action": "reprocess_job", "requested": True, "marked": 1}.items()
    inbox = exstream_inbox(exstream)
    assert [p["path"] for p in inbox if p["path"].endswith("/reprocessing")] == [
        f"/orchestration/api/v1/runtime/default/jobs/{WHOLE_JOB}/reprocessing"
    ]

    # A job whose failed documents are known gets exactly those posted to the reissue channel.
    assert main(["exceptions", "reissue", "--job", DOCS_JOB]) == 0
    reissued = printed_json(capsys)
    assert reissued["action"] == "reissue_documents" and reissued["documents"] == reissued["marked"] == 400
    [post] = [p for p in exstream_inbox(exstream) if p["path"].endswith("/reissue")]
    assert post["path"] == "/orchestration/api/v1/inputs/batch/default/reissue"
    rows = list(csv.DictReader(io.StringIO(post["body"])))
    assert {row["document_id"] for row in rows} == set(documents.failed) and len(rows) == 400
    assert {row["reissue_via"] for row in rows if row["failure_class"] == "email_not_delivered"} == {"print"}
    assert not [value for value in documents.personal_data if value in post["body"]]

    assert main(["exceptions", "list", "--json"]) == 0
    assert {row["state"] for row in printed_json(capsys)} == {"reissue_requested"}

    # Asked again, nothing is left to reissue and nothing reaches Exstream twice.
    posts = len(exstream_inbox(exstream))
    assert main(["exceptions", "reissue", "--job", DOCS_JOB]) == 0
    assert printed_json(capsys)["action"] == "none"
    assert len(exstream_inbox(exstream)) == posts


def test_stored_tracking_events_are_read_once_by_delivery_exceptions(
    prefect_harness: None, env: dict[str, str], fcm, exstream
) -> None:
    """The ingress stores tracking events whole; the flow that reacts to failures reads each once."""
    ledger = ledger_for(get_settings())
    failed = _failed(FILE_SAMPLE, "Exstream-FileOutputChannel-Failed")
    rows = [
        {"event_id": event_id, "schema_type": event["expctr"]["schemaType"], "payload": json.dumps(event),
         "event_date": None, "received_at": AS_OF, "processed_at": None}
        for event_id, event in (("trk-open", OPEN_SAMPLE), ("trk-failed", failed))
    ]  # fmt: skip
    with ledger.engine.begin() as conn:
        conn.execute(TrackingEvent.__table__.insert(), rows)

    first = delivery_exceptions(as_of=AS_OF)
    assert (first["events_read"], first["events_failed"], first["events_ignored"]) == (2, 1, 1)
    assert first["exceptions_new"] == 1 and first["alerts_sent"] == 1
    with ledger.engine.connect() as conn:
        assert all(conn.scalars(TrackingEvent.__table__.select().with_only_columns(TrackingEvent.processed_at)))
    again = delivery_exceptions(as_of=AS_OF + timedelta(minutes=5))
    assert again.get("events_read", 0) == 0 and again["exceptions_new"] == 0 and again["alerts"] == 0
    _ledger.cache_clear()


# -- the parts ---------------------------------------------------------------------------------------------------

# The two samples of the Exstream 22.2 help (tracking-event-samples.json in the shared reference), trimmed.
OPEN_SAMPLE = {
    "expctr": {
        "schemaVersion": "1.0",
        "schemaType": "Exstream-Email-OPEN",
        "schemaSource": "Sample_Email",
        "tenant": "24a364c7-64bb-4a50-ac2a-c0082f86b109",
    },
    "user": {
        "CustomerFirstname": "John",
        "DeliveryPreference": "email",
        "CustomerEmail": "johnsmith@example.com",
        "CustomerLastname": "Smith",
        "CustomerId": "d4b5d72b-c54c-44ce-b276-3610a0106050",
    },
    "exstreamEmailStatistics": {
        "creationTime": "2020-09-30T02:39:04.001Z",
        "customerEmailId": "johnsmith@example.com",
        "communicationId": "0e8de48d-8b51-4668-9259-5008faca8662",
        "eventType": "OPEN",
    },
}
FILE_SAMPLE = {
    "expctr": {
        "schemaType": "Exstream-FileOutputChannel",
        "eventId": "ecaa6646-babc-49cc-8ece-de64c24627bd",
        "eventDate": "2020-09-30T14:00:26.161Z",
    },
    "exstreamJob": {"communicationId": "07c9316a-e2d2-4a4c-be89-b86e693ebd30", "status": "success"},
    "user": {
        "City": "Providence",
        "QueueFilename": "/mnt/nfs/Sample/Testdomain/jobs/1ed7f5a8-58e9-46a8-a742-4c64675b7a21/ee6fe671/docgen/"
        "82c3a7ef/output/TestQueue/TestLetter",
    },
}


def _failed(sample: dict, schema_type: str) -> dict:
    return {**sample, "expctr": {**sample["expctr"], "schemaType": schema_type}}


def test_tracking_events_become_records_without_personal_data() -> None:
    config, keys = load_config(), ManifestKeys()
    assert exception_from_event(OPEN_SAMPLE, config, keys, AS_OF) is None
    assert exception_from_event(FILE_SAMPLE, config, keys, AS_OF) is None

    output = exception_from_event(_failed(FILE_SAMPLE, "Exstream-FileOutputChannel-Failed"), config, keys, AS_OF)
    assert output["job_id"] == "1ed7f5a8-58e9-46a8-a742-4c64675b7a21"  # read from the output path
    assert (output["channel"], output["failure_class"], output["document_id"]) == ("file", "output_failure", None)
    assert output["occurred_at"] == datetime(2020, 9, 30, 14, 0, 26, 161_000, tzinfo=UTC)

    undelivered = _failed(OPEN_SAMPLE, "Exstream-Email-NDLV")
    row = exception_from_event(undelivered, config, keys, AS_OF)
    assert row["job_id"] == "communication:0e8de48d-8b51-4668-9259-5008faca8662"
    assert (row["channel"], row["failure_class"], row["customer_ref"]) == ("email", "email_not_delivered", "****6050")
    assert not [word for word in ("John", "Smith", "johnsmith", "Providence") if word in json.dumps(row, default=str)]
    assert (
        exception_from_event(json.loads(json.dumps(undelivered)), config, keys, AS_OF)["dedup_key"] == row["dedup_key"]
    )

    unknown = exception_from_event(_failed(FILE_SAMPLE, "Exstream-Fax-Failed"), config, keys, AS_OF)
    assert (unknown["channel"], unknown["failure_class"]) == ("other", "delivery_failed")
    for malformed in ({"user": {}}, [], "text", {"expctr": {"schemaType": ""}}):
        with pytest.raises(TrackingEventError):
            exception_from_event(malformed, config, keys, AS_OF)


def test_a_message_line_and_an_event_about_one_document_make_one_record() -> None:
    config, keys = load_config(), ManifestKeys()
    line = parse_line(
        "11/29/2026 06:12:03 ERROR PRT-0417 Print failed: DocumentId=D-77 CustomerId=CUST-AB12CD mail@x.io"
    )
    row = exception_from_message(line, "J1", "step-1", config, AS_OF, AS_OF)
    assert (row["channel"], row["failure_class"], row["document_id"], row["customer_ref"]) == (
        "print",
        "print_failure",
        "D-77",
        "****12CD",
    )
    assert "CUST-AB12CD" not in row["detail"] and "mail@x.io" not in row["detail"] and "PRT-0417" in row["detail"]
    assert row["occurred_at"] == datetime(2026, 11, 29, 6, 12, 3, tzinfo=UTC)
    event = {
        "expctr": {"schemaType": "Exstream-Print-Failed", "eventId": "e-1"},
        "exstreamJob": {"jobId": "J1"},
        "user": {"DocumentId": "D-77"},
    }
    assert exception_from_event(event, config, keys, AS_OF)["dedup_key"] == row["dedup_key"]
    assert exception_from_message(parse_line("SEVERE E0101 engine aborted"), "J1", "s", config, AS_OF, AS_OF) is None


@pytest.mark.parametrize(
    ("value", "masked"),
    [("C00012345", "****2345"), ("C1234567", "****"), ("  ", None), (None, None), (123456789, "****6789")],
)
def test_mask_reference(value: object, masked: str | None) -> None:
    assert mask_reference(value, 4) == masked


def test_the_rule_table_is_checked_when_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXSTREAM_PUSH_CONFIG_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"delivery-exceptions\.yaml"):
        load_config(get_settings())
    shutil.copy(Path(__file__).parent.parent / "config" / "delivery-exceptions.yaml", tmp_path)
    raw = load_config(get_settings()).model_dump(mode="json")
    for change in (
        {"operations_topic": "ops alerts!"},
        {"message_identity_patterns": [r"document (\S+)"]},
        {"message_file_timezone": "Mars/Olympus"},
        {"rules": []},
    ):
        with pytest.raises(ValidationError):
            DeliveryExceptionsConfig.model_validate({**raw, **change})
