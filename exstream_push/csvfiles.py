"""The one CSV writer: every CSV the project writes goes through it, so no cell can become a spreadsheet formula.

Ids, document types and reasons come from manifests and callers we do not control; a cell such as
``=HYPERLINK(…)`` or ``@SUM(1)`` would run when an operator opens the file in a spreadsheet. Following OWASP's
rule, a text cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is prefixed with ``'``.
Ordinary values (ids, statuses, reasons, ISO timestamps) never start that way and numbers are not text, so they
are written exactly as ``csv.writer`` writes them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any, TextIO

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: Any) -> Any:
    """The cell as written: text a spreadsheet would read as a formula gets a leading quote, the rest is as is."""
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return f"'{value}"
    return value


class CsvWriter:
    """``csv.writer`` with ``\\n`` line endings whose cells are neutralised on the way out.

    Python 3.11's writer quotes a cell only for the characters of its own line terminator, so with ``\\n`` a
    carriage return inside a cell would go out bare and split the row for every reader. Each row is formatted with
    ``\\r\\n`` (which quotes both) and written with ``\\n``: the same bytes for every other cell.
    """

    def __init__(self, handle: TextIO) -> None:
        self._handle = handle
        self._line = io.StringIO()
        self._writer = csv.writer(self._line, lineterminator="\r\n")

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow([neutralise(value) for value in row])
        line = self._line.getvalue()
        self._line.seek(0)
        self._line.truncate()
        self._handle.write(f"{line[:-2]}\n")
