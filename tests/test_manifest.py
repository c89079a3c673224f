"""The delivery-manifest reader: configurable keys, tolerance of unknown elements, broken files, flat memory."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from emulators.samples import write_manifest
from exstream_push.manifest import DeliveryManifest, ManifestError
from exstream_push.settings import ManifestKeys

MANIFEST = """<?xml version="1.0" encoding="UTF-8"?>
<outputList customersProcessed="3" pagesProcessed="9">
  <runInfo engine="16.6"><something/></runInfo>
  <customer>
    <key name="CustNo">A1</key>
    <key name="DocType">BILL</key>
    <key name="Due">2026-12-01</key>
    <queueName>PDF</queueName>
    <unknownElement>ignored</unknownElement>
  </customer>
  <customer>
    <key name="CustNo">  </key>
    <key name="DocType">BILL</key>
  </customer>
  <customer>
    <key name="CustNo">A3</key>
    <key name="DocId">D-3</key>
  </customer>
  <queue name="PDF"><file name="out.pdf"/></queue>
  <reportFile dataFile="Error_Report" name="errors.txt"/>
</outputList>
"""


def test_reads_application_defined_keys_and_extras(tmp_path: Path) -> None:
    path = tmp_path / "m.xml"
    path.write_text(MANIFEST)
    keys = ManifestKeys(customer_id="CustNo", document_type="DocType", document_id="DocId")
    manifest = DeliveryManifest(path, keys, extra_keys=["Due"])
    rows = [row for batch in manifest.batches(2) for row in batch.to_pylist()]
    assert [row["position"] for row in rows] == [1, 2, 3]
    assert rows[0]["customer_id"] == "A1" and rows[0]["document_type"] == "BILL" and rows[0]["Due"] == "2026-12-01"
    assert rows[0]["queue"] == "PDF" and rows[0]["line"] == 4
    assert rows[1]["customer_id"] is None  # blank text counts as missing
    assert rows[2]["document_id"] == "D-3" and rows[2]["document_type"] is None
    assert manifest.tail.customers_declared == 3 and manifest.tail.customers_read == 3
    assert manifest.tail.report_files == ["errors.txt"]


def test_truncated_file_keeps_what_was_read_and_says_where_it_broke(tmp_path: Path) -> None:
    path = tmp_path / "m.xml"
    path.write_text(MANIFEST[: MANIFEST.index('<key name="CustNo">A3')])
    manifest = DeliveryManifest(path, ManifestKeys(customer_id="CustNo", document_type="DocType"))
    rows = [row for batch in manifest.batches(10) for row in batch.to_pylist()]
    assert len(rows) == 2
    assert manifest.tail.broken_reason and manifest.tail.broken_reason.startswith("malformed_xml")
    assert manifest.tail.broken_at_line is not None


def test_not_xml_at_all_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "m.xml"
    path.write_text("customer_id,document\n1,2\n")
    with pytest.raises(ManifestError, match="not a readable delivery manifest"):
        list(DeliveryManifest(path).batches(10))


def test_memory_does_not_grow_with_the_number_of_customers(tmp_path: Path) -> None:
    """Peak Python allocations while streaming 20k and 80k customers stay within the same bound."""

    def peak_for(customers: int) -> int:
        path = tmp_path / f"m{customers}.xml"
        write_manifest(path, customers)
        tracemalloc.start()
        count = 0
        for batch in DeliveryManifest(path).batches(5_000):
            count += batch.num_rows
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert count == customers
        return peak

    small, large = peak_for(20_000), peak_for(80_000)
    assert large < small * 1.5, (small, large)
