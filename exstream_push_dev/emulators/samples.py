"""Synthetic Exstream runs and device registries, realistic enough to exercise every path of a flow.

Manifests carry the personal data real ones do (names, e-mail addresses, account numbers, amounts) so tests can
prove none of it reaches a push. Written streaming, so a million customers costs no memory.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from exstream_push.devices import DEVICE_CSV_HEADER

DOCUMENT_TYPES = [("STATEMENT", 60), ("BILL", 20), ("POLICY", 10), ("LOAN_NOTICE", 5), ("TAX_FORM", 5)]
LOCALES = [("en", 70), ("fr", 15), ("de", 10), ("es-MX", 5)]
TIMEZONES = ["Europe/London", "Europe/Paris", "America/New_York", "America/Chicago", "Asia/Singapore"]
FAULT_PREFIXES = ["unregistered-", "invalid-", "flaky-", "quota-"]
FIRST_NAMES = ["Alice", "Bruno", "Chloe", "Dmitri", "Elena", "Farah", "Goran", "Hana"]


@dataclass(frozen=True)
class ScenarioShape:
    """Proportions of the awkward cases; the defaults sprinkle every one of them."""

    missing_customer_id: float = 0.004
    missing_document_type: float = 0.004
    missing_document_id: float = 0.01
    duplicate_document_id: float = 0.005
    no_device: float = 0.05
    two_devices: float = 0.30
    opted_out: float = 0.10
    other_categories_only: float = 0.04
    fault_token: float = 0.04


def _weighted(rng: random.Random, table: list[tuple[str, int]]) -> str:
    return rng.choices([name for name, _ in table], weights=[weight for _, weight in table])[0]


def customer_id(number: int) -> str:
    return f"C{number:08d}"


def write_manifest(
    path: Path, customers: int, *, seed: int = 7, shape: ScenarioShape | None = None, job_id: str = "JOB"
) -> None:
    shape = shape or ScenarioShape()
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    previous_ids: list[str] = []
    with path.open("w", encoding="utf-8") as out:
        out.write('<?xml version="1.0" encoding="UTF-8"?>\n')
        out.write(f'<outputList customersProcessed="{customers}" pagesProcessed="{customers * 3}">\n')
        for number in range(1, customers + 1):
            keys: list[tuple[str, str]] = []
            if rng.random() >= shape.missing_customer_id:
                keys.append(("CustomerId", customer_id(number)))
            roll = rng.random()
            if previous_ids and roll < shape.duplicate_document_id:
                keys.append(("DocumentId", rng.choice(previous_ids[-50:])))
            elif roll >= shape.duplicate_document_id + shape.missing_document_id:
                document_id = f"{job_id}-D{number:08d}"
                keys.append(("DocumentId", document_id))
                previous_ids.append(document_id)
                if len(previous_ids) > 200:
                    del previous_ids[:100]
            if rng.random() >= shape.missing_document_type:
                keys.append(("DocumentType", _weighted(rng, DOCUMENT_TYPES)))
            keys.append(("Locale", _weighted(rng, LOCALES)))
            name = f"{rng.choice(FIRST_NAMES)} Customer{number}"
            keys.append(("CustomerName", name))
            keys.append(("Email", f"customer{number}@example.com"))
            keys.append(("AccountNumber", f"{rng.randrange(10**11, 10**12)}"))
            keys.append(("AmountDue", f"{rng.randrange(100, 500_000) / 100:.2f}"))
            out.write("  <customer>\n")
            for name_, value in keys:
                out.write(f"    <key name={quoteattr(name_)}>{escape(value)}</key>\n")
            out.write("    <queueName>PDF</queueName>\n  </customer>\n")
        out.write('  <queue name="PDF"><file name="output/PDF/run_0001.pdf"/></queue>\n')
        out.write('  <reportFile dataFile="Error_Report" name="output/Error_Report.txt"/>\n')
        out.write("</outputList>\n")


def write_devices(path: Path, customers: int, *, seed: int = 11, shape: ScenarioShape | None = None) -> None:
    shape = shape or ScenarioShape()
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(DEVICE_CSV_HEADER)
        for number in range(1, customers + 1):
            if rng.random() < shape.no_device:
                continue
            opted_in = rng.random() >= shape.opted_out
            categories = "bills;marketing" if rng.random() < shape.other_categories_only else ""
            count = 2 if rng.random() < shape.two_devices else 1
            for index in range(count):
                platform = rng.choice(["android", "android", "ios", "web"])
                token = f"tok-{number:08d}-{index}-{rng.getrandbits(64):016x}"
                if rng.random() < shape.fault_token:
                    token = rng.choice(FAULT_PREFIXES) + token
                writer.writerow(
                    [
                        customer_id(number),
                        f"dev-{number:08d}-{index}",
                        platform,
                        token,
                        "true" if opted_in else "false",
                        rng.choice(["en", "fr", ""]),
                        rng.choice(TIMEZONES),
                        categories,
                    ]
                )


def write_message_file(path: Path, job_id: str, customers: int) -> None:
    path.write_text(
        f"11/29/2026 06:00:01 INFO  Engine started for job {job_id}\n"
        f"11/29/2026 06:00:02 INFO  Reading driver file\n"
        f"11/29/2026 06:41:17 WARNING  12 customers with missing optional fields\n"
        f"11/29/2026 06:52:40 INFO  {customers} customers processed\n",
        encoding="utf-8",
    )


def write_exstream_job(
    jobs_dir: Path, job_id: str, customers: int, *, seed: int = 7, channel: str = "statements"
) -> Path:
    """A job folder as the Exstream emulator reads it: manifest, message file and job fields."""
    folder = jobs_dir / job_id
    folder.mkdir(parents=True, exist_ok=True)
    write_manifest(folder / "_STDDELIVERYFILE.xml", customers, seed=seed, job_id=job_id)
    write_message_file(folder / "ExstreamMessages.dat", job_id, customers)
    (folder / "job.json").write_text(
        json.dumps(
            {"status": "complete", "channel": channel, "mode": "BATCH", "flowModelType": "COMMUNICATION"}, indent=2
        )
        + "\n",
        encoding="utf-8",
    )
    return folder
