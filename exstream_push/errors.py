"""The project's own errors: what the CLI shows as one line and a flow run's state message says.

Every message names what failed and what to check, and never carries customer data (ids, names, amounts), since
it reaches logs, Prefect states and the terminal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ExstreamPushError(Exception):
    """An error a user can act on; ``exit_code`` is what the CLI exits with when it ends a command, ``retryable``
    whether the same attempt may succeed later by itself (what a task's retries are for)."""

    exit_code = 1
    retryable = False


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


class DependencyUnavailable(ExstreamPushError):
    """A service the command needs did not answer: which one, its address (never a password) and what to check.

    ``exit_code`` 69 is sysexits' EX_UNAVAILABLE, so a scheduler can tell "try again later" from bad input.
    """

    exit_code = 69
    retryable = True

    def __init__(self, name: str, address: str, hint: str, reason: str = "") -> None:
        self.name, self.address, self.hint, self.reason = name, address, hint, reason
        because = f" ({reason})" if reason else ""
        super().__init__(f"{name} is unreachable at {address}{because}: {hint}")

    def __reduce__(self) -> tuple[type[DependencyUnavailable], tuple[str, str, str, str]]:
        return type(self), (self.name, self.address, self.hint, self.reason)
