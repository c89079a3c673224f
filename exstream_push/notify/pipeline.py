"""The notify pipeline: notices owed → (frequency cap) → segment → (quiet hours) → render → send.

Every flow that pushes hands its batch of owed notices to ``notify``, with the cap and quiet hours its use case's
configuration gives (or none). The cap runs before segmentation because it counts notices — a document at a stage,
however many devices — and ranks a customer's by the order they come in (most wanted first); quiet hours run after
it because they are each device's own. Notifications already decided and left ``pending`` (released from quiet
hours, retries run out) go through ``deliver``: render → send, the decision not taken twice.

The frames between the tasks are checked against ``exstream_push.notify.schemas``. With ``submit=True`` the tasks
are submitted as futures, for a task runner that places them (a statement run's batches); the frames are then
resolved inside the tasks and not checked on the way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture

from exstream_push.blocks.push import PushConnections
from exstream_push.ledger.store import notification_rows
from exstream_push.notify.schemas import MESSAGES, NOTICES, RECIPIENTS, conform
from exstream_push.notify.timing import FrequencyCap, QuietHours, allowed_by_cap, quiet_until
from exstream_push.retrying import retry_if_it_can_succeed
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push.status import SkipReason, Status
from exstream_push.tasks.render import render_messages
from exstream_push.tasks.segment import segment_recipients
from exstream_push.tasks.send import send_push


@task(name="release-deferred", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def release_deferred(use_case: str, as_of: datetime) -> int:
    """Deferred notifications whose quiet hours ended by ``as_of`` become ``pending`` (their key unchanged), so
    this run sends them, once. ``as_of`` moves to this run: that is when they go, which the cap counts."""
    released = ledger_for(get_settings()).notices.release_deferred(use_case, as_of)
    get_run_logger().info("%d deferred notification(s) released", released)
    return released


@task(name="apply-frequency-cap", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def apply_frequency_cap(candidates: pd.DataFrame, use_case: str, as_of: datetime, cap: FrequencyCap) -> pd.DataFrame:
    """Keeps the notices the cap allows; the rest are recorded ``skipped``/``frequency_capped`` for good.

    ``candidates`` holds one row per notice (document and stage, before devices), most wanted first, with
    ``customer_id``, ``document_id``, ``job_id`` and ``stage``.
    """
    ledger = ledger_for(get_settings())
    customers = candidates["customer_id"].unique().tolist()
    already = ledger.notices.recent_counts(use_case, customers, as_of, cap.window)
    allowed = allowed_by_cap(candidates["customer_id"], already, cap.max_notifications)
    capped = candidates[~allowed]
    ledger.record_final(
        notification_rows(capped, use_case, Status.SKIPPED, reason=SkipReason.FREQUENCY_CAPPED, as_of=as_of)
    )
    get_run_logger().info("frequency cap: %d notice(s) allowed, %d capped", int(allowed.sum()), len(capped))
    return candidates[allowed].reset_index(drop=True)


@task(name="defer-quiet-hours", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def defer_quiet_hours(recipients: pd.DataFrame, use_case: str, as_of: datetime, quiet: QuietHours) -> pd.DataFrame:
    """Returns the recipients that may be sent to now; those in their quiet hours are recorded ``deferred``.

    A deferred row keeps its idempotency key and gets ``not_before`` (when the window ends in the device's
    ``timezone``), so the first run at or after that moment sends it, once.
    """
    later = quiet_until(as_of, recipients["timezone"], quiet)
    deferred = later.notna()
    ledger_for(get_settings()).record_final(
        notification_rows(
            recipients[deferred].assign(not_before=later[deferred]), use_case, Status.DEFERRED, as_of=as_of
        )
    )
    get_run_logger().info("quiet hours: %d deferred, %d to send now", int(deferred.sum()), int((~deferred).sum()))
    return recipients[~deferred].reset_index(drop=True)


def _checked(frame: Any, schema: pa.Schema, boundary: str, submit: bool) -> Any:
    """A frame checked before it enters the next task; a future (``submit``) is resolved in that task, unchecked."""
    return frame if submit else conform(frame, schema, boundary)


def _step(step: Task[..., Any], submit: bool, batch: int | None = None) -> Callable[..., Any]:
    """The task called or submitted; a numbered batch names its task runs ``segment-recipients-batch-3`` and so on,
    so the batches of a run can be told apart in its graph."""
    if batch is not None:
        step = step.with_options(task_run_name=f"{step.name}-batch-{batch}")
    return step.submit if submit else step


def notify(
    notices: pd.DataFrame | Path,
    use_case: str,
    category: str,
    push: PushConnections,
    as_of: datetime,
    *,
    extra_keys: Sequence[str] = (),
    frequency_cap: FrequencyCap | None = None,
    quiet_hours: QuietHours | None = None,
    priority: str = "normal",
    submit: bool = False,
    batch: int | None = None,
    upstream: Sequence[Any] = (),
) -> dict[str, float] | PrefectFuture[dict[str, float]]:
    """Push a batch of owed notices (a frame, or a spooled Parquet batch): the send's counts, or their future.

    ``extra_keys`` are the use case's manifest keys the frame carries; the content guard keeps their values out
    of every push. ``priority`` is the messages' own unless a ``priority`` column says otherwise per row.
    ``batch`` numbers the task runs; ``upstream`` (task states or futures) is what the batch's first task waits
    for, drawn as edges in the run's graph (a spooled batch is a file path, which Prefect cannot trace).
    """
    if isinstance(notices, Path):
        conform(pq.read_schema(notices).empty_table().to_pandas(), NOTICES, "notify")
    else:
        _checked(notices, NOTICES, "notify", submit)
    owed: Any = notices
    wait_for = list(upstream)
    if frequency_cap is not None:
        owed = _step(apply_frequency_cap, submit, batch)(owed, use_case, as_of, frequency_cap, wait_for=wait_for)
        wait_for = []
    recipients = _step(segment_recipients, submit, batch)(owed, use_case, category, as_of, wait_for=wait_for)
    if quiet_hours is not None:
        recipients = _checked(recipients, RECIPIENTS, "defer-quiet-hours", submit)
        recipients = _step(defer_quiet_hours, submit, batch)(recipients, use_case, as_of, quiet_hours)
    return deliver(
        recipients,
        use_case,
        category,
        push,
        as_of,
        extra_keys=extra_keys,
        priority=priority,
        submit=submit,
        batch=batch,
    )


def deliver(
    recipients: pd.DataFrame,
    use_case: str,
    category: str,
    push: PushConnections,
    as_of: datetime,
    *,
    extra_keys: Sequence[str] = (),
    priority: str = "normal",
    submit: bool = False,
    batch: int | None = None,
) -> dict[str, float] | PrefectFuture[dict[str, float]]:
    """Render and send recipients already decided (each row with its ``key``): the send's counts, or their future."""
    recipients = _checked(recipients, RECIPIENTS, "render-messages", submit)
    render = _step(render_messages, submit, batch)
    messages = render(recipients, use_case, category, as_of, extra_keys=extra_keys, priority=priority)
    messages = _checked(messages, MESSAGES, "send-push", submit)
    return _step(send_push, submit, batch)(messages, use_case, push, as_of)
