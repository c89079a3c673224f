"""The project's own errors: what the CLI shows as one line and a flow run's state message says.

Every message names what failed and what to check, and never carries customer data (ids, names, amounts), since
it reaches logs, Prefect states and the terminal.
"""

from __future__ import annotations


class ExstreamPushError(Exception):
    """An error a user can act on; ``exit_code`` is what the CLI exits with when it ends a command."""

    exit_code = 1


class RunIncomplete(ExstreamPushError):
    """The run did what it could, but not its whole job (unreadable input, documents left unsettled, ...)."""
