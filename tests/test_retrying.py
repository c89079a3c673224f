"""Tasks retry only what can succeed: one condition, from the same classification the connectors use."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from firebase_admin import exceptions
from prefect import flow

from exstream_push.blocks import exstream_connection
from exstream_push.connectors.exstream import ExstreamError
from exstream_push.connectors.push_errors import PushConfigurationError
from exstream_push.errors import ExstreamPushError, JobOutputUnavailable, RunIncomplete
from exstream_push.retrying import can_succeed_again
from exstream_push.tasks.extract import ManifestSource, fetch_job_manifests
from exstream_push_dev.emulators.exstream import ExstreamEmulator, docgen_step_id, job_uuid
from exstream_push_dev.emulators.samples import write_exstream_job
from exstream_push_dev.emulators.server import ServerThread

JOB_ID = job_uuid("JOB-RETRY-1")


def _exstream_error(status: int | None) -> ExstreamError:
    return ExstreamError("GET", "/orchestration/api/v1/runtime/default/flow-steps/S/delivery-file", status, "x")


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_exstream_client_errors_are_not_retried(status: int) -> None:
    assert not can_succeed_again(_exstream_error(status))


@pytest.mark.parametrize("status", [None, 408, 429, 500, 502, 503, 504])
def test_exstream_transient_errors_are_retried(status: int | None) -> None:
    assert can_succeed_again(_exstream_error(status))


def test_a_transfer_broken_after_a_success_status_is_retried() -> None:
    assert can_succeed_again(_exstream_error(200))


def test_other_errors_follow_the_same_table() -> None:
    request = httpx.Request("GET", "http://exstream.invalid/")
    assert not can_succeed_again(PushConfigurationError("FCM refused our credentials"))
    assert not can_succeed_again(exceptions.UnauthenticatedError("no OAuth token"))
    assert can_succeed_again(exceptions.UnavailableError("try later"))
    assert not can_succeed_again(httpx.HTTPStatusError("x", request=request, response=httpx.Response(404)))
    assert can_succeed_again(httpx.HTTPStatusError("x", request=request, response=httpx.Response(503)))
    assert can_succeed_again(httpx.ConnectError("refused", request=request))
    assert can_succeed_again(ConnectionResetError())
    assert can_succeed_again(TimeoutError())


def test_errors_a_user_must_act_on_are_not_retried_and_unknown_ones_are() -> None:
    assert not can_succeed_again(ExstreamPushError("fix the input"))
    assert not can_succeed_again(RunIncomplete("3 records unreadable"))
    assert can_succeed_again(RuntimeError("database is locked"))


def test_a_locked_or_lost_ledger_is_retried_and_a_refused_row_is_not() -> None:
    """The ledger's value-free errors are ours, but a locked database or a lost connection goes away by itself."""
    from exstream_push.ledger.errors import LedgerIntegrityError, LedgerOperationalError, LedgerUnavailable

    assert can_succeed_again(LedgerOperationalError("ledger statement failed on SQLite: database is locked"))
    assert can_succeed_again(LedgerUnavailable("the ledger database (PostgreSQL)", "postgresql://h/db", "check it"))
    assert not can_succeed_again(LedgerIntegrityError("ledger statement failed on SQLite: CHECK constraint failed"))


@flow(name="fetch-for-test", persist_result=False)
def fetch(job_id: str) -> list[ManifestSource]:
    return fetch_job_manifests(job_id, exstream_connection(None), "statement-ready")


@pytest.fixture
def emulator(env: dict[str, str], exstream: ServerThread, exstream_data: Path) -> ExstreamEmulator:
    state: ExstreamEmulator = exstream.app.state.exstream
    state.load_job_folder(write_exstream_job(exstream_data / "jobs", JOB_ID, 20, seed=3))
    return state


def test_a_delivery_file_that_is_not_found_is_fetched_once(prefect_harness: None, emulator: ExstreamEmulator) -> None:
    step = docgen_step_id(JOB_ID)
    emulator.jobs[JOB_ID].delivery_file.unlink()  # listed as retrievable, but gone: 404

    # Exstream's 404 for the file becomes the run's own error, naming the job and the step, and is not retried.
    with pytest.raises(JobOutputUnavailable, match=f"Exstream job {JOB_ID}: the delivery file of flow step {step}"):
        fetch(JOB_ID)

    assert emulator.file_requests[step] == 1


def test_a_delivery_file_that_is_unavailable_for_a_moment_is_fetched_again(
    prefect_harness: None, emulator: ExstreamEmulator
) -> None:
    step = docgen_step_id(JOB_ID)
    emulator.file_faults[step] = [503]

    sources = fetch(JOB_ID)

    assert emulator.file_requests[step] == 2
    assert [source.step_id for source in sources] == [step]
    assert sources[0].path.read_bytes() == emulator.jobs[JOB_ID].delivery_file.read_bytes()
