"""The delivery-manifest reader: configurable keys, tolerance of unknown elements, broken files, flat memory."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from exstream_push.manifest import DeliveryManifest, ManifestError
from exstream_push.settings import ManifestKeys
from exstream_push_dev.emulators.samples import write_manifest

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


def _records(count: int, damaged: int | None = None, damage: bytes = b"\xe9") -> bytes:
    """A UTF-8 manifest of ``count`` records, four lines each from line 3; ``damage`` in record ``damaged``."""
    parts = [b'<?xml version="1.0" encoding="UTF-8"?>\n', b'<outputList customersProcessed="%d">\n' % count]
    for number in range(1, count + 1):
        document_type = b"RELEV" + damage if number == damaged else b"STATEMENT"
        parts.append(
            b'  <customer>\n    <key name="CustomerId">C%d</key>\n    <key name="DocumentType">%s</key>\n'
            b"  </customer>\n" % (number, document_type)
        )
    parts.append(b"</outputList>\n")
    return b"".join(parts)


@pytest.mark.parametrize("damage", [b"\xe9", b"\xc3(", b"\x01"], ids=["latin-1 byte", "broken sequence", "control"])
def test_a_bad_byte_costs_its_record_and_every_later_record_is_read(tmp_path: Path, damage: bytes) -> None:
    path = tmp_path / "m.xml"
    path.write_bytes(_records(1_000, damaged=100, damage=damage))
    manifest = DeliveryManifest(path)
    rows = [row for batch in manifest.batches(250) for row in batch.to_pylist()]
    assert [row["position"] for row in rows] == list(range(1, 1_001))
    assert [row["position"] for row in rows if row["undecodable"]] == [100]
    assert rows[99]["line"] == 3 + 99 * 4 and rows[99]["customer_id"] == "C100"
    assert rows[100]["document_type"] == "STATEMENT"
    assert manifest.tail.broken_reason is None and manifest.tail.customers_read == 1_000
    assert manifest.tail.replaced_characters >= 1


def test_an_entity_bomb_is_reported_at_its_line_in_the_file(tmp_path: Path) -> None:
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{level} "{f"&lol{level - 1};" * 10}">' for level in range(1, 10)
    ]
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        "<!DOCTYPE outputList [",
        *entities,
        "]>",
        '<outputList customersProcessed="3">',
        '  <customer><key name="CustomerId">C1</key><key name="DocumentType">STATEMENT</key></customer>',
        "  <customer>",
        '    <key name="CustomerId">C2</key>',
        '    <key name="DocumentType">&lol9;</key>',
        "  </customer>",
        '  <customer><key name="CustomerId">C3</key><key name="DocumentType">STATEMENT</key></customer>',
        "</outputList>",
    ]
    path = tmp_path / "m.xml"
    path.write_text("\n".join(lines) + "\n")
    manifest = DeliveryManifest(path)
    rows = [row for batch in manifest.batches(10) for row in batch.to_pylist()]
    assert [row["customer_id"] for row in rows] == ["C1"]
    assert manifest.tail.broken_at_line == lines.index('    <key name="DocumentType">&lol9;</key>') + 1
    assert manifest.tail.broken_reason and "line 1," not in manifest.tail.broken_reason


def test_utf8_bytes_under_a_latin1_declaration_are_read_as_utf8(tmp_path: Path) -> None:
    path = tmp_path / "m.xml"
    text = MANIFEST.replace('encoding="UTF-8"', 'encoding="ISO-8859-1"').replace(">BILL<", ">RELEVÉ<", 1)
    path.write_bytes(text.encode("utf-8"))
    keys = ManifestKeys(customer_id="CustNo", document_type="DocType", document_id="DocId")
    manifest = DeliveryManifest(path, keys)
    rows = [row for batch in manifest.batches(10) for row in batch.to_pylist()]
    assert rows[0]["document_type"] == "RELEVÉ" and not rows[0]["undecodable"]
    assert manifest.tail.encoding == "utf-8" and manifest.tail.declared_encoding == "ISO-8859-1"
    assert manifest.tail.mislabelled_characters == 1


@pytest.mark.parametrize("declared", ["ISO-8859-1", "windows-1252"])
def test_a_true_latin1_manifest_is_read_as_it_declares(tmp_path: Path, declared: str) -> None:
    path = tmp_path / "m.xml"
    text = MANIFEST.replace('encoding="UTF-8"', f'encoding="{declared}"').replace(">BILL<", ">RELEVÉ<", 1)
    path.write_bytes(text.encode("latin-1"))
    manifest = DeliveryManifest(path, ManifestKeys(customer_id="CustNo", document_type="DocType"))
    rows = [row for batch in manifest.batches(10) for row in batch.to_pylist()]
    assert rows[0]["document_type"] == "RELEVÉ" and not rows[0]["undecodable"]
    assert manifest.tail.mislabelled_characters == 0 and manifest.tail.replaced_characters == 0


def test_an_encoding_nobody_knows_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "m.xml"
    path.write_text(MANIFEST.replace('encoding="UTF-8"', 'encoding="x-no-such-charset"'))
    with pytest.raises(ManifestError, match="declares an encoding this reader does not know"):
        list(DeliveryManifest(path).batches(10))
