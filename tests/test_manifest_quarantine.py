"""Bad manifest records through the real statement-ready flow: quarantined with reason and position, the rest sent.

Over-long ids on SQLite and PostgreSQL, an undecodable byte, a manifest shorter than it declares; and what Exstream
is told about each in the push-status CSV.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from exstream_push.cli import main
from exstream_push.flows.statement_ready import statement_ready
from exstream_push.ledger import RejectedRecord
from exstream_push.ledger.models import WorkRun
from exstream_push.manifest import MAX_ID_LENGTH
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from tests.conftest import exstream_inbox, fcm_messages

JOB_ID = "JOB-QUARANTINE-1"
# Incompressible, as real ids are: PostgreSQL compresses a repetitive value below its index limit.
LONG = "".join(hashlib.sha256(b"%d" % n).hexdigest() for n in range(47))[:3_000]


def _record(number: int, **overrides: bytes) -> bytes:
    """One <customer> of four lines; a key given as an override replaces the generated value."""
    keys = {
        "CustomerId": b"C%04d" % number,
        "DocumentId": b"D%04d" % number,
        "DocumentType": b"STATEMENT",
        **overrides,
    }
    lines = b"".join(b'<key name="%s">%s</key>' % (name.encode(), value) for name, value in keys.items())
    return b"  <customer>\n    " + lines + b"\n    <queueName>PDF</queueName>\n  </customer>\n"


def _write(path: Path, records: list[bytes], declared: int, tail: bool = True) -> None:
    head = b'<?xml version="1.0" encoding="UTF-8"?>\n<outputList customersProcessed="%d">\n' % declared
    path.write_bytes(head + b"".join(records) + (b"</outputList>\n" if tail else b""))


def _devices(path: Path, customers: int) -> None:
    rows = ["customer_id,device_id,platform,token,push_opt_in,locale,timezone,categories"]
    rows += [f"C{n:04d},dev-{n},android,tok-{n},true,en,UTC," for n in range(1, customers + 1)]
    path.write_text("\n".join(rows) + "\n")


def _rejected() -> list[RejectedRecord]:
    with ledger_for(get_settings()).engine.connect() as conn:
        return [RejectedRecord(**row._mapping) for row in conn.execute(select(RejectedRecord.__table__))]


def _run_totals() -> dict[str, int]:
    with ledger_for(get_settings()).engine.connect() as conn:
        (totals,) = conn.execute(select(WorkRun.totals)).one()
    return json.loads(totals)


def _push_status(exstream) -> list[dict[str, str]]:
    posts = [p for p in exstream_inbox(exstream) if p["path"].endswith("/push-status")]
    assert len(posts) == 1
    return list(csv.DictReader(io.StringIO(posts[0]["body"])))


def _run(manifest: Path) -> None:
    """The flow, whatever state it ends in: these tests look at what it sent, recorded and posted."""
    statement_ready(manifest=str(manifest), job_id=JOB_ID, return_state=True)


def test_over_long_ids_are_quarantined_and_the_run_goes_on(
    prefect_harness: None,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    fcm,
    exstream,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("EXSTREAM_PUSH_DATABASE_URL", database_url)
    manifest, devices = tmp_path / "_STDDELIVERYFILE.xml", tmp_path / "devices.csv"
    records = [_record(n) for n in range(1, 51)]
    records.insert(20, _record(51, DocumentId=LONG.encode()))
    records.insert(40, _record(52, CustomerId=LONG.encode()))
    _write(manifest, records, declared=52)
    _devices(devices, 52)
    assert main(["devices", "import", str(devices)]) == 0

    _run(manifest)
    assert len(fcm_messages(fcm)) == 50
    rejected = sorted(_rejected(), key=lambda r: r.position)
    assert [(r.position, r.line, r.reason) for r in rejected] == [
        (21, 3 + 20 * 4, "id_too_long"),
        (41, 3 + 40 * 4, "id_too_long"),
    ]
    assert all(
        len(r.document_id or "") <= MAX_ID_LENGTH and len(r.customer_id or "") <= MAX_ID_LENGTH for r in rejected
    )
    assert all(LONG not in (r.raw or "") for r in rejected)
    rows = _push_status(exstream)
    assert sum(row["push_status"] == "notified" for row in rows) == 50
    assert sorted(row["reason"] for row in rows if row["push_status"] == "not_notified") == ["id_too_long"] * 2
    assert _run_totals()["unreadable"] == 0

    # A re-run reads the same file again without failing and sends nothing twice.
    _run(manifest)
    assert len(fcm_messages(fcm)) == 50


def test_one_bad_byte_costs_one_record_and_the_rest_is_sent(
    prefect_harness: None, env: dict[str, str], fcm, exstream, tmp_path: Path
) -> None:
    manifest, devices = tmp_path / "_STDDELIVERYFILE.xml", tmp_path / "devices.csv"
    records = [_record(n, DocumentType=b"RELEV\xe9") if n == 100 else _record(n) for n in range(1, 1_001)]
    _write(manifest, records, declared=1_000)
    _devices(devices, 1_000)
    assert main(["devices", "import", str(devices)]) == 0

    _run(manifest)
    assert len(fcm_messages(fcm)) == 999
    assert [(r.position, r.line, r.reason, r.document_id) for r in _rejected()] == [
        (100, 3 + 99 * 4, "invalid_encoding", "D0100")
    ]
    rows = _push_status(exstream)
    assert len(rows) == 1_000
    assert [row["document_id"] for row in rows if row["push_status"] == "not_notified"] == ["D0100"]
    assert _run_totals()["unreadable"] == 1


def test_a_manifest_shorter_than_it_declares_is_counted_and_exstream_hears_of_it(
    prefect_harness: None, env: dict[str, str], fcm, exstream, tmp_path: Path
) -> None:
    manifest, devices = tmp_path / "_STDDELIVERYFILE.xml", tmp_path / "devices.csv"
    records = [_record(n) for n in range(1, 101)]
    records[-1] = records[-1][: len(records[-1]) // 2]  # cut inside record 100, as a truncated download would
    _write(manifest, records, declared=1_000, tail=False)
    _devices(devices, 100)
    assert main(["devices", "import", str(devices)]) == 0

    _run(manifest)
    assert len(fcm_messages(fcm)) == 99
    rejected = {r.reason: r for r in _rejected()}
    assert set(rejected) == {"malformed_xml", "unread_records:901"}
    assert rejected["malformed_xml"].position == 100
    assert json.loads(rejected["unread_records:901"].raw) == {"declared": 1_000, "read": 99}
    not_notified = [row["reason"] for row in _push_status(exstream) if row["push_status"] == "not_notified"]
    assert sorted(not_notified) == ["malformed_xml", "unread_records:901"]
    assert _run_totals()["unreadable"] == 901


def test_quarantined_records_keep_valid_json_and_no_nan(
    prefect_harness: None,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    fcm,
    exstream,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("EXSTREAM_PUSH_DATABASE_URL", database_url)
    manifest = tmp_path / "_STDDELIVERYFILE.xml"
    missing_customer = b'  <customer>\n    <key name="DocumentType">STATEMENT</key>\n  </customer>\n'
    _write(manifest, [_record(1), missing_customer], declared=2)

    _run(manifest)
    (rejected,) = _rejected()
    assert rejected.reason == "missing_customer_id" and rejected.customer_id is None
    assert json.loads(rejected.raw, parse_constant=lambda name: pytest.fail(f"raw holds {name}")) == {
        "document_id": f"{JOB_ID}/manifest/2",
        "document_type": "STATEMENT",
    }
    (row,) = [row for row in _push_status(exstream) if row["reason"] == "missing_customer_id"]
    assert row["customer_id"] == ""


@pytest.mark.parametrize("use_case", ["policy-change", "payment-reminders"])
def test_a_follow_up_or_reminder_run_on_a_short_manifest_ends_incomplete(
    prefect_harness: None, env: dict[str, str], fcm, exstream, tmp_path: Path, use_case: str
) -> None:
    """Every flow that extracts a manifest counts what it could not read: the run ends Failed, naming the count."""
    from exstream_push.flows.payment_reminders import payment_reminders
    from exstream_push.flows.policy_change import policy_change

    manifest = tmp_path / "_STDDELIVERYFILE.xml"
    records = [_record(n) for n in range(1, 11)]
    _write(manifest, records[:5], declared=10, tail=False)
    flow = policy_change if use_case == "policy-change" else payment_reminders
    state = flow(manifest=str(manifest), job_id=f"{JOB_ID}-{use_case}", return_state=True)
    assert state.is_failed()
    assert "declared but unreadable" in (state.message or "")
