"""An independent reading of a generated scenario: what a correct statement-ready run must produce.

Written with the standard library only (ElementTree, csv) so it shares no code with the product.
"""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ET
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

DEAD_PREFIXES = ("unregistered-", "invalid-")
APNS_DEAD_PREFIXES = ("dead", "bad0")  # the APNs emulator's 410 Unregistered and 400 BadDeviceToken


def _refused(device: dict[str, str], gone_devices: Collection[str]) -> tuple[bool, bool]:
    """(the provider refuses every send to it, and the device is deactivated for that), by the emulators' rules."""
    provider, token = device.get("provider") or "fcm", device["token"]
    if provider == "apns":
        dead = token.startswith(APNS_DEAD_PREFIXES)
        return dead, dead
    if provider == "webpush":
        gone = device["device_id"] in gone_devices
        return gone, gone
    return token.startswith(DEAD_PREFIXES), token.startswith("unregistered-")


@dataclass
class Expected:
    documents: dict[str, dict[str, str]] = field(default_factory=dict)  # document_id → keys (first occurrence)
    quarantined: int = 0
    duplicates: int = 0  # the same document id again for the same customer
    conflicting: dict[str, str] = field(default_factory=dict)  # positional id → customer, of a reused document id
    eligible: set[tuple[str, str]] = field(default_factory=set)  # (document_id, device_id)
    accepted: set[tuple[str, str]] = field(default_factory=set)
    failed: set[tuple[str, str]] = field(default_factory=set)
    opted_out: set[tuple[str, str]] = field(default_factory=set)
    category_opted_out: set[tuple[str, str]] = field(default_factory=set)
    no_device: set[str] = field(default_factory=set)
    tokens: dict[str, str] = field(default_factory=dict)  # device_id → token
    unregistered_devices: set[str] = field(default_factory=set)
    manifest_values: dict[str, list[str]] = field(default_factory=dict)  # customer_id → every key value


def read_scenario(
    manifest: Path, devices_csv: Path, job_id: str, step_id: str = "manifest", gone_devices: Collection[str] = ()
) -> Expected:
    """``gone_devices``: web devices whose subscription the push service calls gone (410)."""
    expected = Expected()
    devices_by_customer: dict[str, list[dict[str, str]]] = {}
    with devices_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            devices_by_customer.setdefault(row["customer_id"], []).append(row)
            expected.tokens[row["device_id"]] = row["token"]
            if _refused(row, gone_devices)[1]:
                expected.unregistered_devices.add(row["device_id"])

    for position, customer in enumerate(ET.parse(manifest).getroot().iter("customer"), start=1):
        keys = {key.get("name"): (key.text or "").strip() for key in customer.iter("key")}
        if keys.get("CustomerId"):
            expected.manifest_values.setdefault(keys["CustomerId"], []).extend(
                value for name, value in keys.items() if name != "DocumentType" and value
            )
        if not keys.get("CustomerId") or not keys.get("DocumentType"):
            expected.quarantined += 1
            continue
        document_id = keys.get("DocumentId") or f"{job_id}/{step_id}/{position}"
        if document_id in expected.documents:
            if expected.documents[document_id]["CustomerId"] == keys["CustomerId"]:
                expected.duplicates += 1
            else:  # the id reused for another customer: quarantined, reported under its position
                expected.quarantined += 1
                expected.conflicting[f"{job_id}/{step_id}/{position}"] = keys["CustomerId"]
            continue
        expected.documents[document_id] = keys
        devices = devices_by_customer.get(keys["CustomerId"], [])
        if not devices:
            expected.no_device.add(document_id)
        for device in devices:
            pair = (document_id, device["device_id"])
            categories = [c for c in device["categories"].split(";") if c]
            if device["push_opt_in"] != "true":
                expected.opted_out.add(pair)
            elif categories and "statements" not in categories:
                expected.category_opted_out.add(pair)
            else:
                expected.eligible.add(pair)
                if _refused(device, gone_devices)[0]:
                    expected.failed.add(pair)
                else:
                    expected.accepted.add(pair)
    return expected
