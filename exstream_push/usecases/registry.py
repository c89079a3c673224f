"""The one list of use cases: the CLI's ``run`` commands come from it, and a test holds ``prefect.yaml``'s
deployments and the README's table against it, in the source document's order (1 to 8)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from exstream_push.status import UseCase


@dataclass(frozen=True)
class UseCaseEntry:
    """One use case: the flow that runs it (``module:function``), what ``exstream-push run`` offers for it, and its
    line in the README's table."""

    flow: str
    help: str
    manifest_required: bool = False  # one of --manifest and --job (whose manifests are fetched) must be given
    takes_manifest: bool = True  # offers --manifest
    takes_job: bool = True  # offers --job: the Exstream job to fetch, or with --manifest the one it came from
    job_help: str | None = None  # what --job means here, when it is not the above
    inputs: frozenset[str] = frozenset()  # files: any of "events", "payments"
    options: Mapping[str, str] = field(default_factory=dict)  # required string parameters (--name-with-dashes): help
    audit_export: bool = False  # ``exstream-push audit export`` offers it (the follow-up use cases)

    def load(self) -> Callable[..., dict[str, Any]]:
        module, function = self.flow.split(":")
        return getattr(importlib.import_module(module), function)

    @property
    def deployment_entrypoint(self) -> str:
        """The flow as ``prefect.yaml`` names it: a path in the project, since ``prefect deploy`` loads files."""
        module, function = self.flow.split(":")
        return f"{module.replace('exstream_push.', '', 1).replace('.', '/')}.py:{function}"


USE_CASES: dict[str, UseCaseEntry] = {
    UseCase.STATEMENT_READY.value: UseCaseEntry(
        "exstream_push.flows.statement_ready:statement_ready", "push 'your document is ready' for an Exstream run", True
    ),
    UseCase.PAYMENT_REMINDERS.value: UseCaseEntry(
        "exstream_push.flows.payment_reminders:payment_reminders",
        "payment due and delinquency reminders along the escalation ladder",
        inputs=frozenset({"payments"}),
    ),
    UseCase.POLICY_CHANGE.value: UseCaseEntry(
        "exstream_push.flows.policy_change:policy_change",
        "policy or contract change alerts, reminders until acknowledged, escalation to Exstream",
        inputs=frozenset({"events"}),
        audit_export=True,
    ),
    UseCase.DELIVERY_EXCEPTIONS.value: UseCaseEntry(
        "exstream_push.flows.delivery_exceptions:delivery_exceptions",
        "failed print, undeliverable e-mail and rejected documents → one push per failure to operations",
        takes_manifest=False,
        job_help="only this Exstream job, read through the Orchestration API (default: every failed job the "
        "exstream-watcher recorded that no run has handled yet)",
        inputs=frozenset({"events"}),
    ),
    UseCase.ACTION_REQUIRED.value: UseCaseEntry(
        "exstream_push.flows.action_required:action_required",
        "customer action prompts, reminders before the deadline, print fallback, expiry",
        inputs=frozenset({"events"}),
        audit_export=True,
    ),
    UseCase.PREFERENCE_SYNC.value: UseCaseEntry(
        "exstream_push.flows.preference_sync:preference_sync",
        "opt-ins, devices and preferences changed since the last sync → Exstream's channel selection",
        takes_manifest=False,
        takes_job=False,
    ),
    UseCase.OPERATIONAL_ALERT.value: UseCaseEntry(
        "exstream_push.flows.operational_alert:operational_alert",
        "push an operational alert the ingress received, then ask Exstream for the formal follow-up letter",
        takes_manifest=False,
        takes_job=False,
        options={"alert_id": "the alert's id, as the ingress API received it (POST /v1/ops/alerts)"},
    ),
    UseCase.LIFECYCLE_TRACKING.value: UseCaseEntry(
        "exstream_push.flows.lifecycle_tracking:lifecycle_tracking",
        "fold engagement into document status, report changes and request fallbacks from Exstream",
        takes_manifest=False,
        takes_job=False,
    ),
}
