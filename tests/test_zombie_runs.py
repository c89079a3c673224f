"""A flow run whose process died must not stay Running: heartbeats on for deployed runs, and the automation that
marks a run without them Crashed, as ``prefect.yaml`` declares it and ``exstream-push up`` creates it."""

from __future__ import annotations

import uuid
from datetime import timedelta

import yaml
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.settings import PREFECT_API_URL
from prefect.settings.models.flows import FlowsSettings

from exstream_push_dev.stack import PREFECT_YAML, apply_automations, project_automations, referenced_blocks

TERMINAL_EVENTS = {f"prefect.flow-run.{state}" for state in ("Completed", "Failed", "Cancelled", "Crashed")}


def _heartbeat_frequencies() -> dict[str, int]:
    deployments = yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))["deployments"]
    return {
        deployment["name"]: int(deployment["work_pool"]["job_variables"]["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"])
        for deployment in deployments
    }


def _zombie_automation() -> tuple[EventTrigger, ChangeFlowRunState]:
    block_ids = {name: uuid.uuid4() for name in referenced_blocks()}
    automations = project_automations(block_ids=block_ids)
    (automation,) = [a for a in automations if a.actions[0].type == "change-flow-run-state"]
    assert automation.enabled
    assert isinstance(automation.trigger, EventTrigger)
    (action,) = automation.actions
    assert isinstance(action, ChangeFlowRunState)
    return automation.trigger, action


def test_the_automation_crashes_a_running_flow_run_whose_heartbeats_stop() -> None:
    trigger, action = _zombie_automation()
    assert trigger.posture is Posture.Proactive
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert trigger.expect == {"prefect.flow-run.heartbeat"} | TERMINAL_EVENTS
    assert trigger.match.root == {"prefect.resource.id": "prefect.flow-run.*"}
    assert trigger.for_each == {"prefect.resource.id"}  # one window per flow run
    assert trigger.threshold == 1
    assert action.state is StateType.CRASHED


def test_every_deployed_run_sends_heartbeats_often_enough_for_the_automation() -> None:
    trigger, _action = _zombie_automation()
    frequencies = _heartbeat_frequencies()
    assert set(frequencies) == {d["name"] for d in yaml.safe_load(PREFECT_YAML.read_text())["deployments"]}
    # Several missed heartbeats before a run is called dead, for deployed runs and for runs started by hand
    # (Prefect's default frequency).
    slowest = max([*frequencies.values(), FlowsSettings.model_fields["heartbeat_frequency"].default])
    assert trigger.within >= timedelta(seconds=1.5 * slowest)
    assert trigger.within >= timedelta(seconds=3 * max(frequencies.values()))


def test_up_creates_the_automation_once_however_often_it_runs(prefect_harness: None) -> None:
    from prefect.client.orchestration import get_client

    api_url = PREFECT_API_URL.value()
    webhook = "http://127.0.0.1:9/hooks/operations"  # never called: no run fails here
    names = apply_automations(api_url, webhook)
    assert apply_automations(api_url, webhook) == names
    trigger, action = _zombie_automation()
    with get_client(sync_client=True) as client:
        (created,) = client.read_automations_by_name(names[0])
        (failures,) = client.read_automations_by_name(names[1])
        blocks = client.request("POST", "/block_documents/filter", json={}).json()
    assert created.trigger == trigger
    assert created.actions == [action]
    # the notification block is made once and found again by name
    operations = [block for block in blocks if block["name"] in referenced_blocks()]
    assert [block["id"] for block in operations] == [str(failures.actions[0].block_document_id)]
