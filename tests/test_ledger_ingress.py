"""The ingress repository: a signed request's signature, input and outbox events are written together or not at all."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, func, select

from exstream_push.ledger import Ledger, OpsAlert, Preference, SeenRequest, TrackingEvent
from exstream_push.ledger.ingress import PendingEvent, ReplayedRequest
from exstream_push.prefect_events import enqueue, pending_count

NOW = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def ledger(database_url: str) -> Iterator[Ledger]:
    ledger = Ledger(database_url)
    yield ledger
    ledger.dispose()


def count(ledger: Ledger, model: type) -> int:
    with ledger.engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(model.__table__)) or 0  # type: ignore[attr-defined]


def preference(push_opt_in: bool) -> dict[str, Any]:
    return {"customer_id": "C0001", "push_opt_in": push_opt_in, "updated_at": NOW}


PREFERENCE_EVENT = PendingEvent("exstream-push.preference.updated", "exstream-push.customer.ref", {"fields": []})


def test_a_replay_writes_nothing(ledger: Ledger) -> None:
    ledger.ingress.state_preference("sig-1", preference(True), PREFERENCE_EVENT, enqueue)
    with pytest.raises(ReplayedRequest):
        ledger.ingress.state_preference("sig-1", preference(False), PREFERENCE_EVENT, enqueue)
    with ledger.engine.connect() as conn:
        assert conn.scalar(select(Preference.push_opt_in)) is True
    assert (count(ledger, SeenRequest), pending_count(ledger)) == (1, 1)


def test_an_outbox_failure_rolls_back_the_signature_and_the_input(ledger: Ledger) -> None:
    def failing(conn: Connection, event: str, resource_id: str, payload: Mapping[str, Any]) -> str:
        raise RuntimeError("outbox unavailable")

    with pytest.raises(RuntimeError):
        ledger.ingress.state_preference("sig-1", preference(True), PREFERENCE_EVENT, failing)
    assert (count(ledger, SeenRequest), count(ledger, Preference), pending_count(ledger)) == (0, 0, 0)
    # Nothing was remembered, so the same signed request is accepted when it comes again.
    ledger.ingress.state_preference("sig-1", preference(True), PREFERENCE_EVENT, enqueue)
    assert (count(ledger, SeenRequest), count(ledger, Preference), pending_count(ledger)) == (1, 1, 1)


def tracking_row(event_id: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "schema_type": "Exstream-Email-NDLV",
        "payload": "{}",
        "event_date": None,
        "received_at": NOW,
        "processed_at": None,
    }


def test_only_new_tracking_failures_are_announced(ledger: Ledger) -> None:
    failures = {name: PendingEvent("exstream.delivery.failed", f"exstream.tracking-event.{name}") for name in "ab"}
    stored, announced = ledger.ingress.record_tracking_events("sig-1", [tracking_row("a")], failures, enqueue)
    assert (stored, announced) == ({"a"}, ["a"])
    rows = [tracking_row("a"), tracking_row("b"), tracking_row("c")]
    stored, announced = ledger.ingress.record_tracking_events("sig-2", rows, failures, enqueue)
    assert (stored, announced) == ({"b", "c"}, ["b"])
    assert (count(ledger, TrackingEvent), pending_count(ledger)) == (3, 2)


def test_a_known_alert_is_not_stored_or_announced_again(ledger: Ledger) -> None:
    row = {
        "alert_id": "OPS-1",
        "kind": "outage",
        "severity": "critical",
        "audience": "{}",
        "message_key": "outage",
        "occurred_at": NOW,
        "received_at": NOW,
        "state": "received",
    }
    pending = PendingEvent("exstream-push.ops.alert", "exstream-push.alert.OPS-1", {"alert_id": "OPS-1"})
    assert ledger.ingress.raise_alert("sig-1", row, pending, enqueue) is True
    assert ledger.ingress.raise_alert("sig-2", {**row, "severity": "info"}, pending, enqueue) is False
    with ledger.engine.connect() as conn:
        assert conn.scalar(select(OpsAlert.severity)) == "critical"
    assert (count(ledger, SeenRequest), pending_count(ledger)) == (2, 1)


def test_signatures_past_the_replay_window_are_forgotten(ledger: Ledger) -> None:
    device = {"device_id": "D1", "customer_id": "C0001", "platform": "android", "token": "t", "updated_at": NOW}
    ledger.ingress.register_device("sig-1", device)
    assert ledger.ingress.forget_seen_requests(datetime.now(UTC) - timedelta(minutes=10)) == 0
    assert ledger.ingress.forget_seen_requests(datetime.now(UTC) + timedelta(seconds=1)) == 1
    assert count(ledger, SeenRequest) == 0
