"""Run summaries: the markdown artifact an operator reads first, one per flow run, under one key per use case.

Published from the flow itself (not from a task), so it hangs off the flow run, and under a key that does not
change from run to run, so Prefect's artifact page keeps every run's summary as the history of that use case.
It also publishes the evidence log's head as the run left it, the value ``audit verify`` can later be held to.
It carries counts, codes and Exstream channel names only: never a customer's data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from prefect.artifacts import create_markdown_artifact

from exstream_push.ledger.evidence import SHARDS
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push.status import Status
from exstream_push.tasks.send import SEND_COUNTS

_NOT_COUNTS = frozenset({"seconds_recording"})


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")[:200]


def summary_key(use_case: str) -> str:
    """The one key every run of a use case publishes its summary under."""
    return artifact_key(use_case, "summary")


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows as a markdown table, columns in the first row's order; numbers with thousands separators."""
    if not rows:
        return "_none_"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(column, "")) for column in columns) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return str(value).replace("|", "\\|")


def outcome_rows(use_case: str, job_id: str) -> list[dict[str, Any]]:
    """The job's notifications and rejected records by status and reason (a failure's reason is its code)."""
    counts = ledger_for(get_settings()).job_reason_counts(use_case, job_id)
    return [
        {"status": status, "reason or code": reason or "", "count": count}
        for (status, reason), count in sorted(counts.items(), key=lambda item: (item[0][0], item[0][1] or ""))
    ]


def post_back_line(name: str, post: Mapping[str, Any] | None) -> str:
    """What went to Exstream: rows and channel, and whether they were posted or had been already."""
    if not post or not post.get("rows"):
        return f"- **{name}**: nothing to post"
    posted = "posted" if post.get("posted") else "not posted (nothing new since the same file was posted)"
    jobs = post.get("exstream_jobs") or []
    started = f" (Exstream job {', '.join(f'`{job}`' for job in jobs)})" if jobs else ""
    return (
        f"- **{name}**: {post.get('rows', 0):,} row(s) to Exstream channel `{post.get('channel', '?')}`, {posted}"
        f"{started}"
    )


def publish_summary(
    use_case: str,
    title: str,
    totals: Mapping[str, Any],
    *,
    seconds: float | None = None,
    tables: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    lines: Sequence[str] = (),
) -> str:
    """Publish the run's summary on the current flow run and return its markdown.

    ``totals`` are the run's counts (non-numbers are left out), ``seconds`` how long the sending took (for the
    rate), ``tables`` titled detail tables, ``lines`` extra bullet lines (post-backs, where to look next)."""
    counts = {
        name: value
        for name, value in totals.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and name not in _NOT_COUNTS
    }
    headline = [f"**{int(counts[name]):,} {name.replace('_', ' ')}**" for name in SEND_COUNTS if counts.get(name)]
    sent = int(counts.get(Status.SENT.value, 0))
    if seconds and sent:
        headline.append(f"{sent / seconds:,.0f} sent/s over {seconds:,.1f} s")
    parts = [f"### {title}", " · ".join(headline) or "_nothing sent_"]
    if lines:
        parts.append("\n".join(lines))
    for heading, rows in (tables or {}).items():
        parts.append(f"#### {heading}\n\n{markdown_table(rows)}")
    others = [
        {"count of": name, "count": int(value)} for name, value in sorted(counts.items()) if name not in SEND_COUNTS
    ]
    if others:
        parts.append(f"#### Counts\n\n{markdown_table(others)}")
    head = ledger_for(get_settings()).evidence_head()
    parts.append(
        "#### Evidence\n\n"
        f"Evidence head after this run: `{head}` (SHA-256 over the newest record of each of the evidence log's "
        f"{SHARDS} chains: published here, outside the ledger, so a later rewrite of the chains cannot match it). "
        f"`exstream-push audit verify` checks the chains; "
        f"`exstream-push audit export --use-case {use_case} --format csv --out {use_case}.csv` "
        "writes one row per document; `exstream-push audit trail DOCUMENT_ID` shows one document's history."
    )
    markdown = "\n\n".join(parts)
    create_markdown_artifact(markdown=markdown, key=summary_key(use_case), description=title)
    return markdown
