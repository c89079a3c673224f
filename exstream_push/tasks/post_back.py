"""Post back: one driver file per run to an Exstream batch-input channel, so Exstream can fall back for the rest."""

from __future__ import annotations

import csv
import hashlib
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.exstream import ExstreamConnection
from exstream_push.retrying import retry_if_it_can_succeed
from exstream_push.runtime import ledger_for, run_logger
from exstream_push.settings import get_settings
from exstream_push.status import PushStatus, Status

PUSH_STATUS_HEADER = ["document_id", "customer_id", "push_status", "reason", "devices_notified", "updated_at"]

# When a document reached no device, the reason Exstream sees is the most telling of its notifications' reasons.
_REASON_PRIORITY = {Status.PENDING: 0, Status.FAILED: 1, Status.QUARANTINED: 2, Status.SKIPPED: 3}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def push_status_rows(use_case: str, job_id: str) -> Iterator[list[Any]]:
    """One row per document of the job, folded from its notifications; rejected input records follow."""
    ledger = ledger_for(get_settings())
    current: str | None = None
    customer, sent, best, latest = "", 0, None, None
    for document_id, customer_id, status, reason, updated_at in ledger.document_outcomes(use_case, job_id):
        if document_id != current:
            if current is not None:
                yield _document_row(current, customer, sent, best, latest)
            current, customer, sent, best, latest = document_id, customer_id, 0, None, updated_at
        latest = max(latest, updated_at)
        if status == Status.SENT:
            sent += 1
        elif best is None or _REASON_PRIORITY[status] < _REASON_PRIORITY[best[0]]:
            best = (status, reason)
    if current is not None:
        yield _document_row(current, customer, sent, best, latest)
    for document_id, customer_id, status, reason, created_at, _position in ledger.rejected_for_job(use_case, job_id):
        if status == Status.QUARANTINED:
            yield [document_id or "", customer_id or "", PushStatus.NOT_NOTIFIED, reason, 0, _iso(created_at)]


def _document_row(
    document_id: str, customer_id: str, sent: int, best: tuple[str, str | None] | None, latest: datetime
) -> list[Any]:
    if sent:
        return [document_id, customer_id, PushStatus.NOTIFIED, "", sent, _iso(latest)]
    reason = (best[1] or best[0]) if best else Status.PENDING.value
    return [document_id, customer_id, PushStatus.NOT_NOTIFIED, reason, 0, _iso(latest)]


def post_driver_file(
    exstream: ExstreamConnection, channel: str, job_id: str, header: Sequence[str], rows: Iterable[Sequence[Any]]
) -> dict[str, Any]:
    """Write a CSV driver file to disk (it can be millions of rows), then post it to a batch-input channel once.

    The digest covers every column but the last (a timestamp), so the same content for the same job and channel
    is never posted twice, whoever asks. Returns ``rows`` and ``posted``.
    """
    settings = get_settings()
    ledger = ledger_for(settings)
    settings.home.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    count = 0
    with tempfile.NamedTemporaryFile(
        "w", newline="", suffix=".csv", dir=settings.home, delete=False, encoding="utf-8"
    ) as handle:
        path = Path(handle.name)
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow(row)
            digest.update(repr([str(value) for value in row[:-1]]).encode())
            count += 1
    try:
        logger = run_logger()
        fingerprint = digest.hexdigest()
        if count == 0:
            logger.info("job %s: nothing to post to %s", job_id, channel)
            return {"channel": channel, "rows": 0, "posted": False}
        if ledger.already_posted(channel, job_id, fingerprint):
            logger.info("job %s: the same file was already posted to %s; not posting again", job_id, channel)
            return {"channel": channel, "rows": count, "posted": False}
        with exstream.get_client() as client:
            response = client.post_batch_input(channel, path, content_type="text/csv")
        ledger.record_post_back(channel, job_id, fingerprint, count, repr(response)[:2000])
        logger.info("job %s: %d rows posted to Exstream channel %s", job_id, count, channel)
        return {"channel": channel, "rows": count, "posted": True}
    finally:
        path.unlink(missing_ok=True)


@task(
    name="post-outcomes-to-exstream",
    retries=3,
    retry_delay_seconds=10,
    retry_condition_fn=retry_if_it_can_succeed,
    cache_policy=NO_CACHE,
)
def post_outcomes(use_case: str, job_id: str, exstream: ExstreamConnection) -> dict[str, Any]:
    """One row per document, so Exstream can fall back to e-mail or print for those push did not reach."""
    notified = 0

    def counted() -> Iterator[list[Any]]:
        nonlocal notified
        for row in push_status_rows(use_case, job_id):
            notified += row[2] == PushStatus.NOTIFIED
            yield row

    summary = post_driver_file(exstream, exstream.status_channel, job_id, PUSH_STATUS_HEADER, counted())
    return {**summary, "notified": notified, "not_notified": summary["rows"] - notified}
