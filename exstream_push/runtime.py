"""Per-process handles that tasks share: one ledger engine per database URL."""

from __future__ import annotations

import logging
from functools import lru_cache

from prefect import get_run_logger
from prefect.exceptions import MissingContextError

from exstream_push.ledger import Ledger
from exstream_push.settings import Settings


@lru_cache(maxsize=8)
def _ledger(url: str) -> Ledger:
    return Ledger(url)


def ledger_for(settings: Settings) -> Ledger:
    return _ledger(settings.resolved_database_url)


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run's logger inside a flow or task (its lines show in the UI), the package's outside one."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("exstream_push")
