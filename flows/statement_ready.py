"""Use case 1 — a statement or bill is ready: Exstream manifest → push → outcome back to Exstream."""

from __future__ import annotations

import shutil
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run

from exstream_push.blocks import connections
from exstream_push.blocks.push import PushConnections
from exstream_push.notify.pipeline import notify
from exstream_push.settings import get_settings
from exstream_push.status import Category, UseCase
from exstream_push.tasks.completeness import ensure_complete
from exstream_push.tasks.extract import (
    ManifestSource,
    extract_manifest,
    fetch_job_manifests,
    file_digest,
    job_id_for_digest,
)
from exstream_push.tasks.post_back import post_outcomes, unsettled_documents
from exstream_push.tasks.summary import publish_run_summary
from exstream_push.tasks.work_queue import (
    claim_post_back,
    drain_batches,
    enqueue_batches,
    finish_run,
    run_totals,
    shared_run,
)
from exstream_push.zones import run_moment

USE_CASE = UseCase.STATEMENT_READY.value
CATEGORY = Category.STATEMENTS.value


def _run_name() -> str:
    parameters = flow_run.parameters
    label = parameters.get("job_id") or Path(parameters.get("manifest") or "manifest").name
    return f"{USE_CASE}-{label}"


def _send_batch(batch: Path, push: PushConnections, as_of: datetime) -> PrefectFuture[dict[str, float]]:
    """One batch through segment → render → send, submitted so a distributed task runner can place it."""
    return notify(batch, USE_CASE, CATEGORY, push, as_of, submit=True)


@flow(name=USE_CASE, flow_run_name=_run_name, persist_result=False)
def statement_ready(
    manifest: str | None = None,
    job_id: str | None = None,
    as_of: datetime | None = None,
    exstream_block: str | None = None,
    fcm_block: str | None = None,
    apns_block: str | None = None,
    webpush_block: str | None = None,
    batches_in_flight: int | None = None,
) -> dict[str, Any]:
    """Notify every reachable device that its document is ready, then tell Exstream which documents were not.

    Processes started on the same job (and manifest) share the run: one extracts, all take batches, one posts back.
    A finished run started again with the same content, nothing left pending and no device changed since, is up
    to date: it returns the finished run's counts at once, having sent nothing. A job Exstream does not know or
    without a delivery file fails the run, unremembered; a run that leaves documents unsettled (or input unread)
    posts back what it could, then ends Failed.
    """
    if manifest is None and job_id is None:
        raise ValueError(
            "statement-ready needs one of its parameters `manifest` (a manifest file) or `job_id` "
            "(an Exstream job id); neither was given"
        )
    as_of = run_moment(as_of)
    exstream, push = connections(exstream_block, fcm_block, apns_block, webpush_block)
    # What the run is made of: a file's content, or an Exstream job's id (its output does not change once done).
    content = job_id
    if manifest is not None:
        content = file_digest(Path(manifest))
        job_id = job_id or job_id_for_digest(content)

    totals: Counter[str] = Counter()
    posted: dict[str, Any] | None = None
    with shared_run(USE_CASE, job_id, content) as run:
        if run.extracts:
            if manifest is not None:
                sources = [ManifestSource(path=Path(manifest), job_id=job_id, step_id="manifest")]
            else:
                sources = fetch_job_manifests(job_id, exstream, USE_CASE)
            enqueue_batches(run, [extract_manifest(source, USE_CASE) for source in sources])
        in_flight = batches_in_flight or get_settings().batches_in_flight
        for counts in drain_batches(run, lambda batch: _send_batch(batch, push, as_of), in_flight):
            totals.update(counts)
            totals.update(batches=1)
        if claim_post_back(run):
            posted = post_outcomes(USE_CASE, job_id, exstream)
            shutil.rmtree(get_settings().spool_dir(USE_CASE, job_id), ignore_errors=True)
            finish_run(run)
        totals.update(run_totals(run))
    totals["unsettled"] = unsettled_documents(USE_CASE, job_id)
    publish_run_summary(USE_CASE, job_id, dict(totals))
    result = {"job_id": job_id, **totals, "post_back": posted, "up_to_date": run.up_to_date}
    ensure_complete(USE_CASE, job_id, result)
    return result
