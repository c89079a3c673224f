"""Use case 1 — a statement or bill is ready: Exstream manifest → push → outcome back to Exstream."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.futures import PrefectFuture

from exstream_push.blocks import (
    ApnsConnection,
    ExstreamConnection,
    FcmConnection,
    WebPushConnection,
    connections,
)
from exstream_push.blocks.push import PushConnections
from exstream_push.notify.pipeline import notify
from exstream_push.runtime import typed_name_or
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
from exstream_push.tasks.send import SEND_COUNTS
from exstream_push.tasks.summary import outcome_rows, post_back_line, publish_summary
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


def _run_name(parameters: dict[str, Any]) -> str:
    label = parameters.get("job_id") or Path(parameters.get("manifest") or "manifest").name
    return f"{USE_CASE}-{label}"


def _send_batch(
    batch: Path, number: int, push: PushConnections, as_of: datetime, queued: Any
) -> PrefectFuture[dict[str, float]]:
    """One batch through segment → render → send, submitted so a distributed task runner can place it."""
    return notify(
        batch, USE_CASE, CATEGORY, push, as_of, submit=True, batch=number, upstream=[] if queued is None else [queued]
    )


@flow(name=USE_CASE, flow_run_name=typed_name_or(_run_name), persist_result=False)
def statement_ready(
    manifest: str | None = None,
    job_id: str | None = None,
    as_of: datetime | None = None,
    exstream_block: ExstreamConnection | None = None,
    fcm_block: FcmConnection | None = None,
    apns_block: ApnsConnection | None = None,
    webpush_block: WebPushConnection | None = None,
    batches_in_flight: int | None = None,
) -> dict[str, Any]:
    """Notify every reachable device that its document is ready, then tell Exstream which documents were not.

    Processes started on the same job (and manifest) share the run: one extracts, all take batches, one posts back.
    A finished run started again with the same content, nothing left pending and no device changed since, is up
    to date: it returns the finished run's counts at once, having sent nothing. A job Exstream does not know or
    without a delivery file fails the run, unremembered; a run that leaves documents unsettled (or input unread)
    posts back what it could, then ends Failed.

    Args:
        manifest: Path of an Exstream manifest file (JSON Lines or CSV) on the worker. Give this or job_id.
        job_id: The Exstream job whose delivery file to fetch, or the label of the manifest given. Give this or
            manifest.
        as_of: The moment decisions are taken at, with its zone; empty: now.
        exstream_block: A saved Exstream connection; empty: the worker's EXSTREAM_PUSH_EXSTREAM_* settings.
        fcm_block: A saved FCM connection; empty: the worker's EXSTREAM_PUSH_FCM_* settings.
        apns_block: A saved APNs connection; empty: the worker's APNs settings, if any.
        webpush_block: A saved Web Push connection; empty: the worker's VAPID settings, if any.
        batches_in_flight: Batches this process sends at once; empty: EXSTREAM_PUSH_BATCHES_IN_FLIGHT.
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

    # One shape of result, whether the run sent or found itself up to date.
    totals: Counter[str] = Counter(dict.fromkeys((*SEND_COUNTS, "seconds_recording", "batches"), 0))
    posted: dict[str, Any] | None = None
    started = time.monotonic()
    with shared_run(USE_CASE, job_id, content) as run:
        queued = None
        if run.extracts:
            if manifest is not None:
                sources = [ManifestSource(path=Path(manifest), job_id=job_id, step_id="manifest")]
            else:
                sources = fetch_job_manifests(job_id, exstream, USE_CASE)
            extracted = [extract_manifest(source, USE_CASE) for source in sources]
            queued = enqueue_batches(run, extracted, return_state=True)
            queued.result()
        in_flight = batches_in_flight or get_settings().batches_in_flight
        sends = []
        for sent in drain_batches(
            run, lambda batch, number: _send_batch(batch, number, push, as_of, queued), in_flight
        ):
            totals.update(sent.result())
            totals.update(batches=1)
            sends.append(sent)
        if claim_post_back(run):
            posted = post_outcomes(USE_CASE, job_id, exstream, wait_for=sends)
            shutil.rmtree(get_settings().spool_dir(USE_CASE, job_id), ignore_errors=True)
            finish_run(run)
        totals.update(run_totals(run))
    totals["unsettled"] = unsettled_documents(USE_CASE, job_id)
    publish_summary(
        USE_CASE,
        f"{USE_CASE} · Exstream job {job_id}" + (" · up to date, nothing sent" if run.up_to_date else ""),
        totals,
        seconds=time.monotonic() - started,
        tables={"Outcomes by status and reason": outcome_rows(USE_CASE, job_id)},
        lines=[post_back_line("Post-back", posted)],
    )
    result = {"job_id": job_id, **totals, "post_back": posted, "up_to_date": run.up_to_date}
    ensure_complete(USE_CASE, job_id, result)
    return result
