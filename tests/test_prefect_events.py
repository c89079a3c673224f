"""The Prefect event outbox: nothing accepted is lost while Prefect is down, and it all arrives once it is back."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventIDFilter, EventOccurredFilter
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from exstream_push.ledger import Ledger, OutboxEvent
from exstream_push.prefect_events import drain_outbox, enqueue, pending_count
from exstream_push_dev.emulators.server import ServerThread, free_port


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield ledger
    ledger.dispose()


class FakePrefectEvents:
    """Stands in for ``POST /api/events`` to see what the drainer sends and to make it fail on demand."""

    def __init__(self) -> None:
        self.status = 204
        self.requests: list[tuple[dict[str, str], list[dict[str, Any]]]] = []
        self.app = Starlette(routes=[Route("/api/events", self.receive, methods=["POST"])])

    async def receive(self, request: Request) -> Response:
        self.requests.append((dict(request.headers), json.loads(await request.body())))
        return Response(status_code=self.status)


def wait_for_events(event_ids: list[str]) -> list[Any]:
    """Prefect persists received events in the background; poll (bounded) until these ids are readable."""
    deadline = time.monotonic() + 60
    event_filter = EventFilter(
        occurred=EventOccurredFilter(since=datetime.now(UTC) - timedelta(days=1)), id=EventIDFilter(id=event_ids)
    )
    with get_client(sync_client=True) as client:
        while True:
            events = client.read_events(filter=event_filter, limit=50).events
            if len(events) >= len(event_ids) or time.monotonic() > deadline:
                return events
            time.sleep(0.25)


def test_outbox_keeps_events_while_prefect_is_down_and_emits_them_once_it_answers(
    prefect_harness: None, ledger: Ledger
) -> None:
    resource = f"exstream-push.test.{uuid.uuid4().hex}"
    with ledger.engine.begin() as conn:
        ids = [enqueue(conn, "exstream-push.test.outbox", f"{resource}.{n}", {"n": n}) for n in range(3)]

    dead_port = f"http://127.0.0.1:{free_port()}/api"
    assert drain_outbox(ledger, dead_port) == 0
    assert pending_count(ledger) == 3

    assert drain_outbox(ledger, PREFECT_API_URL.value()) == 3
    assert pending_count(ledger) == 0
    assert drain_outbox(ledger, PREFECT_API_URL.value()) == 0

    events = wait_for_events(ids)
    assert sorted(str(event.id) for event in events) == sorted(ids)
    assert {event.resource.id: event.payload for event in events} == {f"{resource}.{n}": {"n": n} for n in range(3)}
    assert {event.event for event in events} == {"exstream-push.test.outbox"}


def test_a_refused_batch_stays_in_the_outbox_and_the_client_authenticates_as_prefect_does(ledger: Ledger) -> None:
    fake = FakePrefectEvents()
    with ServerThread(fake.app) as server, temporary_settings(updates={PREFECT_API_AUTH_STRING: "admin:pass"}):
        with ledger.engine.begin() as conn:
            first = enqueue(conn, "exstream-push.test.outbox", "exstream-push.test.a", {"alert_id": "A"})
        fake.status = 503
        assert drain_outbox(ledger, f"{server.url}/api") == 0
        assert pending_count(ledger) == 1

        with ledger.engine.begin() as conn:
            second = enqueue(conn, "exstream-push.test.outbox", "exstream-push.test.b", {"alert_id": "B"})
        fake.status = 204
        assert drain_outbox(ledger, f"{server.url}/api") == 2

    headers, sent = fake.requests[-1]
    assert headers["authorization"] == "Basic YWRtaW46cGFzcw=="
    assert [event["id"] for event in sent] == [first, second]  # oldest first, the refused one retried as it was
    assert sent[0] == fake.requests[0][1][0]
    assert sent[0]["resource"] == {"prefect.resource.id": "exstream-push.test.a"}
    assert datetime.fromisoformat(sent[0]["occurred"]).tzinfo is not None
    with ledger.engine.connect() as conn:
        assert all(conn.scalars(select(OutboxEvent.emitted_at)))


def test_an_event_stored_inside_a_flow_run_names_that_run_even_when_drained_outside_it(
    prefect_harness: None, ledger: Ledger
) -> None:
    from prefect import flow

    resource = f"exstream-push.test.{uuid.uuid4().hex}"
    stored: list[str] = []

    @flow(name="exstream-push-test-emitter", flow_run_name="emitter-run", persist_result=False)
    def store_an_event() -> None:
        with ledger.engine.begin() as conn:
            stored.append(enqueue(conn, "exstream-push.test.outbox", f"{resource}.inside", {}))

    run_id = store_an_event(return_state=True).state_details.flow_run_id
    with ledger.engine.begin() as conn:
        outside = enqueue(conn, "exstream-push.test.outbox", f"{resource}.outside", {})
    assert drain_outbox(ledger, PREFECT_API_URL.value()) == 2  # by this process, in no run

    events = {str(event.id): event for event in wait_for_events([*stored, outside])}
    related = {(r.id, r.role, r.get("prefect.resource.name")) for r in events[stored[0]].related}
    assert (f"prefect.flow-run.{run_id}", "flow-run", "emitter-run") in related
    assert any(role == "flow" and name == "exstream-push-test-emitter" for _, role, name in related)
    assert events[outside].related == []
