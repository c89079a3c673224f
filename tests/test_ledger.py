"""The ledger holds the one status vocabulary: the database refuses any other value, whoever writes it."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from exstream_push.ledger import Ledger, Notification
from exstream_push.ledger.store import notification_rows
from exstream_push.status import Status


def _row(status: str) -> dict:
    frame = pd.DataFrame({"document_id": ["D1"], "job_id": ["J1"], "customer_id": ["C1"], "device_id": ["d1"]})
    return notification_rows(frame, "statement-ready", status)[0]


def test_statuses_outside_the_vocabulary_are_refused(database_url: str) -> None:
    ledger = Ledger(database_url)
    try:
        ledger.record_final([_row(Status.SKIPPED)])
        with pytest.raises(IntegrityError), ledger.engine.begin() as conn:
            conn.execute(insert(Notification.__table__), [{**_row("delivered-ish"), "key": "another-key"}])
        assert ledger.status_counts() == {"statement-ready": {"skipped": 1}}
    finally:
        ledger.dispose()


def test_stage_is_part_of_the_idempotency_key() -> None:
    frame = pd.DataFrame(
        {"document_id": ["D1", "D1"], "job_id": ["J1", "J1"], "customer_id": ["C1", "C1"], "device_id": ["d1", "d1"],
         "stage": ["", "overdue"]}
    )  # fmt: skip
    plain, staged = notification_rows(frame, "payment-reminders", Status.PENDING)
    assert plain["key"] != staged["key"]
    assert notification_rows(frame.iloc[:1], "payment-reminders", Status.PENDING)[0]["key"] == plain["key"]
