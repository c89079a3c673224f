"""Event-driven operation end to end: a Prefect server on PostgreSQL, a process worker and prefect.yaml deployed.

The Exstream emulator completes a statement job and fails another; the exstream-watcher deployment turns them into
events whose triggers start statement-ready (which sends) and delivery-exceptions. An ops alert posted to the signed
ingress API starts operational-alert. One server, worker and set of deployments serve the whole module.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from exstream_push.devices import import_devices
from exstream_push.ledger import Ledger
from exstream_push_dev.emulators.exstream import ExstreamEmulator, create_exstream_app, job_uuid
from exstream_push_dev.emulators.google_oauth import google_emulators
from exstream_push_dev.emulators.operations import HOOK_PATH, create_operations_app
from exstream_push_dev.emulators.samples import customer_id, write_devices, write_exstream_job
from exstream_push_dev.emulators.server import ServerThread, free_port
from exstream_push_dev.stack import LOOPBACK, PROJECT_ROOT, ChildProcess, apply_automations, wait_for_http
from tests.conftest import exstream_inbox, fcm_messages
from tests.prefect_server import PrefectServer, prefect_postgres_database

pytestmark = [pytest.mark.services, pytest.mark.timeout(1200)]

STATEMENT_JOB = job_uuid("STMT-EVENT-1")
FAILED_JOB = job_uuid("FAIL-EVENT-1")
CUSTOMERS = 200
INGRESS_SECRET = "event-driven-test-secret"
LINK_SECRET = "event-driven-link-secret"
NOTIFICATION_TIMEOUT = 180.0
PREFECT_YAML = PROJECT_ROOT / "prefect.yaml"
DEPLOYMENTS = yaml.safe_load(PREFECT_YAML.read_text())["deployments"]


@dataclass
class EventDrivenSystem:
    home: Path
    prefect: PrefectServer
    fcm: ServerThread
    exstream: ServerThread
    operations: ServerThread
    env: dict[str, str]
    watcher_runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def emulator(self) -> ExstreamEmulator:
        return self.exstream.app.state.exstream

    def run_watcher(self, **parameters: Any) -> dict[str, Any]:
        run_id = self.prefect.run_deployment("exstream-watcher", parameters)
        run = self.prefect.wait_for_completed("the exstream-watcher run", self.prefect.flow_run(run_id))
        self.watcher_runs.append(run)
        return run


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EventDrivenSystem]:
    """Emulators, a ledger with devices, Prefect server and worker, and every deployment whose flow exists."""
    home = tmp_path_factory.mktemp("event-driven")
    with (
        prefect_postgres_database() as prefect_database,
        google_emulators(home / "service-account.json", "test-project") as google,
        ServerThread(create_exstream_app(home / "exstream-data")) as exstream,
        ServerThread(create_operations_app()) as operations,
    ):
        fcm = google.fcm
        ledger_url = f"sqlite:///{home / 'ledger.db'}"
        devices = home / "devices.csv"
        write_devices(devices, CUSTOMERS, seed=5)
        ledger = Ledger(ledger_url)
        import_devices(ledger, devices)
        ledger.dispose()
        env = {
            "EXSTREAM_PUSH_HOME": str(home / "state"),
            "EXSTREAM_PUSH_DATABASE_URL": ledger_url,
            "EXSTREAM_PUSH_FCM_URL": fcm.url,
            "EXSTREAM_PUSH_FCM_PROJECT": "test-project",
            "EXSTREAM_PUSH_FCM_SERVICE_ACCOUNT_FILE": str(google.service_account_file),
            "EXSTREAM_PUSH_EXSTREAM_URL": f"{exstream.url}/orchestration",
            "EXSTREAM_PUSH_OTDS_URL": f"{exstream.url}/otdsws",
            "EXSTREAM_PUSH_LINK_SECRET": LINK_SECRET,
            "EXSTREAM_PUSH_INGRESS_SECRET": INGRESS_SECRET,
        }
        prefect = PrefectServer(home, prefect_database, env).start()
        try:
            prefect.deploy_all()
            apply_automations(prefect.api_url, f"{operations.url}{HOOK_PATH}")
            prefect.start_worker()
            yield EventDrivenSystem(home, prefect, fcm, exstream, operations, env)
        finally:
            prefect.stop()


@pytest.fixture(scope="module")
def watched_jobs(system: EventDrivenSystem) -> EventDrivenSystem:
    """A statement job and a failing job, running while the watcher first looks, then ended before it looks again."""
    folder = write_exstream_job(system.home / "jobs", STATEMENT_JOB, CUSTOMERS, seed=5, channel="statements")
    system.emulator.load_job_folder(folder, overrides={"status": "started"})
    system.emulator.put_job(
        {"id": FAILED_JOB, "channel": "bills", "status": "started"},
        message_text="11/29/2026 06:00:01 INFO  Engine started\n11/29/2026 06:00:09 SEVERE  Print queue unavailable\n",
    )
    system.run_watcher()
    system.emulator.put_job({"id": STATEMENT_JOB, "status": "complete"})
    system.emulator.put_job({"id": FAILED_JOB, "status": "error", "msg": "Print queue unavailable"})
    system.run_watcher()
    return system


def test_a_completed_statement_job_starts_statement_ready_which_sends(watched_jobs: EventDrivenSystem) -> None:
    prefect = watched_jobs.prefect
    run = prefect.wait_for_completed(
        f"statement-ready for the completed job {STATEMENT_JOB}",
        prefect.run_of("statement-ready", job_id=STATEMENT_JOB),
    )
    assert run["name"] == f"statement-ready-{STATEMENT_JOB}"
    assert len(prefect.flow_runs("statement-ready")) == 1
    assert fcm_messages(watched_jobs.fcm), "statement-ready ran but FCM received nothing"
    posts = [p for p in exstream_inbox(watched_jobs.exstream) if p["path"].endswith("/push-status")]
    assert len(posts) == 1


def test_a_failed_job_starts_delivery_exceptions(watched_jobs: EventDrivenSystem) -> None:
    prefect = watched_jobs.prefect
    prefect.wait_for_completed(
        f"delivery-exceptions for the failed job {FAILED_JOB}", prefect.run_of("delivery-exceptions", job_id=FAILED_JOB)
    )
    assert not prefect.run_of("delivery-exceptions", job_id=STATEMENT_JOB)()


def test_an_ops_alert_posted_to_the_ingress_starts_operational_alert(system: EventDrivenSystem) -> None:
    from exstream_push.ingress.signing import SIGNATURE_HEADER, sign

    port = free_port()
    ingress = ChildProcess(
        "ingress API",
        [sys.executable, "-m", "exstream_push.cli", "serve", "--host", LOOPBACK, "--port", str(port)],
        env=system.prefect.env,
        cwd=PROJECT_ROOT,
        log_file=system.home / "ingress.log",
    ).start()
    try:
        wait_for_http(f"http://{LOOPBACK}:{port}/healthz", ingress)
        alert = {
            "alert_id": "OUTAGE-EVENT-1",
            "kind": "outage",
            "severity": "critical",
            "customer_ids": [customer_id(number) for number in range(1, 21)],
            "message_key": "outage",
            "occurred_at": datetime.now(UTC).isoformat(),
        }
        body = json.dumps(alert).encode()
        response = httpx.post(
            f"http://{LOOPBACK}:{port}/v1/ops/alerts",
            content=body,
            headers={
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign(INGRESS_SECRET.encode(), int(time.time()), body),
            },
        )
        assert response.status_code == 202, response.text
        prefect = system.prefect
        prefect.wait_for_completed(
            "operational-alert for OUTAGE-EVENT-1", prefect.run_of("operational-alert", alert_id="OUTAGE-EVENT-1")
        )
    finally:
        ingress.stop()


def test_every_flow_is_deployed(system: EventDrivenSystem) -> None:
    """The fixture ran ``prefect deploy --all``: every deployment of prefect.yaml is on the server; so is every
    trigger and automation, each with a description for the UI to show."""
    assert system.prefect.deployment_names() == {d["name"] for d in DEPLOYMENTS}
    automations = system.prefect.http.post("/automations/filter", json={}).json()
    triggers = {trigger["name"] for deployment in DEPLOYMENTS for trigger in deployment.get("triggers", [])}
    standalone = {automation["name"] for automation in yaml.safe_load(PREFECT_YAML.read_text())["automations"]}
    assert {automation["name"] for automation in automations} == triggers | standalone
    assert all(automation["description"].strip() for automation in automations), [
        automation["name"] for automation in automations if not automation["description"].strip()
    ]


def _notifications_naming(system: EventDrivenSystem, text: str) -> list[dict[str, Any]]:
    """The operations inbox's notifications mentioning ``text``, once at least one arrived (bounded wait)."""
    deadline = time.monotonic() + NOTIFICATION_TIMEOUT
    while True:
        found = [note for note in system.operations.app.state.inbox.received if text in json.dumps(note)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(1.0)


def test_a_failed_flow_run_tells_operations_through_the_notification_block(system: EventDrivenSystem) -> None:
    """statement-ready for a job Exstream does not know fails at once; the failure automation sends one
    notification through the exstream-push-operations block: the run, its flow, its state and a link, no secret and
    not the state's message."""
    prefect = system.prefect
    run_id = prefect.run_deployment("statement-ready", {"job_id": job_uuid("NO-SUCH-JOB-1")})
    run = prefect.wait_for_run("statement-ready for a job Exstream does not know", prefect.flow_run(run_id))
    assert run["state_type"] == "FAILED", run["state"]

    notes = _notifications_naming(system, run["name"])
    inbox = system.operations.app.state.inbox.received
    assert len(notes) == 1, f"{len(notes)} notifications name {run['name']}; the inbox holds {inbox}"
    (note,) = notes
    assert note["subject"] == f"exstream-push: statement-ready run {run['name']} Failed"
    assert note["text"].splitlines() == [
        f"Flow run {run['name']} of statement-ready ended Failed.",
        f"{prefect.url}/runs/flow-run/{run_id}",
    ]
    sent = json.dumps(note)
    assert run["state"]["message"] not in sent
    for secret in (INGRESS_SECRET, LINK_SECRET, system.env["EXSTREAM_PUSH_FCM_SERVICE_ACCOUNT_FILE"]):
        assert secret not in sent


def test_a_job_event_names_the_watcher_run_that_saw_the_job_end(watched_jobs: EventDrivenSystem) -> None:
    prefect = watched_jobs.prefect
    body = {
        "filter": {
            "occurred": {"since": (datetime.now(UTC) - timedelta(days=1)).isoformat()},
            "event": {"name": ["exstream.job.completed"]},
            "resource": {"id": [f"exstream.job.{STATEMENT_JOB}"]},
        }
    }
    deadline = time.monotonic() + 60  # the server persists events in the background
    while not (events := prefect.http.post("/events/filter", json=body).json()["events"]):
        assert time.monotonic() < deadline, f"no exstream.job.completed event for {STATEMENT_JOB} on the server"
        time.sleep(1.0)
    (event,) = events
    runs = [r for r in event["related"] if r["prefect.resource.role"] == "flow-run"]
    seen_by = watched_jobs.watcher_runs[1]  # the first run saw the job started, the second saw it end
    assert runs == [
        {
            "prefect.resource.id": f"prefect.flow-run.{seen_by['id']}",
            "prefect.resource.role": "flow-run",
            "prefect.resource.name": seen_by["name"],
        }
    ]
    flows = [r["prefect.resource.name"] for r in event["related"] if r["prefect.resource.role"] == "flow"]
    assert flows == ["exstream-watcher"]


def _info_lines(system: EventDrivenSystem, run: dict[str, Any]) -> list[str]:
    """A finished run's log lines at INFO and above, once its last one (the flow's end) reached the server: a run
    is Completed before its process sends the last batch of logs."""
    body = {"logs": {"flow_run_id": {"any_": [run["id"]]}, "level": {"ge_": 20}}, "sort": "TIMESTAMP_ASC"}
    deadline = time.monotonic() + 60
    while True:
        entries = system.prefect.http.post("/logs/filter", json=body).json()
        ended = any(e["task_run_id"] is None and e["message"].startswith("Finished in state") for e in entries)
        if ended or time.monotonic() > deadline:
            return [entry["message"] for entry in entries]
        time.sleep(1.0)


# What Prefect's worker and engine log at INFO about any deployed run; nothing else may appear when nothing changed.
PREFECT_RUN_LINES = re.compile(
    r"^(Worker '.*' submitting flow run|Flow run '.*' submitted to infrastructure|Opening process|"
    r"Running \d+ deployment pull step|Executing deployment step|Deployment step '.*' completed|"
    r"All deployment steps completed|"
    r"Beginning flow run|View at|Finished in state|Process for flow run)"
)


def test_watcher_runs_are_named_for_their_moment_and_say_nothing_when_nothing_ended(
    watched_jobs: EventDrivenSystem,
) -> None:
    changed = watched_jobs.watcher_runs[1]  # took the two job ends
    assert any(line.startswith("read Exstream jobs ended since") for line in _info_lines(watched_jobs, changed))
    for run in watched_jobs.watcher_runs:  # started without as_of: named for the moment they started
        assert re.fullmatch(r"watch-\d{4}-\d\d-\d\d \d\d:\d\d", run["name"]), run["name"]

    as_of = datetime.now(timezone(timedelta(hours=1)))  # nothing ended since the last look
    quiet = watched_jobs.run_watcher(as_of=as_of.isoformat())
    assert quiet["name"] == f"watch-{as_of.astimezone(UTC):%Y-%m-%d %H:%M}"
    lines = _info_lines(watched_jobs, quiet)
    assert any(line.startswith("Finished in state") for line in lines), f"the run's logs did not arrive: {lines}"
    assert [line for line in lines if not PREFECT_RUN_LINES.match(line)] == [], lines


def test_a_run_from_the_form_with_a_saved_block_picked_uses_that_block(system: EventDrivenSystem) -> None:
    """The run form offers saved blocks for the connection parameters and sends the pick as a block reference;
    the run connects with that block's settings (seen here by the client id Exstream was called with)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from exstream_push.blocks import ExstreamConnection

    job = job_uuid("STMT-PICKED-1")
    folder = write_exstream_job(system.home / "picked-jobs", job, 30, seed=9, channel="statements")
    system.emulator.load_job_folder(folder)
    picked = ExstreamConnection(
        url=system.env["EXSTREAM_PUSH_EXSTREAM_URL"],
        otds_url=system.env["EXSTREAM_PUSH_OTDS_URL"],
        client_id="picked-in-the-run-form",
        client_secret="picked-secret",
    )
    with temporary_settings({PREFECT_API_URL: system.prefect.api_url}):
        block_id = picked.save("picked-exstream", overwrite=True)
    schema = system.prefect.deployment("statement-ready")["parameter_openapi_schema"]
    assert {"$ref": "#/definitions/ExstreamConnection"} in schema["properties"]["exstream_block"]["anyOf"]
    assert schema["definitions"]["ExstreamConnection"]["block_type_slug"] == "exstream-connection"
    assert all(field.get("description") for field in schema["properties"].values())

    reference = {"$ref": {"block_document_id": str(block_id)}}
    run_id = system.prefect.run_deployment("statement-ready", {"job_id": job, "exstream_block": reference})
    system.prefect.wait_for_completed("the statement-ready run with a picked block", system.prefect.flow_run(run_id))
    posted = [
        each.fields
        for each in system.emulator.jobs.values()
        if each.fields.get("channel") == "push-status" and each.fields.get("triggeredBy") == "picked-in-the-run-form"
    ]
    assert len(posted) == 1


BURST = 10_000


class _SignedIngress:
    """``exstream-push serve`` as deployed: its own process, its lifespan announcing the closed loops."""

    def __init__(self, system: EventDrivenSystem) -> None:
        self.port = free_port()
        self.process = ChildProcess(
            "ingress API",
            [sys.executable, "-m", "exstream_push.cli", "serve", "--host", LOOPBACK, "--port", str(self.port)],
            env=system.prefect.env,
            cwd=PROJECT_ROOT,
            log_file=system.home / "loop-ingress.log",
        )

    def __enter__(self) -> _SignedIngress:
        self.process.start()
        wait_for_http(f"http://{LOOPBACK}:{self.port}/healthz", self.process)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.process.stop()

    def post(self, path: str, payload: Any) -> httpx.Response:
        from exstream_push.ingress.signing import SIGNATURE_HEADER, sign

        body = json.dumps(payload).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(INGRESS_SECRET.encode(), int(time.time()), body),
        }
        return httpx.post(f"http://{LOOPBACK}:{self.port}{path}", content=body, headers=headers, timeout=120)


def _seconds_until(found: Any, timeout: float = 300.0) -> float:
    """Seconds until ``found()`` is true (bounded); the figure the loop's latency is reported by, never asserted."""
    started = time.monotonic()
    while not found():
        assert time.monotonic() - started < timeout, "the loop did not close within the time allowed"
        time.sleep(0.25)
    return time.monotonic() - started


def _posted_rows(system: EventDrivenSystem, channel: str) -> list[dict[str, str]]:
    import csv
    import io

    rows = []
    for post in exstream_inbox(system.exstream):
        if post["method"] == "POST" and post["path"].endswith(f"/{channel}"):
            rows.extend(csv.DictReader(io.StringIO(post["body"])))
    return rows


def test_customer_signals_close_their_loops_without_a_schedule_and_a_burst_starts_few_runs(
    watched_jobs: EventDrivenSystem,
) -> None:
    """A signed ``opened`` reaches Exstream's document-status channel and a preference change its channel-preferences
    channel through the ingress's loop announcements (the test server runs no schedule); 10,000 engagement events
    start a handful of lifecycle runs and each is stored once; a tracking failure reaches operations."""
    from sqlalchemy import select

    from exstream_push.ledger import EngagementEvent, Notification

    system = watched_jobs
    prefect = system.prefect
    prefect.wait_for_completed("the statement run", prefect.run_of("statement-ready", job_id=STATEMENT_JOB))
    ledger = Ledger(system.env["EXSTREAM_PUSH_DATABASE_URL"])
    with ledger.engine.connect() as conn:
        notified = sorted(
            set(
                conn.execute(
                    select(Notification.document_id, Notification.customer_id).where(
                        Notification.job_id == STATEMENT_JOB, Notification.status == "sent"
                    )
                ).all()
            )
        )
    assert len(notified) > 100
    occurred = datetime.now(UTC).isoformat()

    def engagement(number: int, kind: str, document: tuple[str, str]) -> dict[str, Any]:
        return {"event_id": f"loop-{number}", "type": kind, "document_id": document[0], "customer_id": document[1],
                "occurred_at": occurred}  # fmt: skip

    with _SignedIngress(system) as ingress:
        # One opened event, alone: seconds until Exstream's document-status channel has the document's row.
        first = notified[0]
        assert ingress.post("/v1/engagement-events", engagement(0, "opened", first)).json()["stored"] == 1
        opened_seconds = _seconds_until(
            lambda: any(
                (row["document_id"], row["status"]) == (first[0], "opened")
                for row in _posted_rows(system, "document-status")
            )
        )
        # A preference change: seconds until channel-preferences has the customer's row.
        customer = notified[1][1]
        assert ingress.post("/v1/preferences", {"customer_id": customer, "push_opt_in": False}).status_code == 200
        preference_seconds = _seconds_until(
            lambda: any(
                (row["customer_id"], row["push_enabled"]) == (customer, "false")
                for row in _posted_rows(system, "channel-preferences")
            )
        )
        print(f"\nloop latency: opened → document-status {opened_seconds:.1f} s, "
              f"preference → channel-preferences {preference_seconds:.1f} s")  # fmt: skip

        runs_before = len(prefect.flow_runs("lifecycle-tracking"))
        kinds = ("delivered", "opened", "document_accessed")
        burst = [engagement(1 + n, kinds[n % 3], notified[n % len(notified)]) for n in range(BURST)]
        for start in range(0, BURST, 1_000):
            response = ingress.post("/v1/engagement-events", burst[start : start + 1_000])
            assert response.status_code == 200 and not response.json()["rejected"], response.text

        failure = {
            "expctr": {"schemaType": "Exstream-Email-NDLV", "eventId": "loop-ndlv-1", "eventDate": occurred},
            "user": {"CustomerId": notified[2][1], "DocumentId": notified[2][0]},
        }
        operations_pushes = len([message for message in fcm_messages(system.fcm) if "topic" in message])
        assert ingress.post("/v1/exstream/events", failure).json()["failed"] == 1

        def lifecycle_settled() -> bool:
            runs = prefect.flow_runs("lifecycle-tracking")
            accessed = {row["document_id"] for row in _posted_rows(system, "document-status")
                        if row["status"] == "document_accessed"}  # fmt: skip
            return accessed >= {document for document, _ in notified[:3]} and all(
                run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for run in runs
            )

        _seconds_until(lifecycle_settled)
        time.sleep(20)  # a trailing announcement after the last request would start its run by now
        _seconds_until(lifecycle_settled)

    burst_runs = prefect.flow_runs("lifecycle-tracking")[runs_before:]
    assert 1 <= len(burst_runs) <= 5, f"{len(burst_runs)} lifecycle runs for one burst"
    assert all(run["state_type"] == "COMPLETED" for run in prefect.flow_runs("lifecycle-tracking"))
    with ledger.engine.connect() as conn:
        stored = conn.execute(select(EngagementEvent.event_id).where(EngagementEvent.event_id.like("loop-%"))).all()
    assert len(stored) == BURST + 1  # every event stored exactly once
    statuses = [(row["document_id"], row["status"]) for row in _posted_rows(system, "document-status")]
    assert len(statuses) == len(set(statuses))  # each document's change told to Exstream once
    assert {document for document, status in statuses if status == "document_accessed"} == {
        document for document, _ in notified
    }

    # The tracking failure: marked processed, in `exceptions list`, and pushed to operations.
    _seconds_until(lambda: _tracking_processed(ledger))
    ledger.dispose()
    listed = subprocess.run(
        [sys.executable, "-m", "exstream_push.cli", "exceptions", "list", "--json"],
        env=prefect.env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert notified[2][0] in {item.get("document_id") for item in json.loads(listed.stdout)}
    _seconds_until(lambda: len([m for m in fcm_messages(system.fcm) if "topic" in m]) > operations_pushes)


def _tracking_processed(ledger: Ledger) -> bool:
    from sqlalchemy import select

    from exstream_push.ledger import TrackingEvent

    with ledger.engine.connect() as conn:
        moment = conn.execute(select(TrackingEvent.processed_at).where(TrackingEvent.event_id == "loop-ndlv-1"))
        return moment.scalar_one() is not None
