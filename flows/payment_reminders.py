"""Use case 2 — payment due and delinquency reminders along an escalation ladder, run daily.

A manifest (or an Exstream job) registers reminder documents; every run, with or without one, records payments,
sends what quiet hours held back, then reminds each unpaid document once at the stage it has reached.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import flow

from exstream_push.blocks import ApnsConnection, ExstreamConnection, FcmConnection, WebPushConnection, connections
from exstream_push.notify.pipeline import deliver, notify, release_deferred
from exstream_push.runtime import typed_name_or
from exstream_push.status import Category, UseCase
from exstream_push.tasks.completeness import ensure_complete
from exstream_push.tasks.extract import extract_manifest
from exstream_push.tasks.summary import publish_summary
from exstream_push.usecases.intake import discard_manifest_spools, manifest_sources
from exstream_push.usecases.payment_reminders.config import REMINDER_KEYS, load_reminder_config
from exstream_push.usecases.payment_reminders.tasks import (
    due_reminders,
    owed_pages,
    owed_reminders,
    quarantine_invalid_due_dates,
    record_payments,
    reminder_outcomes,
    reminder_pages,
)
from exstream_push.zones import run_moment

USE_CASE = UseCase.PAYMENT_REMINDERS.value
CATEGORY = Category.PAYMENTS.value


def _run_name(parameters: dict[str, Any]) -> str:
    source = parameters.get("job_id") or (Path(parameters["manifest"]).name if parameters.get("manifest") else "daily")
    as_of = parameters.get("as_of")
    return f"{USE_CASE}-{source}" + (f"-{as_of:%Y-%m-%dT%H:%M%z}" if isinstance(as_of, datetime) else "")


@flow(name=USE_CASE, flow_run_name=typed_name_or(_run_name), persist_result=False)
def payment_reminders(
    manifest: str | None = None,
    job_id: str | None = None,
    payments: str | None = None,
    as_of: datetime | None = None,
    exstream_block: ExstreamConnection | None = None,
    fcm_block: FcmConnection | None = None,
    apns_block: ApnsConnection | None = None,
    webpush_block: WebPushConnection | None = None,
) -> dict[str, Any]:
    """Remind each unpaid document once per stage it reaches, within the frequency cap and outside quiet hours.

    ``manifest`` or ``job_id`` registers new reminder documents first; with neither, the run works on the
    documents already in the ledger. ``as_of`` is the moment every decision is taken at, so a run can be replayed.

    Args:
        manifest: Path of an Exstream manifest file on the worker that registers reminder documents (optional).
        job_id: An Exstream job whose delivery file registers reminder documents, or the label of the manifest
            given (optional; with neither, the run reminds the documents already registered).
        payments: Path of a CSV file ``customer_id,document_id,paid_at`` of payments to record first.
        as_of: The moment decisions are taken at, with its zone; empty: now.
        exstream_block: A saved Exstream connection; empty: the worker's EXSTREAM_PUSH_EXSTREAM_* settings.
        fcm_block: A saved FCM connection; empty: the worker's EXSTREAM_PUSH_FCM_* settings.
        apns_block: A saved APNs connection; empty: the worker's APNs settings, if any.
        webpush_block: A saved Web Push connection; empty: the worker's VAPID settings, if any.
    """
    as_of = run_moment(as_of)
    config = load_reminder_config()
    exstream, push = connections(exstream_block, fcm_block, apns_block, webpush_block)

    totals: Counter[str] = Counter()
    sources = manifest_sources(manifest, job_id, exstream, USE_CASE)
    for source in sources:
        extracted = extract_manifest(source, USE_CASE, extra_keys=REMINDER_KEYS)
        invalid = quarantine_invalid_due_dates(extracted, USE_CASE)
        counts = extracted.counts()
        totals.update(
            {**counts, "registered": extracted.documents - invalid, "quarantined": counts["quarantined"] + invalid}
        )
    discard_manifest_spools(USE_CASE, sources)
    job_id = sources[0].job_id if manifest is not None else job_id

    if payments is not None:
        totals.update(record_payments(Path(payments), USE_CASE, as_of))

    totals.update(released=release_deferred(USE_CASE, as_of))
    for page in owed_pages(USE_CASE):
        owed = owed_reminders(page, USE_CASE, CATEGORY, config)
        totals.update(deliver(owed, USE_CASE, CATEGORY, push, as_of, extra_keys=REMINDER_KEYS))

    for page in reminder_pages(USE_CASE):
        due = due_reminders(page, USE_CASE, config, as_of)
        sent = notify(
            due,
            USE_CASE,
            CATEGORY,
            push,
            as_of,
            extra_keys=REMINDER_KEYS,
            frequency_cap=config.frequency_cap,
            quiet_hours=config.quiet_hours,
        )
        totals.update(sent)

    outcomes = reminder_outcomes(USE_CASE, as_of, config)
    publish_summary(
        USE_CASE,
        f"{USE_CASE} · {job_id or 'daily run'} · as of {as_of.isoformat(timespec='minutes')}",
        totals,
        tables={"Notifications by stage, risk segment and status": outcomes},
    )
    result = {"as_of": as_of.isoformat(), "job_id": job_id, **totals, "outcomes": outcomes}
    ensure_complete(USE_CASE, job_id, result)
    return result
