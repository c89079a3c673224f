"""Closed loops: input stored by the ingress is announced to Prefect once per loop and quiet time, so a burst starts
a handful of runs, and a burst's last input is announced too (the trailing edge), never lost to the quiet time."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import select

from exstream_push.ingress.app import create_app
from exstream_push.ingress.loops import LOOP_DUE_EVENT, LoopAnnouncer, loop_resource
from exstream_push.ledger import Ledger, OutboxEvent
from exstream_push.ledger.store import utcnow
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push_dev.emulators.server import ServerThread, free_port
from tests.test_ingress import FAILED_DELIVERY, SECRET, Ingress, record_statement_document
from tests.test_prefect_events import FakePrefectEvents

LIFECYCLE = "lifecycle-tracking"
OCCURRED = {"occurred_at": "2026-11-02T08:00:00+00:00"}
QUIET_SECONDS = 1.5
BURST_REQUESTS = 60
"""Paced 50 ms apart: at least three seconds, two quiet times, however fast the machine."""


def _announcements(ledger: Ledger) -> list[str]:
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            select(OutboxEvent.__table__.c.resource_id)
            .where(OutboxEvent.__table__.c.event == LOOP_DUE_EVENT)
            .order_by(OutboxEvent.__table__.c.occurred)
        )
        return [resource for (resource,) in rows]


def test_a_loop_is_announced_at_once_then_once_per_quiet_time_and_what_came_after_is_not_forgotten(
    database_url: str,
) -> None:
    ledger = Ledger(database_url)
    announcer = LoopAnnouncer(ledger, quiet=15.0)
    assert announcer.announce_due() == [] and not announcer.owed()

    announcer.owe(LIFECYCLE)
    assert announcer.announce_due() == [LIFECYCLE]  # the first input of a burst goes at once
    assert not announcer.owed()
    assert _announcements(ledger) == [loop_resource(LIFECYCLE)]

    announcer.owe(LIFECYCLE)  # more while the first announcement is fresh: it waits, still owed
    assert announcer.announce_due() == [] and announcer.owed()
    assert announcer.announce_due(utcnow() + timedelta(seconds=5)) == []
    assert announcer.announce_due(utcnow() + timedelta(seconds=16)) == [LIFECYCLE]  # the trailing edge
    assert not announcer.owed()
    assert announcer.announce_due(utcnow() + timedelta(seconds=60)) == []  # nothing new: nothing more
    assert _announcements(ledger) == [loop_resource(LIFECYCLE)] * 2
    ledger.dispose()


def test_an_announcement_made_by_another_ingress_process_since_covers_what_arrived_before_it(
    database_url: str,
) -> None:
    ledger = Ledger(database_url)
    one, other = LoopAnnouncer(ledger, quiet=0.0), LoopAnnouncer(ledger, quiet=0.0)
    one.owe(LIFECYCLE)
    time.sleep(0.01)
    other.owe(LIFECYCLE)
    assert other.announce_due() == [LIFECYCLE]
    assert one.announce_due() == [] and not one.owed()  # covered: the run it starts reads both processes' input
    assert _announcements(ledger) == [loop_resource(LIFECYCLE)]
    ledger.dispose()


def test_a_burst_through_the_served_ingress_is_announced_a_few_times_and_after_its_last_request(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("EXSTREAM_PUSH_HOME", str(home))
    monkeypatch.setenv("EXSTREAM_PUSH_DATABASE_URL", f"sqlite:///{home / 'ledger.db'}")
    monkeypatch.setenv("EXSTREAM_PUSH_INGRESS_SECRET", SECRET.decode())
    monkeypatch.setenv("EXSTREAM_PUSH_LINK_SECRET", "test-link-secret")
    monkeypatch.setenv("EXSTREAM_PUSH_LOOP_QUIET_SECONDS", str(QUIET_SECONDS))
    settings = get_settings()
    ledger = ledger_for(settings)
    ref = record_statement_document(ledger, "POL-1", "C0001")
    prefect = FakePrefectEvents()
    with ServerThread(prefect.app) as events_api:
        app = create_app(settings, prefect_api_url=f"{events_api.url}/api", loop_tick=0.1)
        with _served_with_lifespan(app) as url:  # the tick runs in the app's lifespan, as `serve` runs it
            ingress = Ingress(url, ledger)
            started = time.monotonic()
            for request in range(BURST_REQUESTS):  # a steady stream of signals, longer than two quiet times
                event = {
                    "event_id": f"e-{request}",
                    "type": "opened",
                    "document_ref": ref,
                    "customer_id": "C0001",
                    **OCCURRED,
                }
                assert ingress.post("/v1/engagement-events", event).status_code == 200
                time.sleep(0.05)
            burst_seconds = time.monotonic() - started
            assert ingress.post("/v1/exstream/events", FAILED_DELIVERY).status_code == 202
            last_request = utcnow()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and sum(map(_is_due, _emitted(prefect))) < 2 + 1:
                time.sleep(0.1)
            time.sleep(2.0)  # anything more would have been announced by now
            emitted = _emitted(prefect)
    due = [event for event in emitted if _is_due(event)]
    lifecycle = [event for event in due if event["resource"]["prefect.resource.id"] == loop_resource(LIFECYCLE)]
    # Leading edge, at most one per quiet time during the burst, and the trailing edge: a handful, not one per
    # request (counted against the burst's own length, so a loaded machine that stretches it is no failure).
    assert 2 <= len(lifecycle) <= 2 + burst_seconds / QUIET_SECONDS
    assert len(lifecycle) <= BURST_REQUESTS / 5
    assert max(datetime.fromisoformat(event["occurred"]) for event in lifecycle) >= last_request
    assert [event for event in due if event["resource"]["prefect.resource.id"] == loop_resource("delivery-exceptions")]
    assert all(json.dumps(event["payload"]) == json.dumps({"use_case": event["payload"]["use_case"]}) for event in due)


@contextmanager
def _served_with_lifespan(app: FastAPI) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _emitted(prefect: FakePrefectEvents) -> list[dict]:
    return [event for _headers, batch in prefect.requests for event in batch]


def _is_due(event: dict) -> bool:
    return event["event"] == LOOP_DUE_EVENT
