"""Event-driven operation end to end: a Prefect server on PostgreSQL, a process worker and prefect.yaml deployed.

The Exstream emulator completes a statement job and fails another; the exstream-watcher deployment turns them into
events whose triggers start statement-ready (which sends) and delivery-exceptions. An ops alert posted to the signed
ingress API starts operational-alert. One server, worker and set of deployments serve the whole module.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml

from exstream_push.devices import import_devices
from exstream_push.ledger import Ledger
from exstream_push_dev.emulators.exstream import ExstreamEmulator, create_exstream_app, job_uuid
from exstream_push_dev.emulators.google_oauth import google_emulators
from exstream_push_dev.emulators.samples import customer_id, write_devices, write_exstream_job
from exstream_push_dev.emulators.server import ServerThread, free_port
from exstream_push_dev.stack import LOOPBACK, PROJECT_ROOT, ChildProcess, wait_for_http
from tests.conftest import exstream_inbox, fcm_messages
from tests.prefect_server import PrefectServer, prefect_postgres_database

pytestmark = [pytest.mark.services, pytest.mark.timeout(1200)]

STATEMENT_JOB = job_uuid("STMT-EVENT-1")
FAILED_JOB = job_uuid("FAIL-EVENT-1")
CUSTOMERS = 200
INGRESS_SECRET = "event-driven-test-secret"
DEPLOYMENTS = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())["deployments"]


@dataclass
class EventDrivenSystem:
    home: Path
    prefect: PrefectServer
    fcm: ServerThread
    exstream: ServerThread
    env: dict[str, str]

    @property
    def emulator(self) -> ExstreamEmulator:
        return self.exstream.app.state.exstream

    def run_watcher(self) -> None:
        run_id = self.prefect.run_deployment("exstream-watcher")
        self.prefect.wait_for_completed("the exstream-watcher run", self.prefect.flow_run(run_id))


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EventDrivenSystem]:
    """Emulators, a ledger with devices, Prefect server and worker, and every deployment whose flow exists."""
    home = tmp_path_factory.mktemp("event-driven")
    with (
        prefect_postgres_database() as prefect_database,
        google_emulators(home / "service-account.json", "test-project") as google,
        ServerThread(create_exstream_app(home / "exstream-data")) as exstream,
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
            "EXSTREAM_PUSH_LINK_SECRET": "event-driven-link-secret",
            "EXSTREAM_PUSH_INGRESS_SECRET": INGRESS_SECRET,
        }
        prefect = PrefectServer(home, prefect_database, env).start()
        try:
            prefect.deploy_all()
            prefect.start_worker()
            yield EventDrivenSystem(home, prefect, fcm, exstream, env)
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
    """The fixture ran ``prefect deploy --all``: every deployment of prefect.yaml is on the server."""
    assert system.prefect.deployment_names() == {d["name"] for d in DEPLOYMENTS}


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
