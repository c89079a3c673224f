"""The Exstream job watcher: jobs that ended since the last poll → events that start the flow each job needs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow

from exstream_push.blocks import ExstreamConnection, exstream_connection
from exstream_push.runtime import typed_name_or
from exstream_push.tasks.watch import emit_unsent_events, record_job_ends, watch_run_name
from exstream_push.zones import run_moment


@flow(name="exstream-watcher", flow_run_name=typed_name_or(watch_run_name), persist_result=False)
def exstream_watcher(as_of: datetime | None = None, exstream_block: ExstreamConnection | None = None) -> dict[str, Any]:
    """Store the new job ends with the watermark first, then hand them to Prefect: a crash loses no job.

    Args:
        as_of: The moment the poll is taken at, with its zone; empty: now.
        exstream_block: A saved Exstream connection; empty: the worker's EXSTREAM_PUSH_EXSTREAM_* settings.
    """
    as_of = run_moment(as_of)
    exstream = exstream_connection(exstream_block)
    counts = record_job_ends(exstream, as_of)
    return {**counts, "emitted": emit_unsent_events()}
