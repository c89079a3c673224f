"""The evidence log as a compliance officer meets it after real runs: a statement run, a policy-change run with a
reminder and an acknowledgement, and a lifecycle run, through the flows and the emulators; then `audit trail`
shows each step with its time and provider message id, and `audit verify` tells an untouched log from an edited
or a shortened one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from exstream_push.cli import main
from exstream_push.flows.lifecycle_tracking import lifecycle_tracking
from exstream_push.flows.policy_change import policy_change
from exstream_push.flows.statement_ready import statement_ready
from exstream_push.ledger import Evidence, Notification
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push_dev.emulators import samples
from tests.test_evidence import tamper
from tests.test_policy_change import (
    T0,
    acknowledgement,
    customer_devices,
    policy_record,
    write_devices,
    write_events,
    write_manifest,
)

POLICY_JOB = "POL-EVIDENCE-1"
STATEMENT_JOB = "JOB-EVIDENCE-1"
NUMBER = 4  # a policy document whose customer has two devices and acknowledges after the first reminder


def _trail(capsys: pytest.CaptureFixture[str], document_id: str) -> list[dict[str, str]]:
    capsys.readouterr()
    assert main(["audit", "trail", document_id]) == 0
    header, *lines = capsys.readouterr().out.strip().splitlines()
    names = header.split("\t")
    return [dict(zip(names, line.split("\t"), strict=True)) for line in lines]


def _verify(capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["audit", "verify"])
    return code, capsys.readouterr().out.strip()


def test_after_real_runs_the_trail_shows_every_step_and_verify_catches_an_edit_and_a_deletion(
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
    # A statement run: 40 customers, with devices.
    statement_manifest, statement_devices = tmp_path / "_STDDELIVERYFILE.xml", tmp_path / "statement-devices.csv"
    samples.write_manifest(statement_manifest, 40, seed=41, job_id=STATEMENT_JOB)
    samples.write_devices(statement_devices, 40, seed=42)
    assert main(["devices", "import", str(statement_devices)]) == 0
    assert statement_ready(manifest=str(statement_manifest), job_id=STATEMENT_JOB)["sent"] > 0

    # A policy change: the notice at t0, the first reminder at +3 days, the acknowledgement taken in at +4 days.
    # The ledger stamps what it does (first sighting, pushes) with the real time, and the customer's acknowledgement
    # carries its own: the timeline starts tomorrow at T0's hour (outside every device's quiet hours), so the
    # acknowledgement comes after them whatever the date.
    t0 = (datetime.now(UTC) + timedelta(days=1)).replace(hour=T0.hour, minute=0, second=0, microsecond=0)
    acknowledge_by = (t0 + timedelta(days=13)).date().isoformat()
    policy_records = [policy_record(number, POLICY_JOB, acknowledge_by) for number in range(1, 6)]
    write_manifest(tmp_path / "policy.xml", policy_records)
    write_devices(tmp_path / "policy-devices.csv", (d for n in range(1, 6) for d in customer_devices(n, "policies")))
    assert main(["devices", "import", str(tmp_path / "policy-devices.csv")]) == 0
    policy_change(manifest=str(tmp_path / "policy.xml"), job_id=POLICY_JOB, as_of=t0)
    policy_change(as_of=t0 + timedelta(days=3))
    write_events(tmp_path / "ack.jsonl", [acknowledgement(NUMBER, POLICY_JOB, t0 + timedelta(days=3, hours=2))])
    assert policy_change(events=str(tmp_path / "ack.jsonl"), as_of=t0 + timedelta(days=4))["acknowledged"] == 1
    lifecycle_tracking(as_of=t0 + timedelta(days=4, hours=1))

    ledger = ledger_for(get_settings())
    policy_document = f"{POLICY_JOB}-P{NUMBER:05d}"
    with ledger.engine.connect() as conn:
        message_ids = set(
            conn.scalars(
                select(Notification.provider_message_id).where(
                    Notification.document_id == policy_document, Notification.status == "sent"
                )
            )
        )
        statement_document, statement_message = conn.execute(
            select(Notification.document_id, Notification.provider_message_id).where(
                Notification.job_id == STATEMENT_JOB, Notification.status == "sent"
            )
        ).first()

    # The policy document's history, in order: generated, notified (each device, with FCM's message id), reminded,
    # acknowledged; each line with its time.
    trail = _trail(capsys, policy_document)
    facts = [line["fact"] for line in trail]
    assert facts[0] == "generated" and facts[-1] == "acknowledged", trail
    assert facts.index("notified") < facts.index("reminded") < facts.index("acknowledged"), trail
    sent = [line for line in trail if line["fact"] in ("notified", "reminded")]
    assert {line["provider_message_id"] for line in sent} == message_ids and len(message_ids) == len(sent)
    assert {line["provider"] for line in sent} == {"fcm"}
    times = [line["time"] for line in trail]
    assert times == sorted(times) and all(time.endswith("Z") for time in times)
    statement_trail = _trail(capsys, statement_document)
    assert [line["fact"] for line in statement_trail][:2] == ["generated", "notified"]
    assert statement_message in {line["provider_message_id"] for line in statement_trail}

    # Untouched, the log verifies; an edited timestamp is named; put back, it verifies again; a deleted row is named.
    code, out = _verify(capsys)
    assert code == 0 and out.startswith("evidence intact: "), out
    with ledger.engine.connect() as conn:
        edited, original = conn.execute(
            select(Evidence.id, Evidence.occurred_at).where(
                Evidence.document_id == policy_document, Evidence.fact == "reminded"
            )
        ).first()
    moved = (original + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S.%f")
    tamper(database_url, f"UPDATE evidence SET occurred_at = '{moved}' WHERE id = {edited}")
    code, out = _verify(capsys)
    assert code == 1 and out.startswith(f"evidence broken at record id={edited}, "), out
    tamper(
        database_url,
        f"UPDATE evidence SET occurred_at = '{original.strftime('%Y-%m-%d %H:%M:%S.%f')}' WHERE id = {edited}",
    )
    assert _verify(capsys)[0] == 0
    with ledger.engine.connect() as conn:
        deleted, shard = conn.execute(
            select(Evidence.id, Evidence.shard).where(
                Evidence.document_id == policy_document, Evidence.fact == "notified"
            )
        ).first()
    tamper(database_url, f"DELETE FROM evidence WHERE id = {deleted}")
    code, out = _verify(capsys)
    assert code == 1 and out.startswith("evidence broken at ") and f"shard={shard}," in out, out
