"""An independent reading of a generated scenario: what a correct statement-ready run must produce.

Written with the standard library only (ElementTree, csv) so it shares no code with the product.
"""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

DEAD_PREFIXES = ("unregistered-", "invalid-")


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


def read_scenario(manifest: Path, devices_csv: Path, job_id: str, step_id: str = "manifest") -> Expected:
    expected = Expected()
    devices_by_customer: dict[str, list[dict[str, str]]] = {}
    with devices_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            devices_by_customer.setdefault(row["customer_id"], []).append(row)
            expected.tokens[row["device_id"]] = row["token"]
            if row["token"].startswith("unregistered-"):
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
                if device["token"].startswith(DEAD_PREFIXES):
                    expected.failed.add(pair)
                else:
                    expected.accepted.add(pair)
    return expected
