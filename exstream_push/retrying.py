"""Whether a failed task run is worth another attempt: the one retry condition of every task that has retries.

Retrying a 404 for a delivery file, refused OTDS credentials or a manifest we cannot read only delays the failure
and hides it behind attempts; a 503, a 429, a timeout or a reset connection may well succeed next time.
"""

from __future__ import annotations

from typing import Any

from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from exstream_push.connectors.push_errors import classify_exception
from exstream_push.errors import ExstreamPushError


def can_succeed_again(exc: BaseException) -> bool:
    """False for what cannot go away by itself: an error the classification table calls permanent or an
    operator's problem, or one of ours that asks a user to act; True for transient errors (the table's, or one of
    ours that says so: a locked or lost ledger database, an unreachable dependency) and for errors nobody knows."""
    known = classify_exception(exc)
    if known is not None:
        return known.retryable
    if isinstance(exc, ExstreamPushError):
        return exc.retryable
    return True


def retry_if_it_can_succeed(task: Any, task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect's ``retry_condition_fn``: retry the failed attempt only when its error can succeed next time."""
    try:
        state.result()
    except Exception as exc:
        return can_succeed_again(exc)
    return True
