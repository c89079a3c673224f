"""Event-driven operation end to end: a Prefect server on PostgreSQL, a process worker and prefect.yaml deployed.

The Exstream emulator completes a statement job and fails another; the exstream-watcher deployment turns them into
events whose triggers start statement-ready (which sends) and delivery-exceptions. An ops alert posted to the signed
ingress API starts operational-alert. One server, worker and set of deployments serve the whole module.
"""

from __future__ import annotations

import json
import re
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
