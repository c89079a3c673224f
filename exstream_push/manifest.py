"""Streaming reader for Exstream's delivery manifest (``_STDDELIVERYFILE.xml``).

The manifest lists one ``<customer>`` element per composed document, millions per run, with key names that each
Exstream application defines. It is read element by element and cleared behind the reader, so memory stays flat
whatever the number of customers; unknown elements are ignored.

The parser reads the file through ``_Utf8Stream``, which decodes it in the encoding it declares and hands the parser
UTF-8: a byte sequence that encoding cannot decode (or a character XML forbids) becomes U+FFFD instead of stopping
the parser, so one bad byte costs its record (``undecodable``), not the rest of the file.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

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
        # A key value held U+FFFD: bytes the file's encoding could not decode. Popped and quarantined by extraction.
        pa.field("undecodable", pa.bool_(), nullable=False),
    ]
)

# Ids and keys become index keys: PostgreSQL's btree refuses entries over about 2,700 bytes, and no real id comes
# near this. The manifest reader, devices import and the ingress API all bound them by it.
MAX_ID_LENGTH = 256
"""The longest value, in characters, of a manifest key (customer id, document id, document type, locale and the
use-case keys) or of a device's ids. Longer values are refused with a reason rather than handed to the ledger,
whose indexes cannot hold them on every backend (PostgreSQL's btree stops at 2,704 bytes)."""

ID_COLUMNS = ("customer_id", "document_id", "document_type", "locale")
"""The schema's columns read from manifest keys, beside the use-case keys appended to it."""

REPLACEMENT = "\ufffd"
# Characters XML 1.0 forbids: libxml2 stops at them like at an undecodable byte, so they are replaced alike.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_CONTROL_BYTES = bytes([*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20)])
_NOT_CONTROL_BYTES = bytes(sorted(set(range(256)) - set(_CONTROL_BYTES)))  # deleted, only control bytes are left
_DECLARED_ENCODING = re.compile(rb"\A(?:\xef\xbb\xbf)?<\?xml\s[^>]*?encoding\s*=\s*[\"']([A-Za-z][A-Za-z0-9._-]*)[\"']")
_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
    (b"<\x00?\x00", "utf-16-le"),
    (b"\x00<\x00?", "utf-16-be"),
)
_NOT_LEAD_BYTES = bytes(range(0xC0))  # what is left of valid UTF-8 once these are deleted: one byte per character
_CHUNK = 1 << 16


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
    declared_encoding: str | None = None  # what the XML declaration (or byte-order mark) says, None if silent
    encoding: str = "utf-8"  # what the file was read as
    mislabelled_characters: int = 0  # non-ASCII characters read as UTF-8 although another encoding was declared
    replaced_characters: int = 0  # U+FFFD read: undecodable bytes and XML-illegal characters, or the file's own


def _stated_encoding(handle: BinaryIO) -> str | None:
    """The encoding the file states by its byte-order mark or XML declaration, None if it states none."""
    head = handle.read(1024)
    handle.seek(0)
    for mark, encoding in _BYTE_ORDER_MARKS:
        if head.startswith(mark):
            return encoding
    match = _DECLARED_ENCODING.match(head)
    return match.group(1).decode("ascii") if match else None


def _utf8_characters(handle: BinaryIO) -> int | None:
    """Non-ASCII characters in the file if all of it is valid UTF-8, else None; stops at the first invalid byte."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    count = 0
    try:
        while chunk := handle.read(_CHUNK):
            decoder.decode(chunk)
            if not chunk.isascii():
                count += len(chunk.translate(None, _NOT_LEAD_BYTES))
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return None
    finally:
        handle.seek(0)
    return count


class _Utf8Stream:
    """The file as UTF-8 for the parser, read in ``encoding``; what cannot be decoded becomes U+FFFD, counted."""

    def __init__(self, handle: BinaryIO, encoding: str) -> None:
        self._handle = handle
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        self.replaced = 0

    def read(self, size: int = -1) -> bytes:
        while True:
            chunk = self._handle.read(size if size > 0 else _CHUNK)
            text = self._decoder.decode(chunk, final=not chunk)
            if text or not chunk:
                break
        encoded = text.encode("utf-8")
        # The regular expression costs 40 ms a megabyte; these checks a few, and find what it would find.
        if encoded.translate(None, _NOT_CONTROL_BYTES) or "\ufffe" in text or "\uffff" in text:
            text = _XML_ILLEGAL.sub(REPLACEMENT, text)
            encoded = text.encode("utf-8")
        self.replaced += text.count(REPLACEMENT)
        return encoded


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
        try:
            with self.path.open("rb") as handle:
                yield from self._read(handle, batch_size)
        except OSError as exc:
            raise ManifestError(f"{self.path}: cannot read manifest: {exc}") from exc

    def _open(self, handle: BinaryIO) -> _Utf8Stream:
        """The parser's input: the file decoded as it states (UTF-8 if silent).

        A file declaring a legacy encoding whose bytes are valid UTF-8 with non-ASCII characters was written as
        UTF-8 and labelled wrongly: read as declared it would become mojibake (``RELEVÃ\\x89``), so it is read as
        UTF-8, and the tail says how many characters that concerned.
        """
        declared = _stated_encoding(handle)
        try:
            encoding = codecs.lookup(declared or "utf-8").name
        except LookupError:
            message = f"{self.path.name}: declares an encoding this reader does not know: {declared!r}"
            raise ManifestError(message) from None
        self.tail.declared_encoding = declared
        if not encoding.startswith("utf-"):
            mislabelled = _utf8_characters(handle)
            if mislabelled:
                encoding = "utf-8"
                self.tail.mislabelled_characters = mislabelled
        self.tail.encoding = encoding
        return _Utf8Stream(handle, encoding)

    def _read(self, handle: BinaryIO, batch_size: int) -> Iterator[pa.RecordBatch]:
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
        root: etree._Element | None = None
        stream = self._open(handle)
        # Only elements we read or must release reach Python; a customer's children are read once it has ended.
        parser = etree.XMLPullParser(
            events=("start", "end"),
            tag=("outputList", "customer", "queue", "reportFile"),
            encoding="UTF-8",
            resolve_entities=False,
            no_network=True,
            huge_tree=True,
            remove_comments=True,
        )
        try:
            for event, element in _events(parser, stream):
                tag = element.tag
                if event == "start":
                    if tag == "outputList":
                        root = element
                        declared = element.get("customersProcessed")
                        self.tail.customers_declared = int(declared) if declared and declared.isdigit() else None
                    continue
                if tag == "customer":
                    position += 1
                    row = dict.fromkeys(names)
                    row["position"] = position
                    row["line"] = element.sourceline
                    row["undecodable"] = False
                    for child in element:
                        child_tag = child.tag
                        if child_tag == "key":
                            column = key_to_column.get(child.get("name", ""))
                            if column is not None:
                                text = (child.text or "").strip()
                                row[column] = text or None
                                if REPLACEMENT in text:
                                    row["undecodable"] = True
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
            self.tail.broken_at_line = _broken_at_line(exc, root)
            self.tail.broken_reason = f"malformed_xml: {_syntax_message(exc)}"
        finally:
            self.tail.replaced_characters = stream.replaced
        self.tail.customers_read = position
        if columns["position"]:
            yield pa.RecordBatch.from_pydict(columns, schema=self.schema)


def _events(parser: etree.XMLPullParser, stream: _Utf8Stream) -> Iterator[tuple[str, etree._Element]]:
    """The parser's events as it is fed the stream, then its syntax error, if any.

    The events it produced before an error in the data come first: lxml's ``iterparse`` (from 6.2) raises an
    entity's amplification error before handing over the customers parsed ahead of it, whose records would be
    lost. At a premature end of the file, lxml 6.2 closes the elements still open; those events are not handed
    over, so a customer cut short is unread, not read incomplete."""
    try:
        while chunk := stream.read(_CHUNK):
            parser.feed(chunk)
            yield from parser.read_events()
    except etree.XMLSyntaxError:
        yield from parser.read_events()
        raise
    parser.close()
    yield from parser.read_events()


def _broken_at_line(exc: etree.XMLSyntaxError, root: etree._Element | None) -> int | None:
    """The file's line where parsing stopped: never before the element being read.

    An error inside an entity's replacement text (a billion-laughs expansion) carries the entity's own line, 1;
    the deepest element the parser had opened when it stopped is where the failing reference sits in the file.
    """
    line = exc.lineno or 0
    node = root
    while node is not None and len(node):
        node = node[-1]
    if node is not None and node.sourceline:
        line = max(line, node.sourceline)
    return line or None


def _syntax_message(exc: etree.XMLSyntaxError) -> str:
    """libxml2's message without the position it appends, which may be relative to an entity, not the file."""
    last = exc.error_log.last_error if exc.error_log else None
    return last.message if last is not None and last.message else exc.msg


def _release(element: etree._Element) -> None:
    """Drop a finished element and its already-read siblings so the tree never grows."""
    element.clear(keep_tail=False)
    parent = element.getparent()
    if parent is not None:
        while element.getprevious() is not None:
            del parent[0]
