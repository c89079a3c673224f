"""Operational alert end to end: ops → signed ingress → Prefect event → flow → high-priority push → Exstream letter."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prefect.settings import PREFECT_API_URL
from sqlalchemy import func, select

from exstream_push.flows.operational_alert import operational_alert
from exstream_push.ingress.app import create_app
from exstream_push.ledger import Device, Evidence, Ledger, OutboxEvent
from exstream_push.prefect_events import drain_outbox
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push.usecases.operational_alert.config import FOLLOW_UP_HEADER, SegmentError
from exstream_push.usecases.operational_alert.tasks import alert_report, segment_customers
from exstream_push_dev.emulators.server import ServerThread
from tests.conftest import exstream_inbox, fcm_messages
from tests.test_ingress import SECRET, Ingress
from tests.test_prefect_events import wait_for_events

AS_OF = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
FOLLOW_UP_PATH = "/orchestration/api/v1/inputs/batch/default/ops-follow-up"


def device(customer_id: str, device_id: str, token: str, **changes: Any) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "device_id": device_id,
        "platform": "android",
        "token": token,
        "active": True,
        "push_opt_in": True,
        "locale": "en",
        "timezone": "Europe/London",
        "categories": "",
        "deactivated_reason": None,
        "updated_at": AS_OF,
        **changes,
    }


DEVICES = [
    device("C0001", "d-1a", "tok-1a"),
    device("C0001", "d-1b", "tok-1b", platform="ios"),
    device("C0002", "d-2", "tok-2", platform="web", categories="alerts;statements"),
    device("C0003", "d-3", "tok-3", push_opt_in=False),
    device("C0005", "d-5", "tok-5", categories="statements"),
    device("C0006", "d-6", "unregistered-tok-6"),
    device("C0007", "d-7", "tok-7", active=False, deactivated_reason="fcm:UNREGISTERED"),
]
CUSTOMERS = ["C0001", "C0002", "C0003", "C0004", "C0005", "C0006", "C0007"]


@pytest.fixture
def ingress(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, database_url: str) -> Iterator[Ingress]:
    """The ingress on this test's ledger, emitting to the Prefect test harness."""
    monkeypatch.setenv("EXSTREAM_PUSH_DATABASE_URL", database_url)
    monkeypatch.setenv("EXSTREAM_PUSH_INGRESS_SECRET", SECRET.decode())
    settings = get_settings()
    ledger = ledger_for(settings)
    ledger.upsert_devices(DEVICES)
    with ServerThread(create_app(settings, prefect_api_url=PREFECT_API_URL.value())) as server:
        yield Ingress(server.url, ledger)


def raise_alert(ingress: Ingress, alert_id: str, **fields: Any) -> str:
    """Ops posts the alert; the flow gets its alert_id from the Prefect event, as the deployment trigger does."""
    body = {"alert_id": alert_id, "severity": "critical", "occurred_at": "2026-11-02T07:55:00Z", **fields}
    response = ingress.post("/v1/ops/alerts", body)
    assert response.status_code == 202, response.text
    drain_outbox(ingress.ledger, PREFECT_API_URL.value())
    with ingress.ledger.engine.connect() as conn:
        outbox_ids = list(
            conn.scalars(select(OutboxEvent.id).where(OutboxEvent.resource_id == f"exstream-push.alert.{alert_id}"))
        )
    (event,) = wait_for_events(outbox_ids)
    assert event.event == "exstream-push.ops.alert"
    return event.payload["alert_id"]


def test_an_alert_pushes_at_once_with_high_priority_then_asks_exstream_for_the_letter_once(
    prefect_harness: None, ingress: Ingress, fcm: ServerThread, exstream: ServerThread
) -> None:
    alert_id = raise_alert(ingress, "OPS-OUTAGE-1", kind="outage", message_key="outage", customer_ids=CUSTOMERS)
    result = operational_alert(alert_id=alert_id, as_of=AS_OF)
    assert result["sent"] == 3 and result["failed"] == 1

    # The push: only eligible devices, high priority everywhere, one collapse key per alert, nothing personal.
    messages = fcm_messages(fcm)
    assert sorted(message["token"] for message in messages) == ["tok-1a", "tok-1b", "tok-2"]
    for message in messages:
        assert message["android"]["priority"] == "high"
        assert message["apns"]["headers"]["apns-priority"] == "10"
        assert message["webpush"]["headers"]["Urgency"] == "high"
        assert message["notification"]["title"] == "Service disruption"
        assert message["data"]["use_case"] == "operational-alert"
        assert message["data"]["category"] == "alerts"
        assert message["data"]["document_type"] == "outage"
        visible = json.dumps({name: value for name, value in message.items() if name != "token"})
        for personal in (*CUSTOMERS, alert_id, "d-1a", "d-1b", "d-2"):
            assert personal not in visible
    collapse_keys = {message["token"]: message["android"]["collapse_key"] for message in messages}
    assert len(set(collapse_keys.values())) == 3  # each device's copy of this alert collapses only with itself
    assert {message["data"]["document_ref"] for message in messages} == {messages[0]["data"]["document_ref"]}

    # The follow-up: one batch-input POST listing every affected customer with what the push achieved.
    posts = [post for post in exstream_inbox(exstream) if post["path"] == FOLLOW_UP_PATH]
    assert len(posts) == 1
    rows = list(csv.DictReader(io.StringIO(posts[0]["body"])))
    assert list(rows[0]) == FOLLOW_UP_HEADER
    assert [(row["customer_id"], row["push_status"], row["devices_notified"]) for row in rows] == [
        ("C0001", "notified", "2"),
        ("C0002", "notified", "1"),
        ("C0003", "not_notified", "0"),
        ("C0004", "not_notified", "0"),
        ("C0005", "not_notified", "0"),
        ("C0006", "not_notified", "0"),
        ("C0007", "not_notified", "0"),
    ]
    assert {(row["alert_id"], row["kind"], row["severity"], row["message_key"]) for row in rows} == {
        (alert_id, "outage", "critical", "outage")
    }
    assert {row["requested_at"] for row in rows} == {"2026-11-02T08:00:00Z"}

    # Linked in the ledger: one report holds the push and the follow-up.
    report = alert_report(ingress.ledger, alert_id)
    assert report["state"] == "follow_up_requested"
    assert report["push"] == {
        "pushed_at": "2026-11-02T08:00:00Z",
        "customers": 7,
        "customers_notified": 2,
        "devices_notified": 3,
        "by_status": {
            "sent": {"": 3},
            "failed": {"UNREGISTERED": 1},
            "skipped": {"no_device": 2, "opted_out": 1, "category_opted_out": 1},
        },
    }
    assert report["follow_up"] == {
        "channel": "ops-follow-up",
        "posted_at": "2026-11-02T08:00:00Z",
        "posts": 1,
        "rows": 7,
    }
    with ingress.ledger.engine.connect() as conn:
        assert conn.scalar(select(Device.active).where(Device.device_id == "d-6")) is False
    # And in the evidence log: each affected customer is a document of the alert, its pushes and its follow-up facts.
    first = [row[1] for row in ingress.ledger.evidence_trail(f"alert:{alert_id}/C0001")]
    assert first == ["notified", "notified", "handed_back"]
    with ingress.ledger.engine.connect() as conn:
        facts = conn.execute(
            select(Evidence.fact, func.count()).where(Evidence.use_case == "operational-alert").group_by(Evidence.fact)
        )
        assert dict(facts.all()) == {"notified": 3, "failed": 1, "handed_back": 7}
        handed_back = select(Evidence.stage, Evidence.detail).where(Evidence.fact == "handed_back").distinct()
        assert conn.execute(handed_back).all() == [("follow_up", "ops-follow-up")]

    # The same alert again: from ops, acknowledged as a duplicate; as a flow run, nothing happens.
    changed = {"kind": "security", "severity": "info", "segment": "all-app-users", "message_key": "security"}
    again = ingress.post("/v1/ops/alerts", {"alert_id": alert_id, "occurred_at": "2026-11-02T09:00:00Z", **changed})
    assert again.json() == {"alert_id": alert_id, "duplicate": True}
    rerun = operational_alert(alert_id=alert_id, as_of=datetime(2026, 11, 2, 9, 0, tzinfo=UTC))
    assert rerun["already_done"] is True
    assert len(fcm_messages(fcm)) == 3
    assert len([post for post in exstream_inbox(exstream) if post["path"] == FOLLOW_UP_PATH]) == 1
    assert alert_report(ingress.ledger, alert_id) == report

    # Another alert to the same device does not collapse into this one.
    second = raise_alert(
        ingress, "OPS-CLAIM-2", kind="claim_status", message_key="claim_status", customer_ids=["C0001"]
    )
    operational_alert(alert_id=second, as_of=AS_OF)
    newest = [message for message in fcm_messages(fcm)[3:] if message["token"] == "tok-1a"]
    assert [message["notification"]["title"] for message in newest] == ["Update on your claim"]
    assert newest[0]["android"]["collapse_key"] != collapse_keys["tok-1a"]


def write_segments(config_dir: Path) -> None:
    (config_dir / "lists").mkdir(parents=True)
    (config_dir / "lists" / "claims.txt").write_text("# claims desk export\nC0002\n\nC0001\nC0002\n")
    (config_dir / "ops-alert-segments.yaml").write_text(
        "segments:\n"
        "  android: {devices: {platform: android}}\n"
        "  claims-desk: {file: lists/claims.txt}\n"
        "  pilot: {customer_ids: [C0009, C0003, C0009]}\n"
        "  everyone: {devices: {}}\n"
    )


def test_segments_resolve_from_a_list_a_file_or_device_attributes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXSTREAM_PUSH_CONFIG_DIR", str(tmp_path / "config"))
    write_segments(tmp_path / "config")
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.upsert_devices(DEVICES)
    settings = get_settings()
    assert list(segment_customers(ledger, settings, "pilot")) == ["C0003", "C0009"]
    assert list(segment_customers(ledger, settings, "claims-desk")) == ["C0002", "C0001"]
    assert list(segment_customers(ledger, settings, "android")) == ["C0001", "C0003", "C0005", "C0006"]
    assert list(segment_customers(ledger, settings, "everyone")) == ["C0001", "C0002", "C0003", "C0005", "C0006"]
    with pytest.raises(SegmentError, match="no segment named 'nobody'"):
        list(segment_customers(ledger, settings, "nobody"))
    (tmp_path / "config" / "ops-alert-segments.yaml").write_text(
        "segments:\n  both: {customer_ids: [C1], devices: {}}\n"
    )
    with pytest.raises(SegmentError, match="exactly one of customer_ids, file or devices"):
        list(segment_customers(ledger, settings, "both"))
    ledger.dispose()


def test_an_alert_to_a_segment_reaches_its_customers_in_batches(
    prefect_harness: None,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    fcm: ServerThread,
    exstream: ServerThread,
) -> None:
    monkeypatch.setenv("EXSTREAM_PUSH_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("EXSTREAM_PUSH_INGRESS_SECRET", SECRET.decode())
    monkeypatch.setenv("EXSTREAM_PUSH_BATCH_SIZE", "1")
    write_segments(tmp_path / "config")
    settings = get_settings()
    ledger = ledger_for(settings)
    ledger.upsert_devices(DEVICES)
    with ServerThread(create_app(settings, prefect_api_url=PREFECT_API_URL.value())) as server:
        response = Ingress(server.url, ledger).post(
            "/v1/ops/alerts",
            {
                "alert_id": "OPS-SEC-3",
                "kind": "security",
                "severity": "warning",
                "segment": "claims-desk",
                "message_key": "security",
                "occurred_at": "2026-11-02T07:00:00+01:00",
            },
        )
    assert response.json() == {"alert_id": "OPS-SEC-3", "duplicate": False}

    result = operational_alert(alert_id="OPS-SEC-3", as_of=AS_OF)
    assert result["sent"] == 3
    assert sorted(message["token"] for message in fcm_messages(fcm)) == ["tok-1a", "tok-1b", "tok-2"]
    assert {message["notification"]["title"] for message in fcm_messages(fcm)} == {"Important security notice"}
    (post,) = [post for post in exstream_inbox(exstream) if post["path"] == FOLLOW_UP_PATH]
    rows = list(csv.DictReader(io.StringIO(post["body"])))
    assert [(row["customer_id"], row["push_status"]) for row in rows] == [("C0001", "notified"), ("C0002", "notified")]
    assert {row["occurred_at"] for row in rows} == {"2026-11-02T06:00:00Z"}
    assert not (settings.home / "spool" / "operational-alert" / "OPS-SEC-3").exists()
