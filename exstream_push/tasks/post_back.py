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

from exstream_push.blocks.exstream import ExstreamConnection
from exstream_push.csvfiles import CsvWriter
from exstream_push.retrying import retry_if_it_can_succeed
from exstream_push.runtime import ledger_for, run_logger
from exstream_push.settings import get_settings
from exstream_push.status import UNSETTLED, PushStatus, Status

PUSH_STATUS_HEADER = [
    "document_id",
    "customer_id",
    "push_status",
    "reason",
    "devices_notified",
    "correction",
    "updated_at",
]

# When a document reached no device, the reason Exstream sees is the most telling of its notifications' reasons.
_REASON_PRIORITY = {Status.FAILED: 1, Status.QUARANTINED: 2, Status.SKIPPED: 3}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def push_status_rows(use_case: str, job_id: str) -> Iterator[list[Any]]:
    """One row per settled document of the job, folded from its notifications; quarantined records follow.

    A document that reached no device and still has a notification a later run may send is left out: telling
    Exstream ``not_notified`` now could make it print a letter for a customer the push then reaches. Rows are
    ``document_id, customer_id, push_status, reason, devices_notified, updated_at``.
    """
    ledger = ledger_for(get_settings())
    current: str | None = None
    customer, sent, unsettled, best, latest = "", 0, False, None, None
    for document_id, customer_id, status, reason, updated_at in ledger.document_outcomes(use_case, job_id):
        if document_id != current:
            if current is not None and (sent or not unsettled):
                yield _document_row(current, customer, sent, best, latest)
            current, customer, sent, unsettled, best, latest = document_id, customer_id, 0, False, None, updated_at
        latest = max(latest, updated_at)
        if status == Status.SENT:
            sent += 1
        elif status in UNSETTLED:
            unsettled = True
        elif best is None or _REASON_PRIORITY[status] < _REASON_PRIORITY[best[0]]:
            best = (status, reason)
    if current is not None and (sent or not unsettled):
        yield _document_row(current, customer, sent, best, latest)
    yield from _quarantine_rows(ledger.rejected_for_job(use_case, job_id), job_id)


def _quarantine_rows(rejected: Iterable[Sequence[Any]], job_id: str) -> Iterator[list[Any]]:
    """Quarantined records, one row per document id: a record without an id, or whose id is a document's (that
    document has its own row) or an earlier quarantined record's, is reported under its stable positional id
    ``{job}/{step}/{position}``, so Exstream sees it, for its customer, without a second, contradicting row."""
    used: set[str] = set()  # quarantined records are few; their ids are held, not the job's documents
    for document_id, customer_id, status, reason, created_at, position, source, is_document in rejected:
        if status != Status.QUARANTINED:
            continue
        row_id = document_id
        if not row_id or is_document or row_id in used:
            row_id = f"{job_id}/{source}/{position}"
        used.add(row_id)
        yield [row_id, customer_id or "", PushStatus.NOT_NOTIFIED, reason, 0, _iso(created_at)]


def _document_row(
    document_id: str, customer_id: str, sent: int, best: tuple[str, str | None] | None, latest: datetime
) -> list[Any]:
    if sent:
        return [document_id, customer_id, PushStatus.NOTIFIED, "", sent, _iso(latest)]
    reason = (best[1] or best[0]) if best else ""
    return [document_id, customer_id, PushStatus.NOT_NOTIFIED, reason, 0, _iso(latest)]


def unsettled_documents(use_case: str, job_id: str) -> int:
    """Documents of the job a later run may still notify: the run that leaves them so did not do its whole job."""
    return ledger_for(get_settings()).unsettled_documents(use_case, job_id)


def changes_to_report(
    rows: Iterable[list[Any]], channel: str, use_case: str, job_id: str, chunk: int = 2_000
) -> Iterator[list[Any]]:
    """Only what the channel has not been told: a document new to it, or one whose status or reason changed since,
    as a correction (a re-run must not make Exstream fall back twice). Adds the ``correction`` column."""
    ledger = ledger_for(get_settings())

    def flush(pending: list[list[Any]]) -> Iterator[list[Any]]:
        told = ledger.reported_outcomes(channel, use_case, job_id, [row[0] for row in pending])
        for row in pending:
            before = told.get(row[0])
            if before != (str(row[2]), str(row[3])):
                yield [*row[:-1], "true" if before is not None else "false", row[-1]]

    pending: list[list[Any]] = []
    for row in rows:
        pending.append(row)
        if len(pending) >= chunk:
            yield from flush(pending)
            pending = []
    if pending:
        yield from flush(pending)


def post_driver_file(
    exstream: ExstreamConnection, channel: str, job_id: str, header: Sequence[str], rows: Iterable[Sequence[Any]]
) -> dict[str, Any]:
    """Write a CSV driver file to disk (it can be millions of rows), then post it to a batch-input channel once.

    The digest covers every column but the last (a timestamp), so the same content for the same job and channel
    is never posted twice, whoever asks. Returns ``channel``, ``rows`` and ``posted``, and for a post the jobs
    Exstream started on the file (``exstream_jobs``), the link from a run's summary to what Exstream did with it.
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
        writer = CsvWriter(handle)
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
        started = [str(each["jobId"]) for each in response if isinstance(each, dict) and each.get("jobId")]
        return {"channel": channel, "rows": count, "posted": True, "exstream_jobs": started}
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
    """One row per settled document Exstream has not been told about, so it can fall back for those push did not
    reach; what it was told is remembered once the post succeeded, so a later change goes as a correction."""
    settings = get_settings()
    channel = exstream.status_channel
    notified = corrections = 0
    settings.home.mkdir(parents=True, exist_ok=True)
    # What the file tells, kept beside it (unescaped), to be remembered only once Exstream has taken the file.
    with tempfile.TemporaryFile("w+", newline="", dir=settings.home, encoding="utf-8") as told:
        told_writer = csv.writer(told, lineterminator="\n")

        def counted() -> Iterator[list[Any]]:
            nonlocal notified, corrections
            for row in changes_to_report(push_status_rows(use_case, job_id), channel, use_case, job_id):
                notified += row[2] == PushStatus.NOTIFIED
                corrections += row[5] == "true"
                told_writer.writerow([row[0], row[2], row[3]])
                yield row

        summary = post_driver_file(exstream, channel, job_id, PUSH_STATUS_HEADER, counted())
        if summary["rows"]:  # posted now, or this very file was posted before
            told.seek(0)
            _remember_told(csv.reader(told), channel, use_case, job_id)
    return {**summary, "notified": notified, "not_notified": summary["rows"] - notified, "corrections": corrections}


def _remember_told(rows: Iterable[Sequence[str]], channel: str, use_case: str, job_id: str, chunk: int = 2_000) -> None:
    ledger = ledger_for(get_settings())
    now = datetime.now(UTC)
    batch: list[dict[str, Any]] = []
    for document_id, push_status, reason in rows:
        batch.append(
            {
                "channel": channel,
                "use_case": use_case,
                "document_id": document_id,
                "job_id": job_id,
                "push_status": push_status,
                "reason": reason,
                "reported_at": now,
            }
        )
        if len(batch) >= chunk:
            ledger.record_reported(batch)
            batch = []
    ledger.record_reported(batch)
