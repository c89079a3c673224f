"""The one list of use cases: the CLI's ``run`` commands come from it, and a test holds ``prefect.yaml``'s
deployments and the README's table against it, in the source document's order (1 to 8)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exstream_push.status import UseCase


@dataclass(frozen=True)
class UseCaseEntry:
    """One use case: the flow that runs it (``module:function``), what ``exstream-push run`` offers for it, and its
    line in the README's table."""

    flow: str
    help: str
    manifest_required: bool = False
    takes_manifest: bool = True  # offers --manifest and --job-id
    takes_job: bool = True  # offers --job
    inputs: frozenset[str] = frozenset()  # files: any of "events", "payments"
    options: tuple[str, ...] = ()  # required string parameters, given as --name-with-dashes

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
    ),
    UseCase.DELIVERY_EXCEPTIONS.value: UseCaseEntry(
        "exstream_push.flows.delivery_exceptions:delivery_exceptions",
        "failed print, undeliverable e-mail and rejected documents → one push per failure to operations",
        takes_manifest=False,
        inputs=frozenset({"events"}),
    ),
    UseCase.ACTION_REQUIRED.value: UseCaseEntry(
        "exstream_push.flows.action_required:action_required",
        "customer action prompts, reminders before the deadline, print fallback, expiry",
        inputs=frozenset({"events"}),
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
        options=("alert_id",),
    ),
    UseCase.LIFECYCLE_TRACKING.value: UseCaseEntry(
        "exstream_push.flows.lifecycle_tracking:lifecycle_tracking",
        "fold engagement into document status, report changes and request fallbacks from Exstream",
        takes_manifest=False,
        takes_job=False,
    ),
}
