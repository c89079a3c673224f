"""A lenient reader of Exstream's engine message file (``ExstreamMessages.dat``).

OpenText documents only that the file holds INFO/WARNING/ERROR/SEVERE messages, optionally timestamped
``mm/dd/yyyy hh:mm:ss``; the exact layout is not published and varies between versions. So each line is read as
``[timestamp] [level] [message code] text`` with every part optional, and a line that fits none of it is kept as
level-less noise rather than refused: a delivery-exception poller must never stop on an odd line. Indented lines
that follow a message continue it (engines wrap long messages and stack traces that way).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

LEVELS = ("INFO", "WARNING", "ERROR", "SEVERE")
ERROR_LEVELS = frozenset({"ERROR", "SEVERE"})
_LEVEL_WORDS = {
    "INFO": "INFO",
    "INFORMATION": "INFO",
    "WARNING": "WARNING",
    "WARN": "WARNING",
    "ERROR": "ERROR",
    "SEVERE": "SEVERE",
    "FATAL": "SEVERE",
}
_TIMESTAMP = re.compile(
    r"(?P<month>\d{1,2})/(?P<day>\d{1,2})/(?P<year>\d{4})[ T]+"
    r"(?P<hour>\d{1,2}):(?P<minute>\d{2}):(?P<second>\d{2})(?:[.,](?P<fraction>\d{1,6}))?"
    r"(?:\s*(?P<meridiem>[AaPp][Mm])\b)?"
)
_LEVEL = re.compile(r"(?P<open>[\[(<])?(?P<level>[A-Za-z]+)[\])>]?(?P<separator>:|\s+-\s+|\s+|$)")
# A message code has letters then digits (E0101, PRT-0417, DOC1102W); a bare number is a count, not a code.
_CODE = re.compile(r"[\[(]?(?P<code>[A-Za-z]{1,5}-?\d{2,6}[A-Za-z]?)[\])]?(?::|\s+-\s+|\s+|$)")
_CONTINUATION = re.compile(r"[ \t]")
MAX_TEXT = 4_000  # a runaway line (binary garbage, a dumped record) must not bloat the ledger


@dataclass(frozen=True)
class EngineMessage:
    """One message of the file; ``level`` is None for a line that did not say one (noise, a banner)."""

    line_number: int
    level: str | None
    text: str
    timestamp: datetime | None = None  # naive: the engine writes its local time without a zone
    code: str | None = None

    @property
    def is_error(self) -> bool:
        return self.level in ERROR_LEVELS


def _timestamp(match: re.Match[str]) -> datetime | None:
    """The date-time of a matched stamp, or None when the numbers make no date (13/45/2026)."""
    hour = int(match["hour"])
    meridiem = (match["meridiem"] or "").upper()
    if meridiem:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if meridiem == "PM" else 0)
    fraction = (match["fraction"] or "").ljust(6, "0")
    try:
        return datetime(
            int(match["year"]),
            int(match["month"]),
            int(match["day"]),
            hour,
            int(match["minute"]),
            int(match["second"]),
            int(fraction or 0),
        )
    except ValueError:
        return None


def _reads_as_level(word: re.Match[str]) -> bool:
    """``ERROR text``, ``Error: text`` and ``[Error] text`` name a level; ``Error count: 0`` is a sentence."""
    return word["level"].isupper() or bool(word["open"]) or word["separator"] == ":"


def parse_line(line: str, line_number: int = 0) -> EngineMessage:
    """Split one line into its optional parts; never raises."""
    rest = line.strip().lstrip("\ufeff").strip()
    timestamp = None
    stamp = _TIMESTAMP.match(rest)
    if stamp:
        timestamp = _timestamp(stamp)
        rest = rest[stamp.end() :].lstrip(" \t-|:")
    level = None
    word = _LEVEL.match(rest)
    if word and word["level"].upper() in _LEVEL_WORDS and _reads_as_level(word):
        level = _LEVEL_WORDS[word["level"].upper()]
        rest = rest[word.end() :].lstrip(" \t-|:")
    code = None
    if level is not None:
        found = _CODE.match(rest)
        if found:
            code = found["code"].upper()
            rest = rest[found.end() :].lstrip(" \t-|:")
    return EngineMessage(line_number=line_number, level=level, text=rest[:MAX_TEXT], timestamp=timestamp, code=code)


def parse_messages(lines: Iterable[str]) -> Iterator[EngineMessage]:
    """Messages in file order; an indented line after a message with a level is folded into that message."""
    current: EngineMessage | None = None
    for line_number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        message = parse_line(line, line_number)
        if current is not None and current.level is not None and message.level is None and _CONTINUATION.match(line):
            current = replace(current, text=f"{current.text} {message.text}"[:MAX_TEXT])
            continue
        if current is not None:
            yield current
        current = message
    if current is not None:
        yield current


def read_message_file(path: Path) -> Iterator[EngineMessage]:
    """Stream a message file; bytes that are not UTF-8 (engines also write Latin-1) are replaced, not fatal."""
    with Path(path).open(encoding="utf-8", errors="replace", newline="") as handle:
        yield from parse_messages(handle)
