"""The payment-reminder tasks: each reads what it needs through ``ledger.reminders``, decides by the pure rules
of ``exstream_push.usecases.payment_reminders.rules`` and writes back in bulk."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from exstream_push.ledger.reminders import CustomerPage
from exstream_push.ledger.store import notification_rows, utcnow
from exstream_push.retrying import retry_if_it_can_succeed
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push.status import QuarantineReason, SkipReason, Status
from exstream_push.tasks.extract import ExtractedManifest
from exstream_push.usecases.payment_reminders.config import ReminderConfig
from exstream_push.usecases.payment_reminders.rules import (
    check_payments,
    due_at,
    match_payments,
    outcome_table,
    parse_due_dates,
    ready_to_render,
    second_look,
    tally_outcomes,
)

# -- registering documents and payments -----------------------------------------------------------------------------


@task(name="quarantine-invalid-due-dates", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def quarantine_invalid_due_dates(extracted: ExtractedManifest, use_case: str) -> int:
    """A document without a valid ISO ``DueDate`` cannot be placed on the ladder: it is quarantined with its
    position and line, and forgotten as a document, so a corrected manifest registers it afresh."""
    ledger = ledger_for(get_settings())
    source = extracted.source
    quarantined = 0
    for path in extracted.batches:
        frame = pd.read_parquet(path, columns=["position", "line", "document_id", "customer_id", "DueDate"])
        bad = frame[parse_due_dates(frame["DueDate"]).isna()]
        if bad.empty:
            continue
        now = utcnow()
        ledger.record_rejected(
            [
                {
                    "use_case": use_case,
                    "job_id": source.job_id,
                    "source": source.step_id,
                    "position": int(position),
                    "line": None if pd.isna(line) else int(line),
                    "status": Status.QUARANTINED,
                    "reason": QuarantineReason.INVALID_DUE_DATE.value,
                    "document_id": document_id,
                    "customer_id": customer_id,
                    "raw": json.dumps({"DueDate": due_date}),
                    "created_at": now,
                }
                for position, line, document_id, customer_id, due_date in bad.itertuples(index=False)
            ]
        )
        ledger.reminders.forget_documents(use_case, source.job_id, source.step_id, bad["document_id"].tolist())
        quarantined += len(bad)
    if quarantined:
        get_run_logger().warning(
            "job %s: %d document(s) without a valid DueDate quarantined", source.job_id, quarantined
        )
    return quarantined


def read_payments(path: Path) -> tuple[pd.DataFrame, list[tuple[int, str]]]:
    """Payments CSV ``customer_id,document_id,paid_at`` → (valid payments, [(line, reason)] of bad rows)."""
    return check_payments(pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig"), str(path))


def _log_lines(file_name: str, problems: Sequence[tuple[int, str]], shown: int = 20) -> None:
    """The first problems by line, then a count: a bank's export may hold many payments that are not ours."""
    logger = get_run_logger()
    for line, reason in problems[:shown]:
        logger.warning("%s:%d: payment skipped: %s", file_name, line, reason)
    if len(problems) > shown:
        logger.warning("%s: %d more payment(s) skipped for the same reasons", file_name, len(problems) - shown)


@task(name="record-payments", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def record_payments(payments: Path, use_case: str, as_of: datetime) -> dict[str, int]:
    """Marks open documents paid (state ``paid``, one ``skipped``/``paid`` notification each) so no reminder follows.

    Only payments made by ``as_of`` count, so a replayed run decides as the original did. A payment must name the
    document's own customer; others are counted as unmatched and logged by line, never guessed at.
    """
    ledger = ledger_for(get_settings())
    valid, errors = read_payments(payments)
    _log_lines(payments.name, errors)
    later = valid["paid_at"] > as_of
    valid = valid[~later]

    match = match_payments(valid, ledger.reminders.known_documents(use_case, valid["document_id"].tolist()))
    _log_lines(
        payments.name, [(line, "matches no reminder document of that customer") for line in match.unmatched["line"]]
    )
    newly_paid = match.newly_paid
    if len(newly_paid):
        ledger.reminders.mark_paid(use_case, newly_paid)
        ledger.record_final(
            notification_rows(newly_paid, use_case, Status.SKIPPED, reason=SkipReason.PAID, as_of=as_of)
        )
    counts = {
        "paid": len(newly_paid),
        "payments_already_recorded": len(match.matched) - len(newly_paid),
        "payments_unmatched": len(match.unmatched),
        "payments_after_as_of": int(later.sum()),
        "payments_invalid": len(errors),
    }
    get_run_logger().info("payments: %s", counts)
    return counts


# -- what a run owes: deferred and left-over sends ------------------------------------------------------------------


@task(name="plan-owed-pages", cache_policy=NO_CACHE)
def owed_pages(use_case: str) -> list[CustomerPage]:
    """Pages of customers with notifications still ``pending``: released from quiet hours or left by a crash."""
    settings = get_settings()
    return ledger_for(settings).reminders.pending_pages(use_case, settings.batch_size)


@task(name="owed-reminders", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def owed_reminders(page: CustomerPage, use_case: str, category: str, config: ReminderConfig) -> pd.DataFrame:
    """Pending notifications of a page of customers, ready to render; consent and payment are checked again.

    What changed since the decision wins: a paid or closed document is ``skipped`` (``paid``/``closed``), and a
    device now inactive, opted out or out of the category is ``skipped`` with that reason instead of sent.
    """
    ledger = ledger_for(get_settings())
    owed = ledger.reminders.pending_with_consent(use_case, page)
    reasons = second_look(owed, category)
    dropped = reasons.notna()
    ledger.record_outcomes(
        [
            {"key": key, "status": Status.SKIPPED, "reason": reason, "attempts": 0}
            for key, reason in zip(owed.loc[dropped, "key"], reasons[dropped], strict=True)
        ]
    )
    ready = ready_to_render(owed[~dropped], config)
    get_run_logger().info("owed: %d to send, %d skipped on a second look", len(ready), int(dropped.sum()))
    return ready


# -- what a run decides: documents reaching a stage -----------------------------------------------------------------


@task(name="plan-reminder-pages", cache_policy=NO_CACHE)
def reminder_pages(use_case: str) -> list[CustomerPage]:
    """Pages of ``batch_size`` customers with open reminder documents."""
    settings = get_settings()
    return ledger_for(settings).reminders.open_pages(use_case, settings.batch_size)


@task(name="due-reminders", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def due_reminders(page: CustomerPage, use_case: str, config: ReminderConfig, as_of: datetime) -> pd.DataFrame:
    """One row per open document of the page whose stage at ``as_of`` has not been decided yet, with ``stage``,
    ``template`` and ``priority``; the most pressing first within each customer, for the frequency cap."""
    repository = ledger_for(get_settings()).reminders
    due = due_at(repository.open_documents(use_case, page), repository.decided_stages(use_case, page), config, as_of)
    get_run_logger().info("%d document(s) reached a stage not yet decided", len(due))
    return due


# -- the run's table ------------------------------------------------------------------------------------------------


@task(name="reminder-outcomes", cache_policy=NO_CACHE)
def reminder_outcomes(use_case: str, as_of: datetime, config: ReminderConfig) -> list[dict[str, Any]]:
    """Notifications decided or sent by the run, by stage × risk segment × status × reason, in ladder order."""
    pages = ledger_for(get_settings()).reminders.run_outcomes(use_case, as_of)
    counts = outcome_table([tally_outcomes(page) for page in pages], [stage.name for stage in config.stages])
    return [
        {key: (int(value) if key == "count" else value) for key, value in row.items()}
        for row in counts.to_dict(orient="records")
    ]
