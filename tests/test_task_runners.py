"""Task runners: the same statement-ready run on Prefect's thread pool and on a two-worker Dask cluster.

The Dask cluster runs its workers as separate processes (``processes=True``), as in production: the test then
proves what threads would hide — tasks, blocks and batches pickle, and settings reach the workers through their
environment (the ``env`` fixture sets it before the cluster starts, so the workers inherit it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from exstream_push.cli import build_parser, main
from exstream_push.flows.statement_ready import statement_ready
from exstream_push.task_runners import task_runner_for
from exstream_push_dev.emulators.samples import write_devices, write_manifest
from exstream_push_dev.emulators.server import ServerThread
from tests.conftest import fcm_messages

JOB_ID = "JOB-DASK-1"
CUSTOMERS = 600


def test_task_runner_for_names_and_addresses() -> None:
    assert isinstance(task_runner_for("default"), ThreadPoolTaskRunner)
    remote = task_runner_for("dask", "tcp://10.0.0.5:8786")
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://10.0.0.5:8786"
    local = task_runner_for("dask", None, workers=2, processes=False)
    assert isinstance(local, DaskTaskRunner) and local.cluster_kwargs == {"n_workers": 2, "processes": False}
    with pytest.raises(ValueError, match="unknown task runner"):
        task_runner_for("ray")


def test_the_run_command_takes_a_task_runner() -> None:
    args = build_parser().parse_args(["run", "statement-ready", "--manifest", "m.xml", "--task-runner", "dask"])
    assert args.task_runner == "dask"
    assert build_parser().parse_args(["run", "preference-sync"]).task_runner == "default"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "statement-ready", "--manifest", "m.xml", "--task-runner", "ray"])


def _run(
    runner: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fcm: ServerThread, manifest: Path, devices: Path
) -> tuple[dict[str, Any], set[tuple[str, str]]]:
    """One run into a fresh ledger and an emptied emulator: its counts and its accepted (document, device) pairs."""
    home = tmp_path / runner
    monkeypatch.setenv("EXSTREAM_PUSH_HOME", str(home))
    monkeypatch.setenv("EXSTREAM_PUSH_DATABASE_URL", f"sqlite:///{home / 'ledger.db'}")
    fcm.app.state.fcm.reset()
    assert main(["devices", "import", str(devices)]) == 0
    flow = statement_ready.with_options(task_runner=task_runner_for(runner, workers=2))
    result = flow(manifest=str(manifest), job_id=JOB_ID, as_of=None)
    counts = {name: value for name, value in result.items() if name not in ("seconds_recording", "post_back")}
    accepted = {(message["data"]["document_ref"], message["token"]) for message in fcm_messages(fcm)}
    return counts, accepted


def test_a_two_worker_dask_cluster_sends_what_the_default_runner_sends(
    prefect_harness: None, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, fcm: ServerThread, tmp_path: Path
) -> None:
    manifest, devices = tmp_path / "_STDDELIVERYFILE.xml", tmp_path / "devices.csv"
    write_manifest(manifest, CUSTOMERS, seed=31, job_id=JOB_ID)
    write_devices(devices, CUSTOMERS, seed=32)
    monkeypatch.setenv("EXSTREAM_PUSH_BATCH_SIZE", "100")  # six batches for two workers

    default_counts, default_accepted = _run("default", tmp_path, monkeypatch, fcm, manifest, devices)
    dask_counts, dask_accepted = _run("dask", tmp_path, monkeypatch, fcm, manifest, devices)

    assert default_counts["sent"] == len(default_accepted) > 0
    assert dask_counts == default_counts
    assert dask_accepted == default_accepted
