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
from prefect.runtime import flow_run

from exstream_push.blocks import connections
from exstream_push.notify.pipeline import deliver, notify, release_deferred
from exstream_push.status import Category, UseCase
from exstream_push.tasks.completeness import ensure_complete
from exstream_push.tasks.extract import extract_manifest
from exstream_push.usecases.intake import discard_manifest_spools, manifest_sources
from exstream_push.usecases.payment_reminders.config import REMINDER_KEYS, load_reminder_config
from exstream_push.usecases.payment_reminders.tasks import (
    due_reminders,
    owed_pages,
    owed_reminders,
    publish_reminder_summary,
    quarantine_invalid_due_dates,
    record_payments,
    reminder_pages,
)
from exstream_push.zones import run_moment

USE_CASE = UseCase.PAYMENT_REMINDERS.value
CATEGORY = Category.PAYMENTS.value


def _run_name() -> str:
    parameters = flow_run.parameters
    source = parameters.get("job_id") or (Path(parameters["manifest"]).name if parameters.get("manifest") else "daily")
    as_of = parameters.get("as_of")
    return f"{USE_CASE}-{source}" + (f"-{as_of:%Y-%m-%dT%H:%M%z}" if isinstance(as_of, datetime) else "")


@flow(name=USE_CASE, flow_run_name=_run_name, persist_result=False)
def payment_reminders(
    manifest: str | None = None,
    job_id: str | None = None,
    payments: str | None = None,
    as_of: datetime | None = None,
    exstream_block: str | None = None,
    fcm_block: str | None = None,
    apns_block: str | None = None,
    webpush_block: str | None = None,
) -> dict[str, Any]:
    """Remind each unpaid document once per stage it reaches, within the frequency cap and outside quiet hours.

    ``manifest`` or ``job_id`` registers new reminder documents first; with neither, the run works on the
    documents already in the ledger. ``payments`` is a CSV ``customer_id,document_id,paid_at``. ``as_of`` (with
    its zone; default now) is the moment every decision is taken at, so a run can be replayed.
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

    outcomes = publish_reminder_summary(USE_CASE, as_of, config, dict(totals))
    result = {"as_of": as_of.isoformat(), "job_id": job_id, **totals, "outcomes": outcomes}
    ensure_complete(USE_CASE, job_id, result)
    return result
