"""Whether a finished run did its whole job: the one rule, read from the run's totals, that every flow applies.

A run that could not do its whole job still posts back and publishes what it could; then this rule ends it Failed
with a message naming the job and the counts of what is missing (counts only, never customer data), and the CLI
exits non-zero. A run that read its input and found no customer completes, with a warning: it is suspicious,
not wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from exstream_push.errors import RunIncomplete
from exstream_push.runtime import run_logger

INCOMPLETE_WHEN = {
    "unreadable": "manifest record(s) declared but unreadable",
    "unsettled": "document(s) with notifications still pending after retries (not reported to Exstream yet)",
}
"""Totals that, above zero, make a run incomplete, and how the failure message names them."""


def incomplete_counts(totals: Mapping[str, Any]) -> dict[str, int]:
    """The counts of what a run left undone, by total name; empty when it did its whole job."""
    return {name: int(totals[name]) for name in INCOMPLETE_WHEN if int(totals.get(name) or 0) > 0}


def ensure_complete(use_case: str, job_id: str | None, totals: Mapping[str, Any]) -> None:
    """Raise ``RunIncomplete`` (carrying the totals) when the run left part of its job undone; warn when it read
    its input (a ``customers`` total) and found nobody in it."""
    label = f"job {job_id}" if job_id else "the ledger"
    if "customers" in totals and not totals["customers"]:
        run_logger().warning("%s run of %s: the delivery file(s) hold no customer; nothing to notify", use_case, label)
    missing = incomplete_counts(totals)
    if missing:
        parts = ", ".join(f"{count} {INCOMPLETE_WHEN[name]}" for name, count in missing.items())
        raise RunIncomplete(f"{use_case} run of {label} is incomplete: {parts}", totals)
