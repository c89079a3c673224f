"""The Exstream job watcher: its watermark makes a restart neither miss nor repeat a job, same-second ends included."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from exstream_push import prefect_events
from exstream_push.connectors.exstream import ExstreamJob
from exstream_push.flows import exstream_watcher as watcher_module
from exstream_push.flows.exstream_watcher import exstream_watcher
from exstream_push.ingress.loops import LOOP_DUE_EVENT, LOOPS, loop_resource
from exstream_push.ledger.outbox import CursorMoved
from exstream_push.prefect_events import pending_count
from exstream_push.runtime import _ledger, ledger_for
from exstream_push.settings import PROJECT_ROOT, get_settings
from exstream_push.status import UseCase
from exstream_push.tasks import watch
from exstream_push.tasks.watch import (
    JOB_EVENTS,
    USE_CASE_LABEL,
    JobCursor,
    JobRouting,
    job_event,
    load_routing,
    read_cursor,
    save_cursor,
)
from exstream_push_dev.emulators.exstream import ExstreamEmulator, job_uuid
from exstream_push_dev.emulators.server import ServerThread

NOW = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
EIGHT_FLOWS = {use_case.value for use_case in UseCase}


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture
def emulator(exstream: ServerThread) -> ExstreamEmulator:
    return exstream.app.state.exstream


@pytest.fixture
def posted(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What the outbox emitter hands to Prefect; the real POST is exercised by test_event_driven."""
    events: list[dict[str, Any]] = []
    monkeypatch.setattr(prefect_events, "post_events", lambda _client, _url, batch: events.extend(batch))
    return events


@pytest.fixture
def watcher(prefect_harness: None, env: dict[str, str], posted: list[dict[str, Any]]) -> Iterator[None]:
    yield
    _ledger.cache_clear()


def _end(emulator: ExstreamEmulator, name: str, status: str, ended: datetime, channel: str = "statements") -> None:
    emulator.put_job({"id": job_uuid(name), "channel": channel, "status": status, "endDate": _stamp(ended)})


def _ids(*names: str) -> list[str]:
    """The Exstream job ids (uuids) of the jobs a test names."""
    return [job_uuid(name) for name in names]


def _restart() -> None:
    """A new process: nothing cached in memory, only what the ledger holds."""
    _ledger.cache_clear()


def _job_ids(events: list[dict[str, Any]]) -> list[str]:
    return [event["payload"]["job_id"] for event in events]


def test_a_restart_neither_misses_nor_repeats_a_job(
    watcher: None, emulator: ExstreamEmulator, posted: list[dict[str, Any]]
) -> None:
    _end(emulator, "STMT-1", "complete", NOW - timedelta(minutes=3))
    _end(emulator, "FAIL-1", "error", NOW - timedelta(minutes=2), channel="bills")
    emulator.put_job({"id": job_uuid("RUNNING-1"), "channel": "statements", "status": "started"})

    first = exstream_watcher(as_of=NOW)
    assert (first["completed"], first["failed"], first["emitted"]) == (1, 1, 2)
    completed, failed = posted
    assert completed["event"] == "exstream.job.completed"
    assert completed["resource"] == {
        "prefect.resource.id": f"exstream.job.{job_uuid('STMT-1')}",
        "prefect.resource.name": job_uuid("STMT-1"),
        "exstream.channel": "statements",
        USE_CASE_LABEL: "statement-ready",
    }
    assert completed["payload"] == {
        "job_id": job_uuid("STMT-1"),
        "channel": "statements",
        "flow_model": "COMMUNICATION",
        "status": "complete",
        "ended_at": "2026-11-29T07:57:00.000000+00:00",
        "use_case": "statement-ready",
    }
    assert failed["event"] == "exstream.job.failed"
    assert failed["resource"][USE_CASE_LABEL] == "delivery-exceptions"

    _restart()
    assert exstream_watcher(as_of=NOW + timedelta(minutes=1))["emitted"] == 0
    assert _job_ids(posted) == _ids("STMT-1", "FAIL-1")

    _end(emulator, "RUNNING-1", "complete", NOW + timedelta(minutes=1))
    _restart()
    assert exstream_watcher(as_of=NOW + timedelta(minutes=2))["emitted"] == 1
    assert _job_ids(posted) == _ids("STMT-1", "FAIL-1", "RUNNING-1")


def test_jobs_ending_in_the_same_second_or_surfacing_late_are_each_taken_once(
    watcher: None, emulator: ExstreamEmulator, posted: list[dict[str, Any]]
) -> None:
    same_second = NOW - timedelta(seconds=30)
    _end(emulator, "SAME-A", "complete", same_second)
    _end(emulator, "SAME-B", "complete", same_second)
    exstream_watcher(as_of=NOW)

    _end(emulator, "SAME-C", "complete", same_second)  # ended in that same second, listed only now
    _end(emulator, "LATE-D", "complete", same_second - timedelta(minutes=2))  # inside the settle window
    exstream_watcher(as_of=NOW + timedelta(minutes=1))
    exstream_watcher(as_of=NOW + timedelta(minutes=2))

    assert sorted(_job_ids(posted)) == sorted(_ids("LATE-D", "SAME-A", "SAME-B", "SAME-C"))
    _, cursor = read_cursor(ledger_for(get_settings()))
    assert cursor.ended_at == same_second
    assert pending_count(ledger_for(get_settings())) == 0


def test_a_job_reprocessed_and_ended_again_is_a_new_event(
    watcher: None, emulator: ExstreamEmulator, posted: list[dict[str, Any]]
) -> None:
    _end(emulator, "REDO-1", "error", NOW - timedelta(minutes=1))
    exstream_watcher(as_of=NOW)
    _end(emulator, "REDO-1", "complete", NOW + timedelta(seconds=20))
    exstream_watcher(as_of=NOW + timedelta(minutes=1))

    assert [event["event"] for event in posted] == ["exstream.job.failed", "exstream.job.completed"]
    assert len({event["id"] for event in posted}) == 2


def test_events_prefect_did_not_accept_are_sent_by_the_next_run(
    watcher: None, emulator: ExstreamEmulator, posted: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def prefect_down(_client: object, _url: str, events: list[dict[str, Any]]) -> None:
        raise ConnectionError("Prefect API unreachable")

    monkeypatch.setattr(watcher_module, "emit_unsent_events", watch.emit_unsent_events.with_options(retries=0))
    monkeypatch.setattr(prefect_events, "post_events", prefect_down)
    _end(emulator, "OUTAGE-1", "complete", NOW - timedelta(minutes=1))
    assert exstream_watcher(as_of=NOW, return_state=True).is_failed()

    unsent = ledger_for(get_settings()).outbox.unemitted(10)
    assert [json.loads(event["payload"])["job_id"] for event in unsent] == _ids("OUTAGE-1")
    unsent_id = unsent[0]["id"]

    monkeypatch.setattr(prefect_events, "post_events", lambda _client, _url, batch: posted.extend(batch))
    _restart()
    result = exstream_watcher(as_of=NOW + timedelta(minutes=1))
    assert (result["completed"], result["emitted"]) == (0, 1)
    assert [event["id"] for event in posted] == [unsent_id]


def test_the_first_run_looks_back_only_as_far_as_configured(
    watcher: None, emulator: ExstreamEmulator, posted: list[dict[str, Any]]
) -> None:
    _end(emulator, "ANCIENT-1", "complete", NOW - timedelta(days=3))
    _end(emulator, "RECENT-1", "complete", NOW - timedelta(hours=2))
    exstream_watcher(as_of=NOW)
    assert _job_ids(posted) == _ids("RECENT-1")


def test_two_runs_racing_for_the_watermark_cannot_both_save(env: dict[str, str]) -> None:
    ledger = ledger_for(get_settings())
    previous, cursor = read_cursor(ledger)
    save_cursor(ledger, previous, cursor.advanced([], NOW, timedelta(minutes=5)))
    with pytest.raises(CursorMoved):
        save_cursor(ledger, previous, cursor.advanced([], NOW + timedelta(minutes=1), timedelta(minutes=5)))
    _ledger.cache_clear()


def test_routing_puts_the_use_case_into_the_event_or_leaves_it_out() -> None:
    routing = JobRouting(completed={"statements": UseCase.STATEMENT_READY})
    ended = datetime(2026, 11, 29, 7, 0, tzinfo=UTC)
    unrouted = ExstreamJob(id="J-9", status="complete", channel="newsletters", end_date=ended)
    event = job_event(unrouted, routing.use_case_for(unrouted), NOW)
    assert USE_CASE_LABEL not in event["resource"]
    assert event["payload"]["use_case"] is None
    assert job_event(unrouted, None, NOW + timedelta(hours=1))["id"] == event["id"]
    with pytest.raises(ValidationError):
        JobRouting.model_validate({"completed": {"statements": "statement-readyy"}})


def test_the_routing_configuration_and_prefect_yaml_agree() -> None:
    """Every use case a job can be routed to has a deployment whose trigger listens for exactly that."""
    routing = load_routing(get_settings())
    deployments = {d["name"]: d for d in yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())["deployments"]}
    assert set(deployments) == EIGHT_FLOWS | {"exstream-watcher"}
    for name, deployment in deployments.items():
        assert deployment["entrypoint"].startswith("flows/"), name
        assert deployment["work_pool"]["name"] == "exstream-push", name

    routes = {(JOB_EVENTS["complete"], use_case.value) for use_case in routing.completed.values()}
    routes.add((JOB_EVENTS["error"], routing.failed.value))
    for event, use_case in routes:
        (trigger,) = [each for each in deployments[use_case]["triggers"] if each["expect"] == [event]]
        assert trigger["match"] == {"prefect.resource.id": "exstream.job.*", USE_CASE_LABEL: use_case}
        assert trigger["parameters"] == {"job_id": "{{ event.payload.job_id }}"}
    for use_case in LOOPS:  # each closed loop's flow starts on its own announcement, and only those do
        (loop_trigger,) = [each for each in deployments[use_case]["triggers"] if each["expect"] == [LOOP_DUE_EVENT]]
        assert loop_trigger["match"] == {"prefect.resource.id": loop_resource(use_case)}
    announced = {
        name for name, deployment in deployments.items()
        for each in deployment.get("triggers", []) if each["expect"] == [LOOP_DUE_EVENT]
    }  # fmt: skip
    assert announced == set(LOOPS)
    (alert_trigger,) = deployments["operational-alert"]["triggers"]
    assert alert_trigger["expect"] == ["exstream-push.ops.alert"]
    assert alert_trigger["parameters"] == {"alert_id": "{{ event.payload.alert_id }}"}


def test_the_watermark_value_round_trips() -> None:
    cursor = JobCursor(NOW, frozenset({"k1", "k2"}))
    assert JobCursor.from_value(cursor.to_value()) == cursor
    assert JobCursor.from_value(None) == JobCursor()


def test_a_watermark_from_before_the_one_outbox_hands_its_unsent_events_to_the_outbox(
    watcher: None, emulator: ExstreamEmulator, posted: list[dict[str, Any]]
) -> None:
    old = ExstreamJob(id="OLD-1", status="error", channel="bills", end_date=NOW - timedelta(minutes=10))
    unsent = job_event(old, "delivery-exceptions", NOW - timedelta(minutes=9))
    ledger = ledger_for(get_settings())
    legacy = {"ended_at": (NOW - timedelta(minutes=10)).isoformat(), "recent_ends": [], "unsent_events": [unsent]}
    ledger.write_watermark(watch.WATERMARK_NAME, json.dumps(legacy), NOW)

    _end(emulator, "NEW-1", "complete", NOW - timedelta(minutes=1))
    assert exstream_watcher(as_of=NOW)["emitted"] == 2
    assert posted[0]["id"] == unsent["id"]
    assert posted[0]["resource"] == unsent["resource"] and posted[0]["payload"] == unsent["payload"]
    assert "unsent_events" not in json.loads(read_cursor(ledger)[0] or "{}")


def test_failed_ends_are_recorded_with_the_cursor_and_ends_after_as_of_wait(
    watcher: None, emulator: ExstreamEmulator, posted: list[dict[str, Any]]
) -> None:
    _end(emulator, "FAIL-A", "error", NOW - timedelta(minutes=2))
    _end(emulator, "DONE-B", "complete", NOW - timedelta(minutes=1))
    _end(emulator, "FAIL-LATER", "error", NOW + timedelta(minutes=5))
    exstream_watcher(as_of=NOW)
    ledger = ledger_for(get_settings())
    assert [job_id for job_id, _ in ledger.outbox.unprocessed_failed_jobs(NOW + timedelta(hours=1))] == _ids("FAIL-A")
    assert _job_ids(posted) == _ids("FAIL-A", "DONE-B")

    exstream_watcher(as_of=NOW + timedelta(minutes=6))
    ends = ledger.outbox.unprocessed_failed_jobs(NOW + timedelta(hours=1))
    assert [job_id for job_id, _ in ends] == _ids("FAIL-A", "FAIL-LATER")
    assert _job_ids(posted) == _ids("FAIL-A", "DONE-B", "FAIL-LATER")


def test_new_ends_take_nothing_after_the_moment_the_run_stands_for() -> None:
    ended = [ExstreamJob(id=f"J-{n}", status="complete", end_date=NOW + timedelta(minutes=n)) for n in (-1, 0, 1)]
    taken = JobCursor().new_ends(ended, NOW - timedelta(hours=1), NOW)
    assert [job.id for job in taken] == ["J--1", "J-0"]


def test_a_server_serving_50_jobs_a_page_has_every_one_of_1000_jobs_watched(
    watcher: None, emulator: ExstreamEmulator, posted: list[dict[str, Any]]
) -> None:
    assert emulator.page_cap == 50
    names = [f"PAGED-{n:04d}" for n in range(1000)]
    for n, name in enumerate(names):
        _end(emulator, name, "complete", NOW - timedelta(hours=2) + timedelta(seconds=n))
    result = exstream_watcher(as_of=NOW)
    assert (result["completed"], result["emitted"]) == (1000, 1000)
    assert sorted(_job_ids(posted)) == sorted(_ids(*names))
