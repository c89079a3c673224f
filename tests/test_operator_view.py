"""What an operator reads in the Prefect UI about a finished run, read back through the Prefect API: the summary
on the flow run under the use case's stable key, the progress at 100 %, batches told apart by name, and a task
graph in which each batch's segment follows the enqueue and the post-back follows every send."""

from __future__ import annotations

import re
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.objects import TaskRun
from prefect.flow_engine import run_flow

from exstream_push.cli import main
from exstream_push.flows.statement_ready import statement_ready
from exstream_push.tasks.summary import summary_key
from exstream_push_dev.emulators.samples import write_devices, write_manifest

CUSTOMERS = 1_200
JOB_ID = "JOB-OPERATOR-1"


def _task_runs(client: SyncPrefectClient, flow_run_id: UUID) -> list[TaskRun]:
    return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def _upstream_ids(task_run: TaskRun) -> set[UUID]:
    """Every task run this one's inputs name (arguments and wait_for alike): the edges the graph draws."""
    return {value.id for inputs in task_run.task_inputs.values() for value in inputs if getattr(value, "id", None)}


def test_a_finished_statement_run_reads_well_through_the_prefect_api(
    prefect_harness: None,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    fcm,
    exstream,
) -> None:
    monkeypatch.setenv("EXSTREAM_PUSH_BATCH_SIZE", "400")  # three batches
    manifest, devices = tmp_path / "_STDDELIVERYFILE.xml", tmp_path / "devices.csv"
    write_manifest(manifest, CUSTOMERS, seed=31, job_id=JOB_ID)
    write_devices(devices, CUSTOMERS, seed=32)
    assert main(["devices", "import", str(devices)]) == 0

    state = statement_ready(manifest=str(manifest), job_id=JOB_ID, return_state=True)
    assert state.is_completed()
    result = state.result()
    flow_run_id = state.state_details.flow_run_id

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        assert flow_run.name == f"statement-ready-{JOB_ID}"

        # The summary hangs off the flow run, under the key every statement-ready run uses.
        on_the_run = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        summaries = [artifact for artifact in on_the_run if artifact.key == summary_key("statement-ready")]
        assert len(summaries) == 1 and summaries[0].task_run_id is None
        summary = summaries[0]
        assert summary.type == "markdown"
        assert f"**{result['sent']:,} sent**" in summary.data
        assert "sent/s" in summary.data
        assert f"Exstream channel `{result['post_back']['channel']}`" in summary.data
        (started,) = result["post_back"]["exstream_jobs"]  # the job Exstream started on the posted file
        assert f"Exstream job `{started}`" in summary.data
        assert "| status | reason or code | count |" in summary.data
        assert "audit export --use-case statement-ready" in summary.data
        assert "Evidence head after this run: `" in summary.data
        assert JOB_ID in summary.description

        # The progress artifact of the run ends at 100 %.
        progress = [artifact for artifact in on_the_run if artifact.type == "progress"]
        assert [artifact.key for artifact in progress] == ["statement-ready-progress"]
        assert float(progress[0].data) == 100.0

        # History: an earlier run's summary is kept under the same key (the key is not the job's).
        every_summary = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[summary_key("statement-ready")]))
        )
        assert flow_run_id in {artifact.flow_run_id for artifact in every_summary}

        runs = _task_runs(client, flow_run_id)
    by_name = {run.name: run for run in runs}
    enqueue = [run for run in runs if run.name.startswith("enqueue-batches")]
    assert len(enqueue) == 1
    segments = sorted(name for name in by_name if name.startswith("segment-recipients"))
    sends = [run for run in runs if run.name.startswith("send-push")]
    posts = [run for run in runs if run.name.startswith("post-outcomes-to-exstream")]
    assert result["batches"] == 3
    # Batches are numbered in their task runs' names.
    assert len(segments) == 3
    assert all(re.fullmatch(r"segment-recipients-batch-\d+", name) for name in segments)
    assert {run.name for run in sends} == {name.replace("segment-recipients", "send-push") for name in segments}
    for name in segments:
        assert enqueue[0].id in _upstream_ids(by_name[name])
        render = by_name[name.replace("segment-recipients", "render-messages")]
        assert by_name[name].id in _upstream_ids(render)
        assert render.id in _upstream_ids(by_name[name.replace("segment-recipients", "send-push")])
    assert len(posts) == 1
    assert {run.id for run in sends} <= _upstream_ids(posts[0])


def test_a_name_typed_for_a_run_is_kept(
    prefect_harness: None, env: dict[str, str], tmp_path: Path, fcm, exstream
) -> None:
    """Prefect renames every run of a flow with a run-name rule; a name a person gave is kept, a generated one
    replaced by the rule's."""
    manifest = tmp_path / "_STDDELIVERYFILE.xml"
    write_manifest(manifest, 20, seed=33, job_id="JOB-NAMED-1")
    parameters = {"manifest": str(manifest), "job_id": "JOB-NAMED-1"}
    with get_client(sync_client=True) as client:
        typed = client.create_flow_run(statement_ready, name="month-end rerun 2", parameters=parameters)
        generated = client.create_flow_run(statement_ready, parameters=parameters)
    for flow_run in (typed, generated):
        run_flow(statement_ready, flow_run=flow_run, parameters=parameters)
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(typed.id).name == "month-end rerun 2"
        assert client.read_flow_run(generated.id).name == "statement-ready-JOB-NAMED-1"
