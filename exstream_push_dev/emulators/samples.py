"""Synthetic Exstream runs and device registries, realistic enough to exercise every path of a flow.

Manifests carry the personal data real ones do (names, e-mail addresses, account numbers, amounts) so tests can
prove none of it reaches a push. Written streaming, so a million customers costs no memory.
"""

from __future__ import annotations

import base64
import csv
import json
import random
import ssl
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from exstream_push.devices import DEVICE_CSV_HEADER, PROVIDER_COLUMNS

DOCUMENT_TYPES = [("STATEMENT", 60), ("BILL", 20), ("POLICY", 10), ("LOAN_NOTICE", 5), ("TAX_FORM", 5)]
LOCALES = [("en", 70), ("fr", 15), ("de", 10), ("es-MX", 5)]
TIMEZONES = ["Europe/London", "Europe/Paris", "America/New_York", "America/Chicago", "Asia/Singapore"]
FAULT_PREFIXES = ["unregistered-", "invalid-", "flaky-", "quota-"]
APNS_FAULT_PREFIXES = ["dead", "bad0", "fa11", "0429"]
"""What the APNs emulator answers a token starting so (exstream_push_dev/emulators/apns.py)."""
WEBPUSH_PLACEHOLDER = "https://webpush.example.invalid/"
"""A web device's endpoint before its browser subscribed (``subscribe_web_devices``); ``gone-`` after it marks one
whose subscription the push service will call gone."""
GONE_MARK = "gone-"
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


@dataclass(frozen=True)
class ProviderMix:
    """The share of devices reached through APNs and Web Push; the rest are FCM's."""

    apns: float = 0.3
    webpush: float = 0.1


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _address(
    rng: random.Random, provider: str, number: int, index: int, faulty: bool
) -> tuple[str, str, str, str, str]:
    """(provider, platform, token, p256dh, auth) of one device: an APNs token is 64 hex characters (a fault prefix
    on some), a web device a placeholder subscription with well-formed keys until its browser subscribes."""
    if provider == "apns":
        token = f"{number:08x}{index:02x}{rng.getrandbits(216):054x}"
        return provider, "ios", (rng.choice(APNS_FAULT_PREFIXES) + token[4:]) if faulty else token, "", ""
    if provider == "webpush":
        point = ec.derive_private_key(rng.getrandbits(250) + 1, ec.SECP256R1()).public_key()
        p256dh = point.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        endpoint = f"{WEBPUSH_PLACEHOLDER}{GONE_MARK if faulty else ''}{number:08d}-{index}"
        return provider, "web", endpoint, _b64url(p256dh), _b64url(rng.randbytes(16))
    token = f"tok-{number:08d}-{index}-{rng.getrandbits(64):016x}"
    platform = rng.choice(["android", "android", "ios", "web"])
    return "fcm", platform, (rng.choice(FAULT_PREFIXES) + token) if faulty else token, "", ""


def write_devices(
    path: Path,
    customers: int,
    *,
    seed: int = 11,
    shape: ScenarioShape | None = None,
    mix: ProviderMix | None = None,
) -> None:
    """A device registry for customers 1..``customers``; FCM devices only (today's columns) unless ``mix`` gives
    APNs and Web Push shares, which adds the provider columns."""
    shape = shape or ScenarioShape()
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(DEVICE_CSV_HEADER if mix is None else [*DEVICE_CSV_HEADER, *PROVIDER_COLUMNS])
        for number in range(1, customers + 1):
            if rng.random() < shape.no_device:
                continue
            opted_in = rng.random() >= shape.opted_out
            categories = "bills;marketing" if rng.random() < shape.other_categories_only else ""
            count = 2 if rng.random() < shape.two_devices else 1
            for index in range(count):
                provider = "fcm"
                if mix is not None:
                    roll = rng.random()
                    provider = "apns" if roll < mix.apns else "webpush" if roll < mix.apns + mix.webpush else "fcm"
                    faulty = rng.random() < shape.fault_token
                    provider, platform, token, p256dh, auth = _address(rng, provider, number, index, faulty)
                else:  # the draws of the files written before providers, so their seeds give the same devices
                    platform = rng.choice(["android", "android", "ios", "web"])
                    token = f"tok-{number:08d}-{index}-{rng.getrandbits(64):016x}"
                    if rng.random() < shape.fault_token:
                        token = rng.choice(FAULT_PREFIXES) + token
                row = [
                    customer_id(number),
                    f"dev-{number:08d}-{index}",
                    platform,
                    token,
                    "true" if opted_in else "false",
                    rng.choice(["en", "fr", ""]),
                    rng.choice(TIMEZONES),
                    categories,
                ]
                writer.writerow(row if mix is None else [*row, provider, p256dh, auth])


def subscribe_web_devices(source: Path, target: Path, webpush_url: str, ca_file: Path) -> dict[str, str]:
    """``source`` as ``target``, each placeholder web device subscribed at the Web Push emulator as its browser
    would (``gone-`` ones as subscriptions that answer 410): the emulator keeps the private keys, so only
    subscriptions it made can be pushed to and read back. Returns device id → endpoint of the gone ones."""
    gone: dict[str, str] = {}
    with (
        source.open(newline="", encoding="utf-8") as handle,
        target.open("w", newline="", encoding="utf-8") as out,
        httpx.Client(base_url=webpush_url, verify=ssl.create_default_context(cafile=ca_file)) as browser,
    ):
        reader = csv.DictReader(handle)
        writer = csv.DictWriter(out, fieldnames=list(reader.fieldnames or []), lineterminator="\n")
        writer.writeheader()
        for row in reader:
            if row.get("provider") == "webpush" and row["token"].startswith(WEBPUSH_PLACEHOLDER):
                is_gone = row["token"].removeprefix(WEBPUSH_PLACEHOLDER).startswith(GONE_MARK)
                answer = browser.post("/_emulator/subscriptions", json={"gone": True} if is_gone else {})
                answer.raise_for_status()
                subscription = answer.json()
                row["token"] = subscription["endpoint"]
                row["webpush_p256dh"] = subscription["keys"]["p256dh"]
                row["webpush_auth"] = subscription["keys"]["auth"]
                if is_gone:
                    gone[row["device_id"]] = row["token"]
            writer.writerow(row)
    return gone


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
