"""The operator's commands on delivery exceptions (``exstream-push exceptions list|reissue``)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from exstream_push.ledger import Ledger
from exstream_push.settings import get_settings
from exstream_push.tasks.post_back import post_driver_file
from exstream_push.usecases.delivery_exceptions.config import load_config
from exstream_push.usecases.delivery_exceptions.rules import REISSUE_HEADER, dedup_key, reissue_rows

if TYPE_CHECKING:
    from exstream_push.blocks.exstream import ExstreamConnection

log = logging.getLogger(__name__)

REPROCESSING = "reprocessing"  # the PostBack "channel" that records a reprocessing request, so it is made once


def list_exceptions(ledger: Ledger, job_id: str | None = None) -> list[dict[str, Any]]:
    """Every exception record, grouped as operations are alerted: by job, channel and failure class."""
    return ledger.exceptions.listing(job_id)


def request_reissue(
    ledger: Ledger, exstream: ExstreamConnection, job_id: str, *, as_of: datetime | None = None
) -> dict[str, Any]:
    """Ask Exstream to reissue a job's open exceptions and mark them ``reissue_requested``.

    A job whose failed documents are known gets exactly those posted to the reissue channel, since reprocessing it
    would send again to every customer it did reach; a job known only to have failed as a whole is reprocessed
    through the API. Either request is made once for the same content, so a repeated command asks nothing twice.
    """
    settings = get_settings()
    config = load_config(settings)
    as_of = as_of or datetime.now(UTC)
    records = ledger.exceptions.open_for_job(job_id)
    result: dict[str, Any] = {"job_id": job_id, "action": "none", "documents": 0, "requested": False, "marked": 0}
    if not records:
        return result
    documents = [record for record in records if record["document_id"]]
    if documents:
        rows = reissue_rows(documents, job_id, config, as_of)
        requested = post_driver_file(exstream, get_settings().channels.reissue, job_id, REISSUE_HEADER, rows)["posted"]
        result.update(action="reissue_documents", channel=get_settings().channels.reissue, documents=len(documents))
    else:
        fingerprint = dedup_key(REPROCESSING, job_id, *sorted(record["dedup_key"] for record in records))
        requested = not ledger.already_posted(REPROCESSING, job_id, fingerprint)
        if requested:
            with exstream.get_client() as client:
                answer = client.reprocess_job(job_id)
            ledger.record_post_back(REPROCESSING, job_id, fingerprint, len(records), repr(answer)[:2000])
        result.update(action="reprocess_job")
    marked = ledger.exceptions.mark_reissue_requested([record["dedup_key"] for record in records])
    result.update(requested=requested, marked=marked)
    log.info("job %s: %s; %d record(s) now reissue_requested", job_id, result["action"], result["marked"])
    return result
