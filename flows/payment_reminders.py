"""Use case 2 — payment due and delinquency reminders along an escalation ladder, run daily.

A manifest (or an Exstream job) registers reminder documents; every run, with or without one, records payments,
sends what quiet hours held back, then reminds each unpaid document once at the stage it has reached.
"""

from __future__ import annotations

import shutil
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from blocks import connections
from exstream_push.settings import get_settings
from exstream_push.status import UseCase
from exstream_push.tasks.completeness import ensure_complete
from exstream_push.tasks.extract import (
    ManifestSource,
    extract_manifest,
    fetch_job_manifests,
    job_id_for_file,
    spool_dir,
)
from exstream_push.tasks.reminders import (
    REMINDER_KEYS,
    due_reminders,
    load_reminder_config,
    owed_pages,
    owed_reminders,
    publish_reminder_summary,
    quarantine_invalid_due_dates,
    record_payments,
    release_deferred,
    reminder_pages,
)
from exstream_push.tasks.render import render_messages
from exstream_push.tasks.segment import segment_recipients
from exstream_push.tasks.send import send_push
from exstream_push.tasks.timing import apply_frequency_cap, defer_quiet_hours

USE_CASE = UseCase.PAYMENT_REMINDERS.value
CATEGORY = "payments"


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
) -> dict[str, Any]:
    """Remind each unpaid document once per stage it reaches, within the frequency cap and outside quiet hours.

    ``manifest`` or ``job_id`` registers new reminder documents first; with neither, the run works on the
    documents already in the ledger. ``payments`` is a CSV ``customer_id,document_id,paid_at``. ``as_of`` (with
    its zone; default now) is the moment every decision is taken at, so a run can be replayed.
    """
    if as_of is None:
        as_of = datetime.now(UTC)
    if as_of.tzinfo is None:
        raise ValueError("as_of needs a time zone, e.g. 2026-11-29T08:00:00+00:00")
    as_of = as_of.astimezone(UTC)
    config = load_reminder_config()
    exstream, fcm = connections(exstream_block, fcm_block)

    totals: Counter[str] = Counter()
    if manifest is not None:
        job_id = job_id or job_id_for_file(Path(manifest))
        sources = [ManifestSource(path=Path(manifest), job_id=job_id, step_id="manifest")]
    else:
        sources = fetch_job_manifests(job_id, exstream, USE_CASE) if job_id is not None else []
    for source in sources:
        extracted = extract_manifest(source, USE_CASE, extra_keys=REMINDER_KEYS)
        invalid = quarantine_invalid_due_dates(extracted, USE_CASE)
        totals.update(
            customers=extracted.customers,
            registered=extracted.documents - invalid,
            quarantined=extracted.quarantined + invalid,
            duplicates=extracted.duplicates,
        )
    if job_id is not None:
        shutil.rmtree(spool_dir(get_settings(), USE_CASE, job_id), ignore_errors=True)

    if payments is not None:
        totals.update(record_payments(Path(payments), USE_CASE, as_of))

    totals.update(released=release_deferred(USE_CASE, as_of))
    for page in owed_pages(USE_CASE):
        owed = owed_reminders(page, USE_CASE, CATEGORY, config)
        messages = render_messages(owed, USE_CASE, CATEGORY, as_of, extra_keys=REMINDER_KEYS)
        totals.update(send_push(messages, USE_CASE, fcm, as_of))

    for page in reminder_pages(USE_CASE):
        due = due_reminders(page, USE_CASE, config, as_of)
        allowed = apply_frequency_cap(due, USE_CASE, as_of, config.frequency_cap)
        recipients = segment_recipients(allowed, USE_CASE, CATEGORY, as_of)
        ready = defer_quiet_hours(recipients, USE_CASE, as_of, config.quiet_hours)
        messages = render_messages(ready, USE_CASE, CATEGORY, as_of, extra_keys=REMINDER_KEYS)
        totals.update(send_push(messages, USE_CASE, fcm, as_of))

    outcomes = publish_reminder_summary(USE_CASE, as_of, config, dict(totals))
    result = {"as_of": as_of.isoformat(), "job_id": job_id, **totals, "outcomes": outcomes}
    ensure_complete(USE_CASE, job_id, result)
    return result
