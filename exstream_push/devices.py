"""Device registry import: CSV ``customer_id,device_id,platform,token,push_opt_in,locale,timezone,categories``,
optionally followed by ``provider,webpush_p256dh,webpush_auth``.

A row without a provider is an FCM device, so files written before APNs and Web Push import unchanged. For an APNs
device ``token`` is its hex device token; for a Web Push one, the subscription's endpoint URL, with its two keys.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from exstream_push.connectors.apns import validate_device_token
from exstream_push.connectors.webpush import validate_subscription
from exstream_push.ledger import Ledger
from exstream_push.ledger.store import utcnow
from exstream_push.manifest import MAX_ID_LENGTH
from exstream_push.status import Platform, PushProvider
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
PROVIDER_COLUMNS = ["provider", "webpush_p256dh", "webpush_auth"]
"""Optional: a file without them holds FCM devices only."""
PLATFORMS = frozenset(Platform)
PROVIDERS = frozenset(PushProvider)
_BOOLEANS = {"true": True, "false": False}
_IMPORT_CHUNK = 20_000


@dataclass
class ImportReport:
    imported: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)


def address_problem(provider: str, token: str, p256dh: str | None, auth: str | None) -> str | None:
    """Why a device's address cannot be reached through its provider, or None: each provider's connector owns its
    rule (an APNs token is hex of a plausible length; a Web Push endpoint is https and its keys base64url of the
    right length). The words never quote the address."""
    if provider not in PROVIDERS:
        return f"provider must be one of {', '.join(sorted(PROVIDERS))}, not {provider!r}"
    if provider == PushProvider.WEBPUSH:
        problem = validate_subscription(token, p256dh or "", auth or "")
        return None if problem is None else f"web push subscription: {problem}"
    if p256dh or auth:
        return "webpush_p256dh and webpush_auth belong to webpush devices only"
    if provider == PushProvider.APNS:
        problem = validate_device_token(token)
        return None if problem is None else f"apns token: {problem}"
    return None


def _parse_row(row: dict[str, str | None]) -> dict[str, object]:
    values = {name: (row.get(name) or "").strip() for name in (*DEVICE_CSV_HEADER, *PROVIDER_COLUMNS)}
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
    provider = values["provider"] or PushProvider.FCM.value
    problem = address_problem(provider, values["token"], values["webpush_p256dh"], values["webpush_auth"])
    if problem is not None:
        raise ValueError(problem)
    categories = ";".join(sorted({c.strip() for c in values["categories"].split(";") if c.strip()}))
    return {
        "customer_id": values["customer_id"],
        "device_id": values["device_id"],
        "platform": values["platform"],
        "provider": provider,
        "token": values["token"],
        "webpush_p256dh": values["webpush_p256dh"] or None,
        "webpush_auth": values["webpush_auth"] or None,
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
