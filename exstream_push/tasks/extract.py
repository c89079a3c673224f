"""Extract: an Exstream run's delivery manifests → validated Parquet batches, bad records quarantined."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from exstream_push.blocks.exstream import ExstreamConnection
from exstream_push.connectors.exstream import ExstreamError
from exstream_push.content.links import document_ref
from exstream_push.errors import JobOutputUnavailable
from exstream_push.ledger.store import utcnow
from exstream_push.manifest import ID_COLUMNS, MAX_ID_LENGTH, DeliveryManifest
from exstream_push.retrying import retry_if_it_can_succeed
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push.status import QuarantineReason, SkipReason, Status

MANIFEST_FILE_NAME = "_STDDELIVERYFILE.xml"


@dataclass(frozen=True)
class ManifestSource:
    """One delivery manifest and the Exstream job and flow step it came from."""

    path: Path
    job_id: str
    step_id: str


@dataclass
class ExtractedManifest:
    source: ManifestSource
    batches: list[Path] = field(default_factory=list)
    customers: int = 0
    documents: int = 0
    quarantined: int = 0
    duplicates: int = 0
    customers_declared: int | None = None
    unreadable: int = 0  # declared records not read, and records read but undecodable: the run is incomplete

    def counts(self) -> dict[str, int]:
        """What extraction adds to a run's totals, the same for every flow (``unreadable`` makes a run incomplete)."""
        return {
            "customers": self.customers,
            "quarantined": self.quarantined,
            "duplicates": self.duplicates,
            "unreadable": self.unreadable,
        }


def file_digest(path: Path) -> str:
    """SHA-256 of a manifest's content: what a finished run remembers, so the same file again is recognised."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def job_id_for_digest(digest: str) -> str:
    """A manifest given as a file gets a job id from its content, so re-running the same file is recognised."""
    return f"file-{digest[:16]}"


def job_id_for_file(path: Path) -> str:
    return job_id_for_digest(file_digest(path))


@task(
    name="fetch-job-manifests",
    retries=3,
    retry_delay_seconds=5,
    retry_condition_fn=retry_if_it_can_succeed,
    cache_policy=NO_CACHE,
)
def fetch_job_manifests(job_id: str, exstream: ExstreamConnection, use_case: str) -> list[ManifestSource]:
    """Download each docgen flow step's delivery file of an Exstream job (the API documents no webhook).

    A job Exstream does not know, or one with no delivery file to fetch, raises ``JobOutputUnavailable``: the run
    fails and is not remembered as done, so running it again once the file is there processes it.
    """
    settings = get_settings()
    target = settings.spool_dir(use_case, job_id) / "manifests"
    target.mkdir(parents=True, exist_ok=True)
    sources = []
    with exstream.get_client() as client:
        try:
            job = client.get_job(job_id)
        except ExstreamError as error:
            if error.status_code == 404:
                raise JobOutputUnavailable(f"Exstream job {job_id} not found in domain {client.domain}") from None
            raise
        for step in client.flow_steps(job_id):
            if not step.delivery_file_retrievable:
                continue
            try:
                path = client.download_delivery_file(step.id, target / f"{step.id}{MANIFEST_FILE_NAME}")
            except ExstreamError as error:
                if error.status_code == 404:
                    raise JobOutputUnavailable(
                        f"Exstream job {job_id}: the delivery file of flow step {step.id} is gone ({error.message})"
                    ) from None
                raise
            sources.append(ManifestSource(path=path, job_id=job_id, step_id=step.id))
    if not sources:
        raise JobOutputUnavailable(f"Exstream job {job_id} (status {job.status}) has no delivery file to fetch")
    get_run_logger().info("job %s: %d delivery file(s) fetched", job_id, len(sources))
    return sources


def rejected_rows(
    frame: pd.DataFrame,
    use_case: str,
    source: ManifestSource,
    statuses: str | Sequence[str],
    reasons: Sequence[str],
) -> list[dict]:
    """Ledger rows for manifest records kept out of a run, with their position, line and the record itself.

    Missing values are left out of ``raw`` (pandas gives NaN, which is not JSON) and stored as NULL; a value over
    ``MAX_ID_LENGTH`` is cut to it, so a quarantined record never carries more than the ledger can index.
    """
    now = utcnow()
    statuses = [statuses] * len(frame) if isinstance(statuses, str) else list(statuses)
    bookkeeping = [column for column in ("position", "line", "ref", "job_id") if column in frame]
    raw = frame.drop(columns=bookkeeping).to_dict(orient="records")
    return [
        {
            "use_case": use_case,
            "job_id": source.job_id,
            "source": source.step_id,
            "position": int(position),
            "line": None if pd.isna(line) else int(line),
            "status": status,
            "reason": reason,
            "document_id": _bounded(document_id),
            "customer_id": _bounded(customer_id),
            "raw": json.dumps({k: _bounded(v) for k, v in record.items() if not _missing(v)}),
            "created_at": now,
        }
        for position, line, status, reason, document_id, customer_id, record in zip(
            frame["position"],
            frame["line"],
            statuses,
            reasons,
            frame["document_id"],
            frame["customer_id"],
            raw,
            strict=True,
        )
    ]


def _missing(value: object) -> bool:
    """None, or how pandas spells a missing value (NaN, NA)."""
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _bounded(value: object) -> object:
    """None for a missing value, a string cut to ``MAX_ID_LENGTH``, anything else as it is."""
    if _missing(value):
        return None
    return value[:MAX_ID_LENGTH] if isinstance(value, str) else value


def too_long(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """Records with a key value over ``MAX_ID_LENGTH``: refused before any reaches the ledger's indexes."""
    over = pd.Series(False, index=frame.index)
    for column in columns:
        over |= frame[column].str.len().gt(MAX_ID_LENGTH)
    return over


@task(name="extract-manifest", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def extract_manifest(source: ManifestSource, use_case: str, extra_keys: Sequence[str] = ()) -> ExtractedManifest:
    """Stream the manifest into Parquet batches of valid, first-seen documents, recording every document seen.

    Records without a customer id or document type, with a key over ``MAX_ID_LENGTH`` or with a key the file's
    encoding could not decode are quarantined with their position and line; a document id already seen at another
    position of this or an earlier run is skipped as a duplicate, so it is notified once. Declared records that
    could not be read, and undecodable ones, are counted as ``unreadable``: the run could not do its whole job.
    """
    settings = get_settings()
    ledger = ledger_for(settings)
    key = settings.link_key
    out_dir = settings.spool_dir(use_case, source.job_id) / source.step_id
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    manifest = DeliveryManifest(source.path, settings.keys, extra_keys)
    result = ExtractedManifest(source=source)

    for number, batch in enumerate(manifest.batches(settings.batch_size), start=1):
        frame = batch.to_pandas()
        undecodable = frame.pop("undecodable")
        result.customers += len(frame)
        missing_customer = frame["customer_id"].isna()
        missing_type = frame["document_type"].isna()
        over_long = too_long(frame, [*ID_COLUMNS, *extra_keys])
        derived = source.job_id + "/" + source.step_id + "/" + frame["position"].astype(str)
        frame["document_id"] = frame["document_id"].fillna(derived)

        bad = missing_customer | missing_type | over_long | undecodable
        if bad.any():
            # Most telling last: damaged bytes explain the rest, an over-long key outranks a missing one.
            reasons = pd.Series(QuarantineReason.MISSING_DOCUMENT_TYPE.value, index=frame.index)
            reasons[missing_customer] = QuarantineReason.MISSING_CUSTOMER_ID.value
            reasons[over_long] = QuarantineReason.ID_TOO_LONG.value
            reasons[undecodable] = QuarantineReason.INVALID_ENCODING.value
            ledger.record_rejected(rejected_rows(frame[bad], use_case, source, Status.QUARANTINED, reasons[bad]))
            result.quarantined += int(bad.sum())
            result.unreadable += int(undecodable.sum())
        good = frame[~bad].copy()

        good["ref"] = [document_ref(key, use_case, document_id) for document_id in good["document_id"]]
        attribute_columns = list(extra_keys)
        attributes = (
            [json.dumps(row) for row in good[attribute_columns].to_dict(orient="records")]
            if attribute_columns
            else [None] * len(good)
        )
        now = utcnow()
        first_in_batch = ~good["document_id"].duplicated()
        ledger.record_documents(
            [
                {
                    "use_case": use_case,
                    "document_id": document_id,
                    "job_id": source.job_id,
                    "step_id": source.step_id,
                    "position": int(position),
                    "customer_id": customer_id,
                    "document_type": document_type,
                    "locale": locale,
                    "ref": ref,
                    "attributes": attrs,
                    "first_seen_at": now,
                }
                for document_id, position, customer_id, document_type, locale, ref, attrs, first in zip(
                    good["document_id"],
                    good["position"],
                    good["customer_id"],
                    good["document_type"],
                    good["locale"],
                    good["ref"],
                    attributes,
                    first_in_batch,
                    strict=True,
                )
                if first
            ]
        )
        seen = ledger.documents_where_seen(use_case, good["document_id"].tolist())
        seen = seen.rename(
            columns={
                "job_id": "seen_job",
                "step_id": "seen_step",
                "position": "seen_position",
                "customer_id": "seen_customer",
            }
        )
        good = good.merge(
            seen[["document_id", "seen_job", "seen_step", "seen_position", "seen_customer"]], on="document_id"
        )
        elsewhere = (
            (good["seen_job"] != source.job_id)
            | (good["seen_step"] != source.step_id)
            | (good["seen_position"] != good["position"])
        )
        # The same id for another customer is not the same document again: skipping it would leave that customer
        # with neither a push nor a fallback, so it is quarantined where Exstream sees it.
        conflicting = elsewhere & (good["seen_customer"] != good["customer_id"])
        duplicate = elsewhere & ~conflicting
        for rejected, status, reason in (
            (duplicate, Status.SKIPPED, SkipReason.DUPLICATE),
            (conflicting, Status.QUARANTINED, QuarantineReason.CONFLICTING_DOCUMENT_ID),
        ):
            if rejected.any():
                reasons = pd.Series(reason.value, index=good.index)[rejected]
                ledger.record_rejected(
                    rejected_rows(good.loc[rejected, list(frame.columns)], use_case, source, status, reasons)
                )
        result.duplicates += int(duplicate.sum())
        result.quarantined += int(conflicting.sum())
        kept = good.loc[~elsewhere, [*frame.columns, "ref"]].assign(job_id=source.job_id)
        if len(kept):
            path = out_dir / f"batch-{number:06d}.parquet"
            pq.write_table(pa.Table.from_pandas(kept, preserve_index=False), path)
            result.batches.append(path)
            result.documents += len(kept)

    tail = manifest.tail
    result.customers_declared = tail.customers_declared
    rows = []
    if tail.broken_reason:
        rows.append(
            {
                "position": tail.customers_read + 1,
                "line": tail.broken_at_line,
                "reason": QuarantineReason.MALFORMED_XML.value,
                "raw": json.dumps({"error": tail.broken_reason}),
            }
        )
    unread = (tail.customers_declared or 0) - tail.customers_read
    if unread > 0:
        # One row for the whole shortfall, at position 0 (the manifest itself): millions of rows would say no more.
        rows.append(
            {
                "position": 0,
                "line": None,
                "reason": f"{QuarantineReason.UNREAD_RECORDS.value}:{unread}",
                "raw": json.dumps({"declared": tail.customers_declared, "read": tail.customers_read}),
            }
        )
    if rows:
        now = utcnow()
        ledger.record_rejected(
            [
                {
                    "use_case": use_case,
                    "job_id": source.job_id,
                    "source": source.step_id,
                    "status": Status.QUARANTINED,
                    "created_at": now,
                    **row,
                }
                for row in rows
            ]
        )
        result.quarantined += len(rows)
    if tail.customers_declared is not None:
        result.unreadable += max(unread, 0)
    elif tail.broken_reason:
        result.unreadable += 1  # a broken file that declares no count lost at least the record it broke in
    logger = get_run_logger()
    logger.info(
        "job %s step %s: %d customers read, %d documents to notify, %d quarantined, %d duplicates",
        source.job_id,
        source.step_id,
        result.customers,
        result.documents,
        result.quarantined,
        result.duplicates,
    )
    if tail.customers_declared is not None and tail.customers_declared != tail.customers_read:
        logger.warning("manifest declares %d customers but %d were read", tail.customers_declared, tail.customers_read)
    if tail.replaced_characters:
        logger.warning("manifest held %d undecodable or XML-illegal character(s)", tail.replaced_characters)
    if tail.mislabelled_characters:
        logger.warning(
            "manifest declares %s but is UTF-8 (%d non-ASCII characters): read as UTF-8",
            tail.declared_encoding,
            tail.mislabelled_characters,
        )
    if result.unreadable:
        logger.warning("job %s step %s: %d record(s) unreadable", source.job_id, source.step_id, result.unreadable)
    return result
