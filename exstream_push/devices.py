"""Device registry import: CSV ``customer_id,device_id,platform,token,push_opt_in,locale,timezone,categories``."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from exstream_push.ledger import Ledger
from exstream_push.ledger.store import utcnow
from exstream_push.manifest import MAX_ID_LENGTH
from exstream_push.status import Platform
from exstream_push.zones import check_time_zone

DEVICE_CSV_HEADER = [
    "customer_id",
    "device_id",
    "platform",
    "token",
    "push_opt_in",
    "locale",
    "timezone",
    "categories",
]
PLATFORMS = frozenset(Platform)
_BOOLEANS = {"true": True, "false": False}
_IMPORT_CHUNK = 20_000


@dataclass
class ImportReport:
    imported: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)


def _parse_row(row: dict[str, str | None]) -> dict[str, object]:
    values = {name: (row.get(name) or "").strip() for name in DEVICE_CSV_HEADER}
    for required in ("customer_id", "device_id", "token"):
        if not values[required]:
            raise ValueError(f"{required} is empty")
    for name in ("customer_id", "device_id"):  # indexed in the ledger, which cannot hold any length
        if len(values[name]) > MAX_ID_LENGTH:
            raise ValueError(f"{name} is longer than {MAX_ID_LENGTH} characters")
    if values["platform"] not in PLATFORMS:
        raise ValueError(f"platform must be one of {', '.join(sorted(PLATFORMS))}, not {values['platform']!r}")
    opt_in = _BOOLEANS.get(values["push_opt_in"].lower())
    if opt_in is None:
        raise ValueError(f"push_opt_in must be true or false, not {values['push_opt_in']!r}")
    if values["timezone"]:
        check_time_zone(values["timezone"])
    categories = ";".join(sorted({c.strip() for c in values["categories"].split(";") if c.strip()}))
    return {
        "customer_id": values["customer_id"],
        "device_id": values["device_id"],
        "platform": values["platform"],
        "token": values["token"],
        "push_opt_in": opt_in,
        "active": True,
        "locale": values["locale"] or None,
        "timezone": values["timezone"] or None,
        "categories": categories,
        "deactivated_reason": None,
        "updated_at": utcnow(),
    }


def import_devices(ledger: Ledger, path: Path) -> ImportReport:
    """Upserts good rows by device_id; bad rows are reported with their line number and skipped.

    A re-imported device is active again: the import is the app back end's latest word on it.
    """
    report = ImportReport()
    pending: dict[str, dict[str, object]] = {}
    with Path(path).open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [name for name in DEVICE_CSV_HEADER if name not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: header lacks {', '.join(missing)}; expected {','.join(DEVICE_CSV_HEADER)}")
        for row in reader:
            if None in row:
                report.errors.append((reader.line_num, "more fields than the header"))
                continue
            try:
                parsed = _parse_row(row)
            except ValueError as exc:
                report.errors.append((reader.line_num, str(exc)))
                continue
            pending[str(parsed["device_id"])] = parsed
            if len(pending) >= _IMPORT_CHUNK:
                ledger.upsert_devices(list(pending.values()))
                report.imported += len(pending)
                pending.clear()
    ledger.upsert_devices(list(pending.values()))
    report.imported += len(pending)
    return report
