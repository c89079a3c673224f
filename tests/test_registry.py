"""The use-case registry is the one list: the CLI's run commands, prefect.yaml's deployments and the README's table
follow it, in the source document's order."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from exstream_push.cli import build_parser
from exstream_push.status import UseCase
from exstream_push.usecases.registry import USE_CASES

ROOT = Path(__file__).resolve().parent.parent


def test_every_use_case_is_registered_once_in_the_documents_order() -> None:
    assert list(USE_CASES) == [use_case.value for use_case in UseCase]


def test_the_cli_runs_exactly_the_registered_use_cases() -> None:
    parser = build_parser()
    run = next(
        action for action in parser._subparsers._group_actions[0].choices["run"]._actions if action.dest == "use_case"
    )
    assert list(run.choices) == list(USE_CASES)


def test_prefect_yaml_deploys_each_registered_flow_from_its_file() -> None:
    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    by_name = {deployment["name"]: deployment["entrypoint"] for deployment in deployments}
    for slug, entry in USE_CASES.items():
        assert by_name.get(slug) == entry.deployment_entrypoint, slug
        path, function = entry.deployment_entrypoint.split(":")
        assert f"def {function}(" in (ROOT / path).read_text()
        assert entry.load().name == slug  # the flow's own name is the slug the registry gives it
    assert set(by_name) - set(USE_CASES) == {"exstream-watcher"}


def test_the_failure_automation_matches_the_flow_of_every_deployment_and_no_other() -> None:
    """Its list of flow names is prefect.yaml's second: held against the flows the deployments load."""
    import importlib

    project = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployed = set()
    for deployment in project["deployments"]:
        path, function = deployment["entrypoint"].split(":")
        module = importlib.import_module(f"exstream_push.{path.removesuffix('.py').replace('/', '.')}")
        deployed.add(getattr(module, function).name)
    (failures,) = [item for item in project["automations"] if item["actions"][0]["type"] == "send-notification"]
    assert failures["trigger"]["match_related"]["prefect.resource.role"] == "flow"
    assert set(failures["trigger"]["match_related"]["prefect.resource.name"]) == deployed


def test_the_readme_table_lists_the_registered_flows_in_order() -> None:
    rows = re.findall(r"^\| (\d) \| `(\w+)` \|", (ROOT / "README.md").read_text(), flags=re.MULTILINE)
    expected = [(str(number), entry.flow.split(":")[1]) for number, entry in enumerate(USE_CASES.values(), start=1)]
    assert rows == expected


def test_every_flow_refuses_a_moment_without_a_zone() -> None:
    """A naive ``as_of`` read in the server's zone would replay a run differently: every flow refuses it at once."""
    from datetime import datetime

    import pytest

    naive = datetime(2026, 12, 1, 9, 0)
    for entry in USE_CASES.values():
        arguments = {"as_of": naive, **({"alert_id": "A-1"} if "alert_id" in entry.options else {})}
        if entry.takes_job:
            arguments["job_id"] = "J-1"
        with pytest.raises(ValueError, match="time zone"):
            entry.load().fn(**arguments)
