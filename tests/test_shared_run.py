"""Two worker processes on one 100,000-customer run, one PostgreSQL ledger: each message once, both did work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from exstream_push.ledger import Notification, PostBack
from exstream_push.ledger.models import WorkBatch, WorkRun
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push_dev.emulators.google_oauth import GoogleEmulators, fcm_process_env
from exstream_push_dev.emulators.samples import write_devices, write_manifest
from exstream_push_dev.emulators.server import EmulatorProcess
from tests.conftest import exstream_inbox
from tests.oracle import read_scenario

pytestmark = [pytest.mark.services, pytest.mark.timeout(1500)]

CUSTOMERS = 100_000
BATCH_SIZE = 10_000
JOB_ID = "JOB-SHARED-1"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "exstream_push.cli", *args]


def test_two_workers_share_one_run_and_send_each_message_once(
    prefect_harness: None,
    google: GoogleEmulators,
    env: dict[str, str],
    exstream,
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.settings import PREFECT_API_URL

    manifest, devices = tmp_path / "_STDDELIVERYFILE.xml", tmp_path / "devices.csv"
    write_manifest(manifest, CUSTOMERS, seed=41, job_id=JOB_ID)
    write_devices(devices, CUSTOMERS, seed=42)
    expected = read_scenario(manifest, devices, JOB_ID)

    # One emulator process (its counters are per process), counting rather than keeping 100,000 messages.
    # Its tokens are the session's token emulator's, which the env's service-account key signs in at.
    with EmulatorProcess(
        "exstream_push_dev.emulators.fcm:create_fcm_app_from_env",
        env={"FCM_EMULATOR_KEEP_MESSAGES": "0", **fcm_process_env(google.oauth)},
    ) as fcm_url:
        child_env = {
            **os.environ,
            **env,
            "EXSTREAM_PUSH_DATABASE_URL": postgres_url,
            "EXSTREAM_PUSH_FCM_URL": fcm_url,
            "EXSTREAM_PUSH_BATCH_SIZE": str(BATCH_SIZE),
            "PREFECT_API_URL": PREFECT_API_URL.value(),
        }
        subprocess.run(_cli("devices", "import", str(devices)), env=child_env, check=True, capture_output=True)
        run = _cli("run", "statement-ready", "--manifest", str(manifest), "--job", JOB_ID)
        workers = [
            subprocess.Popen(run, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        outputs = [worker.communicate(timeout=1200) for worker in workers]
        for worker, (_out, err) in zip(workers, outputs, strict=True):
            assert worker.returncode == 0, err[-3000:]
        accepted = httpx.get(f"{fcm_url}/_emulator/stats").json()["accepted"]

    monkeypatch.setenv("EXSTREAM_PUSH_DATABASE_URL", postgres_url)
    ledger = ledger_for(get_settings())
    with ledger.engine.connect() as conn:
        by_status: dict[str, set[tuple[str, str]]] = {}
        for document_id, device_id, status in conn.execute(
            select(Notification.document_id, Notification.device_id, Notification.status).where(
                Notification.device_id != ""
            )
        ):
            by_status.setdefault(status, set()).add((document_id, device_id))
        runs = conn.execute(select(WorkRun.id, WorkRun.state)).all()
        batches = conn.execute(select(WorkBatch.state, WorkBatch.claimed_by)).all()
        post_backs = conn.scalar(select(func.count()).select_from(PostBack))

    # Every eligible (document, device) accepted, and the emulator accepted no more: each exactly once.
    assert by_status["sent"] == expected.accepted
    assert by_status["failed"] == expected.failed
    assert "pending" not in by_status
    assert accepted == len(expected.accepted)

    # One run, all its batches done, and both workers finished at least one of them.
    assert [state for _id, state in runs] == ["done"]
    assert len(batches) == CUSTOMERS // BATCH_SIZE
    assert {state for state, _ in batches} == {"done"}
    pids_by_batch = [int(claimed_by.split(":")[1]) for _, claimed_by in batches]
    assert {worker.pid for worker in workers} == set(pids_by_batch)

    # The outcomes were posted back to Exstream once.
    assert post_backs == 1
    assert len([p for p in exstream_inbox(exstream) if p["path"].endswith("/push-status")]) == 1
