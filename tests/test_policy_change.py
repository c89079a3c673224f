"""Policy change alerts end to end: notice, reminders at +3d/+7d until acknowledged, escalation to Exstream once.

The flow runs at fixed ``as_of`` moments against the emulators; expectations come from the scenario's groups,
written here independently of the product's planning code.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import pytest
from sqlalchemy import select

from exstream_push.cli import main
from exstream_push.content.links import document_ref
from exstream_push.flows.policy_change import policy_change
from exstream_push.ledger import Document, Notification, RejectedRecord
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from tests.conftest import exstream_inbox, fcm_messages

USE_CASE = "policy-change"
CHANNEL = "policy-ack-overdue"
T0 = datetime.fromisoformat("2026-12-01T09:00:00+00:00")
ACKNOWLEDGE_BY = "2026-12-14"  # the deadline is the end of that day: 2026-12-15T00:00Z
DOCUMENTS = 240


# -- scenario helpers, shared with the action-required and audit tests ------------------------------------------


def write_manifest(path: Path, records: Iterable[Mapping[str, str | None]]) -> None:
    """A delivery manifest with the given keys per customer; None leaves a key out."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<outputList>"]
    for record in records:
        lines.append("  <customer>")
        lines += [
            f"    <key name={quoteattr(name)}>{escape(value)}</key>"
            for name, value in record.items()
            if value is not None
        ]
        lines.append("    <queueName>PDF</queueName>\n  </customer>")
    lines.append("</outputList>")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_devices(path: Path, devices: Iterable[Mapping[str, str]]) -> None:
    header = ["customer_id", "device_id", "platform", "token", "push_opt_in", "locale", "timezone", "categories"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(devices)


def customer_devices(number: int, category: str) -> list[dict[str, str]]:
    """Devices for customer ``number``: none, one, two, opted out, or opted in to other categories only."""
    kind = number % 20
    if kind == 3:
        return []
    base = {"customer_id": f"C{number:05d}", "platform": "android", "locale": "", "timezone": "Europe/Paris"}
    one = {**base, "device_id": f"dev-{number:05d}-0", "token": f"tok-{number:05d}-0", "push_opt_in": "true"}
    if kind == 4:
        two = {**one, "device_id": f"dev-{number:05d}-1", "token": f"tok-{number:05d}-1", "platform": "ios"}
        return [{**one, "categories": ""}, {**two, "categories": f"{category};statements"}]
    if kind == 5:
        return [{**one, "categories": "statements"}]
    if kind == 6:
        return [{**one, "push_opt_in": "false", "categories": ""}]
    return [{**one, "categories": "" if number % 2 else f"{category};bills"}]


def eligible_devices(number: int, category: str) -> set[str]:
    """Who may be reached, by the registry's rules: opted in, and the category allowed."""
    return {
        device["device_id"]
        for device in customer_devices(number, category)
        if device["push_opt_in"] == "true" and (not device["categories"] or category in device["categories"])
    }


def write_events(path: Path, events: Iterable[Mapping[str, str]]) -> None:
    path.write_text("".join(json.dumps(event) + "\n" for event in events), encoding="utf-8")


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def resolve(messages: list[dict], use_case: str, documents: Iterable[str]) -> list[tuple[str, str, dict]]:
    """(document, device, message) per accepted message, through the opaque reference and the token."""
    key = get_settings().link_key
    by_ref = {document_ref(key, use_case, document_id): document_id for document_id in documents}
    return [(by_ref[m["data"]["document_ref"]], m["token"].replace("tok-", "dev-"), m) for m in messages]


def pairs(resolved: list[tuple[str, str, dict]]) -> Counter[tuple[str, str]]:
    return Counter((document_id, device_id) for document_id, device_id, _ in resolved)


def posts_to(exstream: Any, channel: str) -> list[list[dict[str, str]]]:
    return [
        list(csv.DictReader(io.StringIO(post["body"])))
        for post in exstream_inbox(exstream)
        if post["path"].endswith(f"/inputs/batch/default/{channel}")
    ]


# -- the scenario ----------------------------------------------------------------------------------------------


def policy_record(number: int, job: str, acknowledge_by: str | None = ACKNOWLEDGE_BY) -> dict[str, str | None]:
    return {
        "CustomerId": f"C{number:05d}",
        "DocumentId": f"{job}-P{number:05d}",
        "DocumentType": "POLICY" if number % 2 else "CONTRACT",
        "Locale": "fr" if number % 3 == 0 else "en",
        "RequiresAcknowledgement": "N" if number % 50 == 10 else "Y",
        "AcknowledgeBy": None if number % 50 == 11 else ("14/12/2026" if number % 50 == 12 else acknowledge_by),
        "CustomerName": f"Alice Customer{number}",
        "Email": f"customer{number}@example.com",
        "PolicyNumber": f"PN-{number:09d}",
    }


def out_of_scope(number: int) -> str | None:
    return {10: "not_required", 11: "missing_key:AcknowledgeBy", 12: "invalid_date:AcknowledgeBy"}.get(number % 50)


def group(number: int) -> str:
    """In-scope documents: acknowledged before the first reminder, between the reminders, or never."""
    return ("ack_early", "ack_late", "never", "never")[number % 4]


def acknowledgement(number: int, job: str, at: datetime) -> dict[str, str]:
    document_id = f"{job}-P{number:05d}"
    event = {"event_id": f"ack-{document_id}", "type": "acknowledged", "customer_id": f"C{number:05d}"}
    if number % 2:
        event["document_ref"] = document_ref(get_settings().link_key, USE_CASE, document_id)
    else:
        event["document_id"] = document_id
    return {**event, "occurred_at": iso(at)}


def expected_pairs(numbers: Iterable[int], job: str) -> Counter[tuple[str, str]]:
    return Counter(
        (f"{job}-P{number:05d}", device) for number in numbers for device in eligible_devices(number, "policies")
    )


def test_policy_change_reminds_until_acknowledged_then_escalates_once(
    prefect_harness: None,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    fcm: Any,
    exstream: Any,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("EXSTREAM_PUSH_DATABASE_URL", database_url)
    monkeypatch.setenv("EXSTREAM_PUSH_BATCH_SIZE", "64")  # several batches per step
    job, late_job = "POL-2026-12", "POL-2026-12-LATE"
    numbers = range(1, DOCUMENTS + 1)
    in_scope = [n for n in numbers if out_of_scope(n) is None]
    by_group = {name: [n for n in in_scope if group(n) == name] for name in ("ack_early", "ack_late", "never")}
    write_manifest(tmp_path / "manifest.xml", (policy_record(n, job) for n in numbers))
    # Arrives a week later: one document due on 2026-12-20, one whose AcknowledgeBy has already passed.
    late, overdue = 9001, 9002
    write_manifest(
        tmp_path / "late.xml",
        [policy_record(late, late_job, "2026-12-20"), policy_record(overdue, late_job, "2026-12-01")],
    )
    write_devices(
        tmp_path / "devices.csv", (d for n in [*numbers, late, overdue] for d in customer_devices(n, "policies"))
    )
    assert main(["devices", "import", str(tmp_path / "devices.csv")]) == 0
    all_documents = [f"{job}-P{n:05d}" for n in numbers] + [f"{late_job}-P{n:05d}" for n in (late, overdue)]
    early_events = [acknowledgement(n, job, T0 + timedelta(days=2)) for n in by_group["ack_early"]]
    opened = {"event_id": "open-1", "type": "opened", "customer_id": f"C{by_group['never'][0]:05d}"}
    opened |= {"document_id": f"{job}-P{by_group['never'][0]:05d}", "occurred_at": iso(T0 + timedelta(days=1))}
    write_events(tmp_path / "early.jsonl", [*early_events, opened])
    late_events = [acknowledgement(n, job, T0 + timedelta(days=5)) for n in by_group["ack_late"]]
    write_events(tmp_path / "late.jsonl", [*early_events, *late_events])  # early ones again: stored once

    seen = 0

    def run(moment: datetime, **inputs: str) -> tuple[dict[str, Any], Counter[tuple[str, str]], list[dict]]:
        """One flow run; returns its result, the (document, device) pairs it pushed, and those messages."""
        nonlocal seen
        result = policy_change(as_of=moment, **inputs)
        messages = fcm_messages(fcm)[seen:]
        seen += len(messages)
        return result, pairs(resolve(messages, USE_CASE, all_documents)), messages

    # T0: the notice to every in-scope document's reachable devices; the rest are accounted for.
    result, sent, messages = run(T0, manifest=str(tmp_path / "manifest.xml"), job_id=job)
    assert sent == expected_pairs(in_scope, job)
    assert result["notice"] == len(in_scope) and result["customers"] == DOCUMENTS
    assert result["quarantined"] == sum(1 for n in numbers if (out_of_scope(n) or "").startswith(("missing", "inv")))
    assert result["not_required"] == sum(1 for n in numbers if out_of_scope(n) == "not_required")
    titles = {m["notification"]["title"] for m in messages}
    assert titles == {
        "Please review a change to your policy",
        "Please review a change to your contract",
        "Un document contractuel a été modifié",
    }
    for message in messages:
        text = json.dumps({k: v for k, v in message.items() if k != "token"})
        assert "@example.com" not in text and "PN-" not in text and "Alice" not in text and ACKNOWLEDGE_BY not in text

    # A day later nothing is due.
    result, sent, _ = run(T0 + timedelta(days=1))
    assert not sent and result.get("notice", 0) == 0

    # +3 days, with the early acknowledgements: they close; everyone else gets the first reminder.
    result, sent, messages = run(T0 + timedelta(days=3), events=str(tmp_path / "early.jsonl"))
    assert result["events_stored"] == len(early_events) + 1
    assert result["acknowledged"] == len(by_group["ack_early"])
    assert sent == expected_pairs(by_group["ack_late"] + by_group["never"], job)
    assert {m["notification"]["title"] for m in messages} == {
        "Reminder: a change awaits your confirmation",
        "Rappel : une modification attend votre confirmation",
    }
    assert {m["android"]["priority"] for m in messages} == {"normal"}

    # The same moment again sends nothing: each stage is sent once, ever.
    result, sent, _ = run(T0 + timedelta(days=3))
    assert not sent

    # +7 days, with the later acknowledgements and the late manifest: the last reminder (high priority) to the
    # never-acknowledged, the notice to the new document, and the already-overdue one straight to Exstream.
    result, sent, messages = run(
        T0 + timedelta(days=7),
        events=str(tmp_path / "late.jsonl"),
        manifest=str(tmp_path / "late.xml"),
        job_id=late_job,
    )
    assert result["events_stored"] == len(late_events) and result["events_repeated"] == len(early_events)
    assert result["acknowledged"] == len(by_group["ack_late"])
    assert sent == expected_pairs(by_group["never"], job) + expected_pairs([late], late_job)
    priorities = {
        (d.startswith(late_job), m["android"]["priority"]) for d, _, m in resolve(messages, USE_CASE, all_documents)
    }
    assert priorities == {(False, "high"), (True, "normal")}
    assert result["escalated"] == 1

    # After AcknowledgeBy: no more pushes to the originals; every one never acknowledged goes to Exstream.
    # The late document, notified on the 8th and not due until the 21st, gets only its latest reminder (+7d).
    escalation_moment = T0 + timedelta(days=14)
    result, sent, messages = run(escalation_moment)
    assert sent == expected_pairs([late], late_job)
    assert {m["notification"]["title"] for m in messages} <= {"Reminder: a change awaits your confirmation"}
    assert result["escalated"] == len(by_group["never"])

    # Later runs change nothing and post nothing.
    result, sent, _ = run(escalation_moment + timedelta(days=1))
    assert not sent and result.get("escalated", 0) == 0

    posts = posts_to(exstream, CHANNEL)
    assert len(posts) == 2
    rows = [row for post in posts for row in post]
    assert Counter(row["document_id"] for row in rows) == Counter(
        [f"{late_job}-P{overdue:05d}"] + [f"{job}-P{n:05d}" for n in by_group["never"]]
    )
    assert list(rows[0]) == [
        "document_id",
        "customer_id",
        "document_type",
        "job_id",
        "acknowledge_by",
        "devices_notified",
        "reminders_sent",
        "escalated_at",
    ]
    assert posts[0] == [
        {
            "document_id": f"{late_job}-P{overdue:05d}",
            "customer_id": f"C{overdue:05d}",
            "document_type": "CONTRACT",
            "job_id": late_job,
            "acknowledge_by": "2026-12-01",
            "devices_notified": "0",
            "reminders_sent": "0",
            "escalated_at": iso(T0 + timedelta(days=7)),
        }
    ]
    for row in posts[1]:
        number = int(row["document_id"].rsplit("-P", 1)[1])
        reachable = eligible_devices(number, "policies")
        assert row["customer_id"] == f"C{number:05d}" and row["job_id"] == job
        assert row["acknowledge_by"] == ACKNOWLEDGE_BY
        assert row["devices_notified"] == str(len(reachable))
        assert row["reminders_sent"] == ("2" if reachable else "0")
        assert row["escalated_at"] == iso(escalation_moment)

    # The ledger: states moved once, at the moment of the run that saw the reason; bad records kept with reasons.
    ledger = ledger_for(get_settings())
    with ledger.engine.connect() as conn:
        states = {
            document_id: (state, changed)
            for document_id, state, changed in conn.execute(
                select(Document.document_id, Document.state, Document.state_changed_at).where(
                    Document.use_case == USE_CASE
                )
            )
        }
        rejected = dict(
            conn.execute(
                select(RejectedRecord.document_id, RejectedRecord.reason).where(RejectedRecord.use_case == USE_CASE)
            ).all()
        )
    expected_states = {"ack_early": ("acknowledged", 3), "ack_late": ("acknowledged", 7), "never": ("escalated", 14)}
    for number in in_scope:
        state, days = expected_states[group(number)]
        assert states[f"{job}-P{number:05d}"] == (state, T0 + timedelta(days=days))
    assert rejected == {f"{job}-P{n:05d}": out_of_scope(n) for n in numbers if out_of_scope(n)}
    assert states[f"{late_job}-P{late:05d}"][0] == "open"


def test_policy_change_reminders_keep_quiet_hours_and_the_frequency_cap(
    prefect_harness: None, env: dict[str, str], fcm: Any, tmp_path: Path
) -> None:
    """config/policy-change.yaml: reminders wait out 21:00–08:00 in the device's zone and at most two pushes per
    customer go out in any seven days; the first notice goes at once, whatever the hour."""
    job = "POL-QUIET"
    customer_of = {1: 1, 2: 2, 3: 3, 4: 3, 5: 5, 6: 5, 7: 5}  # document number -> customer number
    deadlines = {5: "2026-12-12", 6: "2026-12-13", 7: "2026-12-14"}  # C5's, so the cap has an order to keep
    records = [
        {**policy_record(n, job, deadlines.get(n, ACKNOWLEDGE_BY)), "CustomerId": f"C{c:05d}", "Locale": "en"}
        for n, c in customer_of.items()
    ]
    write_manifest(tmp_path / "manifest.xml", records)
    zones = {1: "Europe/Paris", 2: "America/Los_Angeles", 3: "Europe/London", 5: "Europe/London"}
    write_devices(
        tmp_path / "devices.csv",
        [
            {
                "customer_id": f"C{c:05d}",
                "device_id": f"dev-{c:05d}",
                "platform": "android",
                "token": f"tok-{c:05d}",
                "push_opt_in": "true",
                "locale": "",
                "timezone": zone,
                "categories": "",
            }
            for c, zone in zones.items()
        ],
    )
    assert main(["devices", "import", str(tmp_path / "devices.csv")]) == 0
    documents = {f"{job}-P{n:05d}": n for n in customer_of}
    seen = 0

    def run(moment: datetime, **inputs: str) -> tuple[dict[str, Any], Counter[tuple[int, str]]]:
        """One flow run: its result and the (document number, stage kind) pairs it pushed."""
        nonlocal seen
        result = policy_change(as_of=moment, **inputs)
        messages = fcm_messages(fcm)[seen:]
        seen += len(messages)
        pushed = Counter(
            (documents[document_id], "reminder" if m["notification"]["title"].startswith("Reminder") else "notice")
            for document_id, _, m in resolve(messages, USE_CASE, documents)
        )
        return result, pushed

    # 09:00Z, 01:00 in Los Angeles: every notice goes now; quiet hours hold back reminders only.
    _, pushed = run(T0, manifest=str(tmp_path / "manifest.xml"), job_id=job)
    assert pushed == Counter((n, "notice") for n in customer_of)

    # Three days later at 20:30Z (21:30 in Paris, 12:30 in LA and 20:30 in London), every reminder+3d is due. Paris
    # waits for the morning; C3 and C5 had two and three notices this week already: their reminders are capped.
    result, pushed = run(T0 + timedelta(days=3, hours=11, minutes=30))
    assert result["reminder+3d"] == len(customer_of)
    assert pushed == Counter({(2, "reminder"): 1})

    # 07:30Z is 08:30 in Paris: the held-back reminder goes, once; nothing else is owed.
    result, pushed = run(T0 + timedelta(days=4, hours=-1, minutes=-30))
    assert result["released"] == 1 and pushed == Counter({(1, "reminder"): 1})
    result, pushed = run(T0 + timedelta(days=4))
    assert not pushed and result["released"] == 0

    # A week after the notices, reminder+7d: at 09:00Z Los Angeles sleeps (01:00); the notices have left the
    # week; C5 may have two of its three, those whose deadline comes first.
    _, pushed = run(T0 + timedelta(days=7))
    assert pushed == Counter([(1, "reminder"), (3, "reminder"), (4, "reminder"), (5, "reminder"), (6, "reminder")])
    _, pushed = run(T0 + timedelta(days=7, hours=8))  # 09:00 in Los Angeles
    assert pushed == Counter({(2, "reminder"): 1})

    with ledger_for(get_settings()).engine.connect() as conn:
        capped = conn.execute(
            select(Notification.document_id, Notification.stage).where(
                Notification.use_case == USE_CASE, Notification.reason == "frequency_capped"
            )
        ).all()
    assert sorted((documents[d], stage) for d, stage in capped) == [
        (3, "reminder+3d"),
        (4, "reminder+3d"),
        (5, "reminder+3d"),
        (6, "reminder+3d"),
        (7, "reminder+3d"),
        (7, "reminder+7d"),
    ]
