"""Per-process handles that tasks share (one ledger engine per database URL), and the check that what a flow
run needs answers before it starts."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import httpx
from prefect import get_run_logger
from prefect.exceptions import MissingContextError
from prefect.runtime import flow_run

from exstream_push.errors import DependencyUnavailable
from exstream_push.ledger import Ledger
from exstream_push.prefect_events import configured_api_url
from exstream_push.settings import Settings


@lru_cache(maxsize=8)
def _ledger(url: str) -> Ledger:
    return Ledger(url)


def ledger_for(settings: Settings) -> Ledger:
    return _ledger(settings.resolved_database_url)


# Prefect names a run it was given no name for with two random lowercase words joined by a dash (coolname).
_GENERATED_RUN_NAME = re.compile(r"[a-z]+-[a-z]+")


def typed_name_or(name_for: Callable[[dict[str, Any]], str]) -> Callable[[], str]:
    """A ``flow_run_name`` that names a run from its parameters, unless someone typed a name for it.

    Prefect renames every run of a flow that has a ``flow_run_name``, a name typed in the run form included; a
    name it generated itself is two lowercase words, so any other name was given by a person and is kept (type
    one with a digit or a third word to be sure)."""

    def run_name() -> str:
        current = flow_run.name
        if current and not _GENERATED_RUN_NAME.fullmatch(current):
            return current
        return name_for(flow_run.parameters)

    return run_name


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run's logger inside a flow or task (its lines show in the UI), the package's outside one."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("exstream_push")


def check_dependencies(settings: Settings) -> None:
    """Open the ledger and reach a configured Prefect API, or raise ``DependencyUnavailable``: found here, an
    outage is one line before any server starts, not a failed run and its tracebacks. Without a configured API,
    the local shared server is found or started (it answered its health check then), unless the setting asks for
    Prefect's temporary server per command."""
    ledger_for(settings)
    api_url = configured_api_url()
    if api_url is None:
        if settings.prefect_server == "shared":
            from exstream_push.prefect_server import use_server

            use_server(settings.home)
        return
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        failure = client.api_healthcheck()
    if failure is not None:
        reason = str(failure).strip().splitlines()[0] if str(failure).strip() else type(failure).__name__
        raise DependencyUnavailable(
            "the Prefect API",
            str(httpx.URL(api_url).copy_with(username=None, password=None)),
            "check that the Prefect server is running there (exstream-push up starts one), "
            "or unset PREFECT_API_URL to run on an embedded server",
            reason,
        )
