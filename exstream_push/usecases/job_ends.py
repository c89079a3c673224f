"""Failed Exstream jobs for delivery-exceptions, from the one job-end cursor: the watcher records every job that
ended in error with its ``exstream.job.failed`` event; a run started for a job takes that job, a polling run takes
the recorded ends not handled yet. Either marks the job handled once its failures are in the ledger, so the other
does not take it again."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from exstream_push.blocks.exstream import ExstreamConnection
from exstream_push.connectors.exstream import ExstreamJob
from exstream_push.retrying import retry_if_it_can_succeed
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings


def jobs_to_check(ends: Iterable[tuple[str, datetime]]) -> list[str]:
    """Each job once, in the order of its first unhandled end (ends come oldest first): a job that failed again
    after a reprocessing is checked once for both."""
    return list(dict.fromkeys(job_id for job_id, _ in ends))


@task(
    name="find-failed-jobs",
    retries=3,
    retry_delay_seconds=5,
    retry_condition_fn=retry_if_it_can_succeed,
    cache_policy=NO_CACHE,
)
def failed_jobs(exstream: ExstreamConnection, as_of: datetime, job_id: str | None = None) -> list[ExstreamJob]:
    """The job asked for, or every job the watcher recorded as ended in error by ``as_of`` and not handled yet,
    oldest first, as Exstream describes it now."""
    if job_id is not None:
        job_ids = [job_id]
    else:
        job_ids = jobs_to_check(ledger_for(get_settings()).outbox.unprocessed_failed_jobs(as_of))
        get_run_logger().info("%d failed job(s) recorded by the watcher to check", len(job_ids))
    with exstream.get_client() as client:
        return [client.get_job(one) for one in job_ids]


@task(name="mark-job-handled", retries=2, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def mark_job_handled(job: ExstreamJob, as_of: datetime) -> int:
    """Called once the job's failures are in the ledger, so a restart takes it again and a later poll does not."""
    return ledger_for(get_settings()).outbox.mark_failed_job_processed(job.id, as_of)
