"""Summary: the run's counts as a Prefect table artifact, the figure an operator looks at first."""

from __future__ import annotations

import re
from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")[:200]


@task(name="publish-run-summary", cache_policy=NO_CACHE)
def publish_run_summary(use_case: str, job_id: str, extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    counts = ledger_for(get_settings()).job_reason_counts(use_case, job_id)
    table = [
        {"status": status, "reason": reason or "", "count": count}
        for (status, reason), count in sorted(counts.items(), key=lambda item: (item[0][0], item[0][1] or ""))
    ]
    description = f"{use_case} outcomes for Exstream job {job_id}"
    if extra:
        description += "  \n" + ", ".join(f"{name}: {value}" for name, value in extra.items())
    create_table_artifact(key=artifact_key(use_case, job_id), table=table, description=description)
    return table
