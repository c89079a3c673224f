"""The project's own errors: what the CLI shows as one line and a flow run's state message says.

Every message names what failed and what to check, and never carries customer data (ids, names, amounts), since
it reaches logs, Prefect states and the terminal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ExstreamPushError(Exception):
    """An error a user can act on; ``exit_code`` is what the CLI exits with when it ends a command."""

    exit_code = 1


class RunIncomplete(ExstreamPushError):
    """The run did what it could, but not its whole job (unreadable input, documents left unsettled, ...).

    ``counts`` are the run's totals, what the CLI prints before it exits non-zero.
    """

    def __init__(self, message: str, counts: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.counts = dict(counts or {})

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (str(self), self.counts)


class JobOutputUnavailable(ExstreamPushError):
    """An Exstream job that does not exist, or has no delivery file to fetch: there is nothing to run on yet."""
