"""One send path for FCM, APNs and Web Push: statement-ready end to end with a registry of all three, real senders
against their emulators (APNs over HTTP/2 and TLS, Web Push encrypted and decrypted again), SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import json
import ssl
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prefect.settings import PREFECT_API_URL
from sqlalchemy import select

from exstream_push.cli import main
from exstream_push.connectors.push_errors import PushConfigurationError
from exstream_push.content.links import document_ref
from exstream_push.devices import DEVICE_CSV_HEADER, PROVIDER_COLUMNS
from exstream_push.flows.operational_alert import operational_alert
from exstream_push.flows.payment_reminders import payment_reminders
from exstream_push.flows.policy_change import policy_change
from exstream_push.flows.statement_ready import statement_ready
from exstream_push.ingress.app import create_app
from exstream_push.ledger import Device, Notification
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push_dev.emulators.apns import ApnsEmulator
from exstream_push_dev.emulators.samples import ProviderMix, subscribe_web_devices, write_devices, write_manifest
from exstream_push_dev.emulators.server import ServerThread
from tests.conftest import apns_messages, fcm_messages, webpush_messages
from tests.oracle import Expected, read_scenario
from tests.test_ingress import SECRET, Ingress
from tests.test_operational_alert import AS_OF, raise_alert
from tests.test_payment_reminders import T1 as REMINDER_T1
from tests.test_payment_reminders import Doc, Scenario
from tests.test_policy_change import ACKNOWLEDGE_BY, acknowledgement, policy_record, write_events
from tests.test_policy_change import T0 as POLICY_T0
from tests.test_policy_change import write_manifest as write_policy_manifest

CUSTOMERS = 1_500
JOB_ID = "JOB-PROVIDERS-1"
USE_CASE = "statement-ready"
DATA_KEYS = {"use_case", "category", "document_type", "document_ref", "deep_link"}


def mixed_registry(folder: Path, customers: int, seed: int, webpush: ServerThread) -> tuple[Path, dict[str, str]]:
    """A device file of all three providers whose web devices subscribed at the emulator; and the gone ones."""
    placeholders, devices = folder / "devices-before-subscribing.csv", folder / "devices.csv"
    write_devices(placeholders, customers, seed=seed, mix=ProviderMix(apns=0.3, webpush=0.1))
    gone = subscribe_web_devices(placeholders, devices, webpush.url, webpush.tls.ca_file)
    return devices, gone


def delivered(
    expected: Expected, fcm: ServerThread, apns: ApnsEmulator, webpush: ServerThread
) -> tuple[Counter[tuple[str, str]], dict[str, list[dict[str, Any]]]]:
    """(document, device) → copies received across the three emulators, and each emulator's messages with the
    data it carried (FCM's ``data``; APNs' custom keys beside ``aps``; Web Push's decrypted ``data``)."""
    key = get_settings().link_key
    refs = {document_ref(key, USE_CASE, document_id): document_id for document_id in expected.documents}
    device_of = {token: device for device, token in expected.tokens.items()}
    received = {
        "fcm": [{**m, "address": m["token"], "shown": m["data"]} for m in fcm_messages(fcm)],
        "apns": [],
        "webpush": [],
    }
    for message in apns_messages(apns):
        payload = _json(message["payload"])
        shown = {k: v for k, v in payload.items() if k != "aps"}
        received["apns"].append({**message, "address": message["device_token"], "body": payload, "shown": shown})
    for message in webpush_messages(webpush):
        payload = _json(message["payload"])
        received["webpush"].append(
            {**message, "address": message["endpoint"], "body": payload, "shown": payload["data"]}
        )
    copies: Counter[tuple[str, str]] = Counter()
    for messages in received.values():
        copies.update((refs[m["shown"]["document_ref"]], device_of[m["address"]]) for m in messages)
    return copies, received


def _json(payload: Any) -> dict[str, Any]:
    return payload if isinstance(payload, dict) else orjson.loads(payload)


def test_statement_ready_reaches_every_device_through_its_own_provider(
    prefect_harness: None,
    every_provider_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    tmp_path: Path,
    fcm: ServerThread,
    apns: ApnsEmulator,
    webpush: ServerThread,
    exstream: ServerThread,
) -> None:
    monkeypatch.setenv("EXSTREAM_PUSH_DATABASE_URL", database_url)
    monkeypatch.setenv("EXSTREAM_PUSH_BATCH_SIZE", "500")  # several batches, each sending to all three at once
    manifest = tmp_path / "_STDDELIVERYFILE.xml"
    write_manifest(manifest, CUSTOMERS, seed=51, job_id=JOB_ID)
    devices, gone = mixed_registry(tmp_path, CUSTOMERS, 52, webpush)
    expected = read_scenario(manifest, devices, JOB_ID, gone_devices=gone)
    provider_of = providers(devices)
    assert gone and {provider_of[d] for _, d in expected.accepted} == {"fcm", "apns", "webpush"}
    assert {provider_of[d] for d in expected.unregistered_devices} == {"fcm", "apns", "webpush"}

    assert main(["devices", "import", str(devices)]) == 0
    result = statement_ready(manifest=str(manifest), job_id=JOB_ID)

    # Exactly one accepted message per eligible (document, active device), on the emulator of its provider.
    copies, received = delivered(expected, fcm, apns, webpush)
    assert set(copies) == expected.accepted
    assert max(copies.values()) == 1
    device_of = {token: device for device, token in expected.tokens.items()}
    for provider, messages in received.items():
        assert messages, f"no message reached the {provider} emulator"
        assert {provider_of[device_of[m["address"]]] for m in messages} == {provider}
    assert result["sent"] == len(expected.accepted)

    # Every provider's message carries what FCM's does and nothing else: no manifest value anywhere.
    key = get_settings().link_key
    document_of = {document_ref(key, USE_CASE, document_id): document_id for document_id in expected.documents}
    for provider, messages in received.items():
        for message in messages:
            assert set(message["shown"]) == DATA_KEYS
            assert message["shown"]["use_case"] == USE_CASE and message["shown"]["category"] == "statements"
            keys = expected.documents[document_of[message["shown"]["document_ref"]]]
            text = json.dumps(message.get("body", message["shown"]))
            leaked = [v for name, v in keys.items() if name not in ("DocumentType", "Locale") and v in text]
            assert not leaked, f"a {provider} message carries manifest values"
    for message in received["apns"]:
        assert set(message["body"]) == {"aps", *DATA_KEYS}
        assert set(message["body"]["aps"]) == {"alert"} and set(message["body"]["aps"]["alert"]) == {"title", "body"}
        assert message["headers"]["apns-collapse-id"] and message["headers"]["apns-push-type"] == "alert"
    for message in received["webpush"]:
        assert set(message["body"]) == {"notification", "data"}
        assert set(message["body"]["notification"]) == {"title", "body"}
        assert message["headers"]["topic"]

    # Dead APNs tokens, gone subscriptions and unregistered FCM tokens reached are deactivated, with the reason.
    with ledger_for(get_settings()).engine.connect() as conn:
        inactive = dict(conn.execute(select(Device.device_id, Device.deactivated_reason).where(~Device.active)).all())
    assert set(inactive) == {device for _, device in expected.failed if device in expected.unregistered_devices}
    reasons = {provider_of[device]: reason.split(":")[0] for device, reason in inactive.items()}
    assert reasons == {"fcm": "fcm", "apns": "apns", "webpush": "webpush"}

    # A re-run sends nothing anywhere.
    statement_ready(manifest=str(manifest), job_id=JOB_ID)
    again, _ = delivered(expected, fcm, apns, webpush)
    assert again == copies


def test_a_provider_not_configured_leaves_its_messages_pending_and_fails_the_send_after_the_rest(
    prefect_harness: None,
    every_provider_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    fcm: ServerThread,
    apns: ApnsEmulator,
    webpush: ServerThread,
    exstream: ServerThread,
) -> None:
    manifest = tmp_path / "_STDDELIVERYFILE.xml"
    write_manifest(manifest, 200, seed=61, job_id="JOB-NO-APNS")
    devices, gone = mixed_registry(tmp_path, 200, 62, webpush)
    expected = read_scenario(manifest, devices, "JOB-NO-APNS", gone_devices=gone)
    provider_of = providers(devices)
    assert main(["devices", "import", str(devices)]) == 0
    monkeypatch.delenv("EXSTREAM_PUSH_APNS_KEY_FILE")

    with pytest.raises(PushConfigurationError, match="apns_not_configured"):
        statement_ready(manifest=str(manifest), job_id="JOB-NO-APNS")

    assert apns_messages(apns) == []
    copies, _ = delivered(expected, fcm, apns, webpush)
    assert set(copies) == {pair for pair in expected.accepted if provider_of[pair[1]] != "apns"}
    with ledger_for(get_settings()).engine.connect() as conn:
        pending = dict(
            conn.execute(
                select(Notification.device_id, Notification.reason).where(Notification.status == "pending")
            ).all()
        )
    assert {provider_of[device] for device in pending} == {"apns"}
    assert set(pending.values()) == {"configuration:apns_not_configured"}


def providers(devices: Path) -> dict[str, str]:
    """Device id → provider, read from the device file itself."""
    with devices.open(newline="") as handle:
        return {row["device_id"]: row["provider"] for row in csv.DictReader(handle)}


APNS_TOKEN = "a1" * 32
DEAD_APNS_TOKEN = "dead" + "b2" * 30


def test_the_operational_alert_reaches_apns_and_web_push_devices_registered_through_the_ingress(
    prefect_harness: None,
    every_provider_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    fcm: ServerThread,
    apns: ApnsEmulator,
    webpush: ServerThread,
    exstream: ServerThread,
) -> None:
    """The app back ends register an FCM, an APNs and a browser device (its subscription as
    ``PushSubscription.toJSON()`` gives it); the alert goes to each through its own provider, at high priority."""
    monkeypatch.setenv("EXSTREAM_PUSH_INGRESS_SECRET", SECRET.decode())
    settings = get_settings()
    browser = httpx.Client(base_url=webpush.url, verify=ssl.create_default_context(cafile=str(webpush.tls.ca_file)))
    subscription, gone = (browser.post("/_emulator/subscriptions", json=o).json() for o in ({}, {"gone": True}))
    devices = [
        {"customer_id": "C1", "device_id": "d-fcm", "platform": "android", "token": "tok-fcm"},
        {"customer_id": "C1", "device_id": "d-apns", "platform": "ios", "provider": "apns", "token": APNS_TOKEN},
        {
            "customer_id": "C1",
            "device_id": "d-web",
            "platform": "web",
            "provider": "webpush",
            "subscription": subscription,
        },
        {"customer_id": "C2", "device_id": "d-dead", "platform": "ios", "provider": "apns", "token": DEAD_APNS_TOKEN},
        {"customer_id": "C2", "device_id": "d-gone", "platform": "web", "provider": "webpush", "subscription": gone},
    ]
    with ServerThread(create_app(settings, prefect_api_url=PREFECT_API_URL.value())) as server:
        ingress = Ingress(server.url, ledger_for(settings))
        for device in devices:
            assert ingress.post("/v1/devices", device).status_code == 200
        not_hex = {**devices[1], "device_id": "d-bad", "token": "not-a-device-token"}
        refused = ingress.post("/v1/devices", not_hex)
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"][-1] == "token"
        alert_id = raise_alert(ingress, "OPS-EVERY-1", kind="outage", message_key="outage", customer_ids=["C1", "C2"])

    result = operational_alert(alert_id=alert_id, as_of=AS_OF)
    assert result["sent"] == 3 and result["failed"] == 2 and result["devices_deactivated"] == 2

    (to_fcm,), (to_apns,), (to_browser,) = fcm_messages(fcm), apns_messages(apns), webpush_messages(webpush)
    assert to_fcm["token"] == "tok-fcm" and to_fcm["android"]["priority"] == "high"
    assert to_apns["device_token"] == APNS_TOKEN and to_apns["headers"]["apns-priority"] == "10"
    assert to_browser["endpoint"] == subscription["endpoint"] and to_browser["headers"]["urgency"] == "high"
    apns_body, browser_body = _json(to_apns["payload"]), _json(to_browser["payload"])
    assert {k: v for k, v in apns_body.items() if k != "aps"} == browser_body["data"] == to_fcm["data"]
    assert (
        apns_body["aps"]["alert"]
        == browser_body["notification"]
        == {
            "title": to_fcm["notification"]["title"],
            "body": to_fcm["notification"]["body"],
        }
    )
    with ledger_for(settings).engine.connect() as conn:
        inactive = dict(conn.execute(select(Device.device_id, Device.deactivated_reason).where(~Device.active)).all())
    assert inactive == {"d-dead": "apns:Unregistered", "d-gone": "webpush:410"}


# -- the reminder flows: payment reminders and policy change reach APNs and Web Push devices ------------------------


def write_registry(path: Path, devices: list[dict[str, str]]) -> None:
    """A device file with the provider columns, the rest of each row filled as an opted-in device in London."""
    defaults = {"push_opt_in": "true", "locale": "", "timezone": "Europe/London", "categories": ""}
    defaults |= {"provider": "fcm", "webpush_p256dh": "", "webpush_auth": ""}
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*DEVICE_CSV_HEADER, *PROVIDER_COLUMNS], lineterminator="\n")
        writer.writeheader()
        writer.writerows({**defaults, **device} for device in devices)


def every_provider_devices(customer: str, webpush: ServerThread) -> list[dict[str, str]]:
    """One device of each provider for ``customer``; the web one subscribed at the emulator as a browser does."""
    browser = httpx.Client(base_url=webpush.url, verify=ssl.create_default_context(cafile=str(webpush.tls.ca_file)))
    subscription = browser.post("/_emulator/subscriptions", json={}).json()
    hex_customer = customer.encode().hex()
    return [
        {"customer_id": customer, "device_id": f"{customer}-fcm", "platform": "android", "token": f"tok-{customer}"},
        {
            "customer_id": customer,
            "device_id": f"{customer}-apns",
            "platform": "ios",
            "provider": "apns",
            "token": (hex_customer + "c0" * 32)[:64],
        },
        {
            "customer_id": customer,
            "device_id": f"{customer}-web",
            "platform": "web",
            "provider": "webpush",
            "token": subscription["endpoint"],
            "webpush_p256dh": subscription["keys"]["p256dh"],
            "webpush_auth": subscription["keys"]["auth"],
        },
    ]


def shown_by_device(
    devices: list[dict[str, str]], fcm: ServerThread, apns: ApnsEmulator, webpush: ServerThread
) -> dict[str, list[dict[str, Any]]]:
    """Device id → what each message to it showed and carried: {"title", "body", "data", "priority", "text"}, read
    from the emulator of its provider (APNs' alert and custom keys, Web Push's decrypted notification and data)."""
    device_of = {device["token"]: device["device_id"] for device in devices}
    shown: dict[str, list[dict[str, Any]]] = {device["device_id"]: [] for device in devices}
    for m in fcm_messages(fcm):
        notification = m["notification"]
        shown[device_of[m["token"]]].append(
            {**notification, "data": m["data"], "priority": m["android"]["priority"], "text": json.dumps(m)}
        )
    for m in apns_messages(apns):
        body = _json(m["payload"])
        data = {k: v for k, v in body.items() if k != "aps"}
        priority = {"10": "high", "5": "normal"}[m["headers"]["apns-priority"]]
        shown[device_of[m["device_token"]]].append(
            {**body["aps"]["alert"], "data": data, "priority": priority, "text": json.dumps(m)}
        )
    for m in webpush_messages(webpush):
        body = _json(m["payload"])
        shown[device_of[m["endpoint"]]].append(
            {**body["notification"], "data": body["data"], "priority": m["headers"]["urgency"], "text": json.dumps(m)}
        )
    return shown


def test_payment_reminders_reach_apns_and_web_push_devices_with_what_fcm_devices_get(
    prefect_harness: None,
    every_provider_env: dict[str, str],
    tmp_path: Path,
    fcm: ServerThread,
    apns: ApnsEmulator,
    webpush: ServerThread,
) -> None:
    """A reminder due today and one due in three days, each customer with a phone on FCM, an iPhone on APNs and
    the web portal: every device gets its stage's reminder, the same title and data as the FCM one, no amount."""
    scenario = Scenario(
        docs=[
            Doc("INV-1", "C1", "2026-11-29", "1234.56", "A-prime", "en"),  # due today at T1
            Doc("INV-2", "C2", "2026-12-02", "98.76", "B-standard", "fr"),  # due in three days: due_soon
        ],
        devices=[],
        payments=[],
    )
    manifest, _, _ = scenario.write(tmp_path)
    devices = every_provider_devices("C1", webpush) + every_provider_devices("C2", webpush)
    write_registry(tmp_path / "devices.csv", devices)
    assert main(["devices", "import", str(tmp_path / "devices.csv")]) == 0

    result = payment_reminders(manifest=str(manifest), as_of=REMINDER_T1)
    assert result["sent"] == 6

    shown = shown_by_device(devices, fcm, apns, webpush)
    assert {device: len(messages) for device, messages in shown.items()} == {d["device_id"]: 1 for d in devices}
    titles = {"C1": "Payment due today", "C2": "Rappel de paiement"}
    for customer, title in titles.items():
        (fcm_copy,), (apns_copy,), (web_copy,) = (shown[f"{customer}-{p}"] for p in ("fcm", "apns", "web"))
        for copy in (fcm_copy, apns_copy, web_copy):
            assert copy["title"] == title
            assert set(copy["data"]) == DATA_KEYS and copy["data"]["use_case"] == "payment-reminders"
            assert not any(
                value in copy["text"]
                for value in ("1234", "98.76", "A-prime", "B-standard", "Name of", "@example.com", "INV-")
            )
        assert apns_copy["data"] == web_copy["data"] == fcm_copy["data"]
        assert apns_copy["body"] == web_copy["body"] == fcm_copy["body"]

    # Each stage goes once, ever, on every provider.
    assert payment_reminders(as_of=REMINDER_T1).get("sent", 0) == 0
    assert sum(map(len, shown_by_device(devices, fcm, apns, webpush).values())) == 6


def test_policy_change_notice_and_reminders_reach_apns_and_web_push_devices(
    prefect_harness: None,
    every_provider_env: dict[str, str],
    tmp_path: Path,
    fcm: ServerThread,
    apns: ApnsEmulator,
    webpush: ServerThread,
    exstream: ServerThread,
) -> None:
    """The change notice, the reminder at +3 days and the last one at +7 (high priority: APNs priority 10, Web
    Push ``Urgency: high``) reach each provider's device of a customer who never acknowledges; an acknowledgement
    stops them for another customer on every provider."""
    job = "POL-EVERY"
    write_policy_manifest(tmp_path / "manifest.xml", [policy_record(1, job), policy_record(2, job)])
    devices = every_provider_devices("C00001", webpush) + every_provider_devices("C00002", webpush)
    write_registry(tmp_path / "devices.csv", devices)
    assert main(["devices", "import", str(tmp_path / "devices.csv")]) == 0
    write_events(tmp_path / "ack.jsonl", [acknowledgement(2, job, POLICY_T0 + timedelta(days=1))])

    policy_change(as_of=POLICY_T0, manifest=str(tmp_path / "manifest.xml"), job_id=job)
    policy_change(as_of=POLICY_T0 + timedelta(days=3), events=str(tmp_path / "ack.jsonl"))
    policy_change(as_of=POLICY_T0 + timedelta(days=7))

    shown = shown_by_device(devices, fcm, apns, webpush)
    notice = "Please review a change to your policy"
    reminder = "Reminder: a change awaits your confirmation"
    for provider in ("fcm", "apns", "web"):
        never, acknowledged = shown[f"C00001-{provider}"], shown[f"C00002-{provider}"]
        assert [(m["title"], m["priority"]) for m in never] == [
            (notice, "normal"),
            (reminder, "normal"),
            (reminder, "high"),
        ], provider
        assert [m["title"] for m in acknowledged] == ["Please review a change to your contract"], provider
        for message in never + acknowledged:
            assert set(message["data"]) == DATA_KEYS and message["data"]["use_case"] == "policy-change"
            assert not any(value in message["text"] for value in ("PN-", "Alice", "@example.com", ACKNOWLEDGE_BY))
    for number in (1, 2):
        copies = [shown[f"C{number:05d}-{provider}"] for provider in ("fcm", "apns", "web")]
        assert all([m["data"] for m in c] == [m["data"] for m in copies[0]] for c in copies)
