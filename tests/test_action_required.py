"""Customer action required end to end: prompt at first sight, reminders at −7/−3/−1 days until completed, a
printed reminder through Exstream two days before the deadline, expiry after it; completion rate by action type.

Run at fixed ``as_of`` moments around one deadline (2026-12-20, i.e. until 2026-12-21T00:00Z), through the CLI and
an Exstream job fetched from the emulator for the first runs and the flow itself for the rest.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from prefect.artifacts import Artifact
from sqlalchemy import select

from exstream_push.cli import main
from exstream_push.flows.action_required import action_required
from exstream_push.ledger import Document
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push_dev.emulators.exstream import job_uuid
from tests.conftest import fcm_messages
from tests.test_policy_change import (
    customer_devices,
    eligible_devices,
    pairs,
    posts_to,
    resolve,
    write_devices,
    write_events,
    write_manifest,
)

USE_CASE = "action-required"
CHANNEL = "action-print-fallback"
DEADLINE = "2026-12-20"
JOB, LATE_JOB = job_uuid("ACT-2026-12"), "ACT-2026-12-LATE"
DOCUMENTS = 200
ACTION_TYPES = ("SIGN_DOCUMENT", "VERIFY_IDENTITY", "UPDATE_DETAILS")
LATE, EXPIRED_ON_ARRIVAL = 9001, 9002


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def document_id(number: int) -> str:
    return f"{LATE_JOB if number == LATE else JOB}-A{number:05d}"


def action_record(number: int, deadline: str | None = DEADLINE) -> dict[str, str | None]:
    kind = number % 40
    return {
        "CustomerId": f"C{number:05d}",
        "DocumentId": document_id(number),
        "DocumentType": "CONTRACT" if number % 2 else "KYC_REQUEST",
        "Locale": "fr" if number % 4 == 0 else "en",
        "ActionType": None if kind == 7 else ACTION_TYPES[number % 3],
        "ActionDeadline": None if kind == 9 else ("next week" if kind == 8 else deadline),
        "CustomerName": f"Bruno Customer{number}",
        "IBAN": f"FR76 3000 6000 0112 3456 7890 {number:03d}",
    }


def out_of_scope(number: int) -> bool:
    return number % 40 in (7, 8, 9)


def group(number: int) -> str:
    """Completed after the notice, after the first reminder, after the print fallback, or never."""
    return ("early", "after_first_reminder", "after_print", "never", "never")[number % 5]


def completion(number: int, moment: str) -> dict[str, str]:
    return {
        "event_id": f"done-{document_id(number)}",
        "type": "action_completed",
        "document_id": document_id(number),
        "customer_id": f"C{number:05d}",
        "occurred_at": moment,
    }


def expected(numbers: list[int]) -> Counter[tuple[str, str]]:
    return Counter((document_id(n), device) for n in numbers for device in eligible_devices(n, "actions"))


def test_action_required_prompts_reminds_prints_and_expires(
    prefect_harness: None,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    fcm: Any,
    exstream: Any,
    exstream_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("EXSTREAM_PUSH_BATCH_SIZE", "50")
    numbers = list(range(1, DOCUMENTS + 1))
    in_scope = [n for n in numbers if not out_of_scope(n)]
    by_group = {name: [n for n in in_scope if group(n) == name] for name in ("early", "after_first_reminder")}
    by_group |= {name: [n for n in in_scope if group(n) == name] for name in ("after_print", "never")}
    job_folder = exstream_data / "jobs" / JOB
    job_folder.mkdir(parents=True)
    records = [*(action_record(n) for n in numbers), action_record(EXPIRED_ON_ARRIVAL, "2026-11-30")]
    write_manifest(job_folder / "_STDDELIVERYFILE.xml", records)
    (job_folder / "job.json").write_text(json.dumps({"status": "complete", "channel": "actions", "mode": "BATCH"}))
    exstream.app.state.exstream.load_job_folder(job_folder)
    write_manifest(tmp_path / "late.xml", [action_record(LATE)])
    everyone = [*numbers, LATE, EXPIRED_ON_ARRIVAL]
    write_devices(tmp_path / "devices.csv", (d for n in everyone for d in customer_devices(n, "actions")))
    assert main(["devices", "import", str(tmp_path / "devices.csv")]) == 0
    write_events(tmp_path / "early.jsonl", [completion(n, "2026-12-05T10:00:00Z") for n in by_group["early"]])
    write_events(
        tmp_path / "mid.jsonl", [completion(n, "2026-12-16T08:00:00Z") for n in by_group["after_first_reminder"]]
    )
    write_events(tmp_path / "print.jsonl", [completion(n, "2026-12-19T12:00:00Z") for n in by_group["after_print"]])
    write_events(tmp_path / "late.jsonl", [completion(n, "2026-12-21T20:00:00Z") for n in by_group["never"]])
    documents = [document_id(n) for n in everyone]
    seen = 0
    capsys.readouterr()

    def delta() -> list[tuple[str, str, dict]]:
        nonlocal seen
        messages = fcm_messages(fcm)[seen:]
        seen += len(messages)
        return resolve(messages, USE_CASE, documents)

    def cli(*args: str) -> dict[str, Any]:
        assert main(["run", USE_CASE, *args]) == 0
        out = capsys.readouterr().out
        return json.loads(out[out.index("{") :])

    def run(moment: str, **inputs: str) -> dict[str, Any]:
        return action_required(as_of=at(moment), **inputs)

    # 1 December, from the Exstream job through the CLI: a prompt to every in-scope document; the one whose
    # deadline has already passed expires at once and is never prompted.
    result = cli("--job", JOB, "--as-of", "2026-12-01T09:00:00+00:00")
    sent = delta()
    assert pairs(sent) == expected(in_scope)
    assert result["customers"] == DOCUMENTS + 1 and result["quarantined"] == len(numbers) - len(in_scope)
    assert result["notice"] == len(in_scope) and result["expired"] == 1
    number_of = {document_id(n): n for n in everyone}
    by_action = {(ACTION_TYPES[number_of[d] % 3], m["notification"]["title"]) for d, _, m in sent}
    assert by_action == {
        ("SIGN_DOCUMENT", "A document is waiting for your signature"),
        ("SIGN_DOCUMENT", "Un document attend votre signature"),
        ("VERIFY_IDENTITY", "Please confirm your identity"),
        ("VERIFY_IDENTITY", "Confirmez votre identité"),
        ("UPDATE_DETAILS", "Action needed on your account"),  # no template of its own: the generic prompt
        ("UPDATE_DETAILS", "Une action est requise"),
    }
    for _, _, message in sent:
        text = json.dumps({k: v for k, v in message.items() if k != "token"})
        assert "FR76" not in text and "Bruno" not in text and DEADLINE not in text and "SIGN_DOCUMENT" not in text

    # 6 December, completions so far (through the CLI's --events): they close, nothing is sent.
    result = cli("--events", str(tmp_path / "early.jsonl"), "--as-of", "2026-12-06T09:00:00+00:00")
    assert result["action_completed"] == len(by_group["early"]) and not delta()

    # Just before and exactly at deadline − 7 days.
    run("2026-12-13T23:59:59+00:00")
    assert not delta()
    result = run("2026-12-14T00:00:00+00:00")
    still_open = by_group["after_first_reminder"] + by_group["after_print"] + by_group["never"]
    sent = delta()
    assert pairs(sent) == expected(still_open) and result["reminder-7d"] == len(still_open)
    assert {m["notification"]["title"] for _, _, m in sent} >= {
        "Reminder: your signature is still needed",
        "Reminder: identity check pending",
        "Reminder: action still needed",
    }

    result = run("2026-12-16T09:00:00+00:00", events=str(tmp_path / "mid.jsonl"))
    assert result["action_completed"] == len(by_group["after_first_reminder"]) and not delta()

    # A document first seen three days before its deadline gets its prompt, and only the reminders still ahead.
    result = run("2026-12-17T09:00:00+00:00", manifest=str(tmp_path / "late.xml"), job_id=LATE_JOB)
    assert pairs(delta()) == expected([LATE]) and result["notice"] == 1

    result = run("2026-12-18T09:00:00+00:00")
    still_open = by_group["after_print"] + by_group["never"] + [LATE]
    assert pairs(delta()) == expected(still_open) and result["reminder-3d"] == len(still_open)

    # Two days before the deadline: one printed-reminder request to Exstream for every uncompleted document.
    result = run("2026-12-19T09:00:00+00:00")
    assert not delta() and result["print_fallback"] == len(still_open)
    (posted,) = posts_to(exstream, CHANNEL)
    assert list(posted[0]) == [
        "document_id",
        "customer_id",
        "document_type",
        "job_id",
        "action_type",
        "action_deadline",
        "devices_notified",
        "reminders_sent",
        "print_fallback_at",
    ]
    assert sorted(row["document_id"] for row in posted) == sorted(document_id(n) for n in still_open)
    for row in posted:
        number = number_of[row["document_id"]]
        reachable = eligible_devices(number, "actions")
        assert row["customer_id"] == f"C{number:05d}"
        assert row["job_id"] == (LATE_JOB if number == LATE else JOB)
        assert (row["action_type"], row["action_deadline"]) == (ACTION_TYPES[number % 3], DEADLINE)
        assert row["devices_notified"] == str(len(reachable))
        assert row["reminders_sent"] == str((1 if number == LATE else 2) if reachable else 0)
        assert row["print_fallback_at"] == "2026-12-19T09:00:00Z"

    # Completed after the print request: closed, and no push for it from here on.
    result = run("2026-12-19T15:00:00+00:00", events=str(tmp_path / "print.jsonl"))
    assert result["action_completed"] == len(by_group["after_print"]) and not delta()

    # The last reminder (high priority) still goes to the uncompleted, printed or not.
    result = run("2026-12-20T09:00:00+00:00")
    sent = delta()
    assert pairs(sent) == expected(by_group["never"] + [LATE])
    assert {m["android"]["priority"] for _, _, m in sent} == {"high"}

    # Past the deadline they expire; a completion reported afterwards changes nothing and nothing more is sent.
    result = run("2026-12-21T09:00:00+00:00")
    assert result["expired"] == len(by_group["never"]) + 1 and not delta()
    result = run("2026-12-22T09:00:00+00:00", events=str(tmp_path / "late.jsonl"))
    assert not delta() and result.get("action_completed", 0) == 0
    assert len(posts_to(exstream, CHANNEL)) == 1

    with ledger_for(get_settings()).engine.connect() as conn:
        states = dict(
            conn.execute(
                select(Document.document_id, Document.state_changed_at).where(Document.use_case == USE_CASE)
            ).all()
        )
        final = dict(
            conn.execute(select(Document.document_id, Document.state).where(Document.use_case == USE_CASE)).all()
        )
    moments = {
        "early": ("action_completed", "2026-12-06T09:00:00+00:00"),
        "after_first_reminder": ("action_completed", "2026-12-16T09:00:00+00:00"),
        "after_print": ("action_completed", "2026-12-19T15:00:00+00:00"),
        "never": ("expired", "2026-12-21T09:00:00+00:00"),
    }
    for number in in_scope:
        state, moment = moments[group(number)]
        assert (final[document_id(number)], states[document_id(number)]) == (state, at(moment))
    assert final[document_id(EXPIRED_ON_ARRIVAL)] == "expired"

    # The completion rate artifact, by action type, over everything so far.
    table = result["completion"]
    artifact = Artifact.get("action-required-completion-rate")
    assert artifact is not None and json.loads(artifact.data) == table
    scope = [*in_scope, LATE, EXPIRED_ON_ARRIVAL]
    for action_type in ACTION_TYPES:
        mine = [n for n in scope if ACTION_TYPES[n % 3] == action_type]
        completed = sum(1 for n in mine if n in in_scope and group(n) != "never")
        printed = sum(1 for n in mine if n == LATE or (n in in_scope and group(n) in ("after_print", "never")))
        (row,) = [row for row in table if row["action_type"] == action_type]
        assert row == {
            "action_type": action_type,
            "documents": len(mine),
            "completed": completed,
            "in_progress": 0,
            "expired": len(mine) - completed,
            "print_fallback_sent": printed,
            "completion_rate": f"{completed / len(mine):.1%}",
        }
    assert table[-1]["action_type"] == "(all)" and table[-1]["documents"] == len(scope)
