"""Streaming reader for Exstream's delivery manifest (``_STDDELIVERYFILE.xml``).

The manifest lists one ``<customer>`` element per composed document, millions per run, with key names that each
Exstream application defines. It is read element by element and cleared behind the reader, so memory stays flat
whatever the number of customers; unknown elements are ignored.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
from lxml import etree

from exstream_push.settings import ManifestKeys

# The one schema for a manifest record. Use-case keys (due dates, action types, ...) are appended as string columns.
MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("position", pa.int64(), nullable=False),  # 1-based ordinal of the <customer> element
        pa.field("line", pa.int64()),  # line of the element in the file
        pa.field("customer_id", pa.string()),
        pa.field("document_id", pa.string()),
        pa.field("document_type", pa.string()),
        pa.field("locale", pa.string()),
        pa.field("queue", pa.string()),
    ]
)


class ManifestError(ValueError):
    """The manifest is not XML we can read at all (as opposed to one bad record, which is quarantined)."""


@dataclass
class ManifestTail:
    """What is known once the reader has finished: the header's count and where a broken file stopped."""

    customers_declared: int | None = None
    customers_read: int = 0
    broken_at_line: int | None = None
    broken_reason: str | None = None
    report_files: list[str] = field(default_factory=list)


def manifest_schema(extra_keys: Sequence[str] = ()) -> pa.Schema:
    schema = MANIFEST_SCHEMA
    for key in extra_keys:
        schema = schema.append(pa.field(key, pa.string()))
    return schema


class DeliveryManifest:
    """``for batch in DeliveryManifest(path, keys).batches(25_000)`` yields Arrow record batches."""

    def __init__(self, path: Path, keys: ManifestKeys | None = None, extra_keys: Sequence[str] = ()) -> None:
        self.path = Path(path)
        self.keys = keys or ManifestKeys()
        self.extra_keys = tuple(extra_keys)
        self.schema = manifest_schema(self.extra_keys)
        self.tail = ManifestTail()

    def batches(self, batch_size: int) -> Iterator[pa.RecordBatch]:
        key_to_column = {
            self.keys.customer_id: "customer_id",
            self.keys.document_id: "document_id",
            self.keys.document_type: "document_type",
            self.keys.locale: "locale",
        }
        for key in self.extra_keys:
            key_to_column.setdefault(key, key)
        names = self.schema.names
        columns: dict[str, list] = {name: [] for name in names}
        position = 0
        # Only elements we read or must release reach Python; a customer's children are read once it has ended.
        parser = etree.iterparse(
            str(self.path),
            events=("start", "end"),
            tag=("outputList", "customer", "queue", "reportFile"),
            resolve_entities=False,
            no_network=True,
            huge_tree=True,
            remove_comments=True,
        )
        try:
            for event, element in parser:
                tag = element.tag
                if event == "start":
                    if tag == "outputList":
                        declared = element.get("customersProcessed")
                        self.tail.customers_declared = int(declared) if declared and declared.isdigit() else None
                    continue
                if tag == "customer":
                    position += 1
                    row = dict.fromkeys(names)
                    row["position"] = position
                    row["line"] = element.sourceline
                    for child in element:
                        child_tag = child.tag
                        if child_tag == "key":
                            column = key_to_column.get(child.get("name", ""))
                            if column is not None:
                                text = (child.text or "").strip()
                                row[column] = text or None
                        elif child_tag == "queueName":
                            row["queue"] = (child.text or "").strip() or None
                    for name in names:
                        columns[name].append(row[name])
                    _release(element)
                    if position % batch_size == 0:
                        yield pa.RecordBatch.from_pydict(columns, schema=self.schema)
                        columns = {name: [] for name in names}
                elif tag == "reportFile":
                    self.tail.report_files.append(element.get("name", ""))
                    _release(element)
                else:
                    _release(element)
        except etree.XMLSyntaxError as exc:
            if position == 0 and not columns["position"]:
                raise ManifestError(f"{self.path.name}: not a readable delivery manifest: {exc}") from exc
            self.tail.broken_at_line = exc.lineno
            self.tail.broken_reason = f"malformed_xml: {exc.msg}"
        except OSError as exc:
            raise ManifestError(f"{self.path}: cannot read manifest: {exc}") from exc
        self.tail.customers_read = position
        if columns["position"]:
            yield pa.RecordBatch.from_pydict(columns, schema=self.schema)


def _release(element: etree._Element) -> None:
    """Drop a finished element and its already-read siblings so the tree never grows."""
    element.clear(keep_tail=False)
    parent = element.getparent()
    if parent is not None:
        while element.getprevious() is not None:
            del parent[0]
