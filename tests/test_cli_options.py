"""The command line's options: every one says what it is for, one name per idea, and the formats it documents are
the ones it reads."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import update

from exstream_push.cli import DEVICE_FIELDS, EVENT_EXAMPLE, EVENT_FIELDS, build_parser, main
from exstream_push.devices import DEVICE_CSV_HEADER, PROVIDER_COLUMNS
from exstream_push.events import parse_event
from exstream_push.ingress.schemas import EngagementEventIn
from exstream_push.ledger import Notification, RejectedRecord
from exstream_push.ledger.store import notification_rows, utcnow
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push.status import Status


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], object]]:
    """Every (command path, action) of the parser and its sub-commands, sub-commands themselves included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, subparser in action.choices.items():
                yield (*path, name), helps.get(name)
                yield from _walk(subparser, (*path, name))
        elif not isinstance(action, argparse._HelpAction):
            yield (*path, action.dest), action


def test_every_command_option_and_argument_has_help() -> None:
    missing = []
    for path, item in _walk(build_parser()):
        text = item if item is None or isinstance(item, str) else item.help  # type: ignore[attr-defined]
        hidden_alias = text == argparse.SUPPRESS and "deprecated" in type(item).__name__.lower()
        if not hidden_alias and (not text or text == argparse.SUPPRESS):
            missing.append(" ".join(path))
    assert missing == []


def test_job_id_is_a_deprecated_spelling_of_job(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["run", "statement-ready", "--manifest", "m.xml", "--job-id", "J-7"])
    assert args.job == "J-7" and not hasattr(args, "job_id")
    assert "--job-id is deprecated, use --job" in capsys.readouterr().err
    assert build_parser().parse_args(["run", "statement-ready", "--manifest", "m.xml", "--job", "J-7"]).job == "J-7"


def test_statement_ready_needs_a_manifest_or_a_job(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "statement-ready"]) == 2
    assert "give --manifest, --job or both" in capsys.readouterr().err


def test_the_events_import_help_documents_the_format_it_reads() -> None:
    event = parse_event(json.loads(EVENT_EXAMPLE))
    EngagementEventIn.model_validate_json(EVENT_EXAMPLE)  # the help says the ingress API takes the same objects
    for name in event:
        assert f"\n  {name} " in EVENT_FIELDS, name
    assert EVENT_EXAMPLE in EVENT_FIELDS


def test_devices_import_help_describes_every_column_the_import_reads() -> None:
    """The columns in the help are the ones ``devices import`` reads, the optional provider ones included."""
    for name in (*DEVICE_CSV_HEADER, *PROVIDER_COLUMNS):
        assert f"\n  {name} " in DEVICE_FIELDS, name
    described = [line.split()[0] for line in DEVICE_FIELDS.splitlines() if line.startswith("  ") and line[2] != " "]
    assert described == [*DEVICE_CSV_HEADER, *PROVIDER_COLUMNS]


@pytest.fixture
def reported_ledger(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Two statement-ready jobs: J-OLD recorded in January, J-NEW now; each with one document on two devices, one
    without a device, and a quarantined record."""
    monkeypatch.setenv("EXSTREAM_PUSH_HOME", str(tmp_path))
    monkeypatch.setenv("EXSTREAM_PUSH_DATABASE_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger = ledger_for(get_settings())
    for job in ("J-OLD", "J-NEW"):
        sent = pd.DataFrame(
            {"document_id": [f"{job}-D1"] * 2, "job_id": [job] * 2, "customer_id": ["C1"] * 2, "device_id": ["a", "b"]}
        )
        unreached = pd.DataFrame(
            {"document_id": [f"{job}-D2"], "job_id": [job], "customer_id": ["C2"], "device_id": [None]}
        )
        ledger.record_final(
            notification_rows(sent, "statement-ready", Status.SENT)
            + notification_rows(unreached, "statement-ready", Status.SKIPPED, reason="no_device")
        )
        ledger.record_rejected(
            [
                {
                    "use_case": "statement-ready",
                    "job_id": job,
                    "source": "manifest",
                    "position": 3,
                    "line": 12,
                    "status": Status.QUARANTINED,
                    "reason": "missing_customer_id",
                    "created_at": utcnow(),
                }
            ]
        )
    january = datetime(2026, 1, 15, tzinfo=UTC)
    with ledger.engine.begin() as conn:
        for model in (Notification, RejectedRecord):
            table = model.__table__
            conn.execute(update(table).where(table.c.job_id == "J-OLD").values(created_at=january))


def _report(capsys: pytest.CaptureFixture[str], *options: str) -> dict:
    capsys.readouterr()
    assert main(["report", "--json", *options]) == 0
    return json.loads(capsys.readouterr().out)


def test_report_keeps_notifications_and_rejected_records_apart_and_filters_by_job_and_time(
    reported_ledger: None, capsys: pytest.CaptureFixture[str]
) -> None:
    one_job = {
        "notifications": {"statement-ready": {"sent": 2, "skipped": 1}},
        "rejected_records": {"statement-ready": {"quarantined": 1}},
    }
    both_jobs = {
        "notifications": {"statement-ready": {"sent": 4, "skipped": 2}},
        "rejected_records": {"statement-ready": {"quarantined": 2}},
    }
    assert _report(capsys) == both_jobs
    assert _report(capsys, "--job", "J-OLD") == one_job
    assert _report(capsys, "--since", "2026-02-01T00:00:00+01:00") == one_job  # only J-NEW, recorded now
    assert _report(capsys, "--since", "2026-01-15T00:30:00+01:00") == both_jobs  # 23:30 UTC the day before
    assert _report(capsys, "--job", "J-OLD", "--since", "2026-02-01T00:00:00+00:00") == {
        "notifications": {},
        "rejected_records": {},
    }

    assert main(["report", "--job", "J-NEW"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("only job J-NEW\nnotifications (one per document, device and reminder stage)\n")
    assert "no_device" in text and "rejected input records" in text and "missing_customer_id" in text
