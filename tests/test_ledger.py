"""The ledger holds the one status vocabulary: the database refuses any other value, whoever writes it."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from exstream_push.ledger import Ledger, Notification
from exstream_push.ledger.models import WorkRun
from exstream_push.ledger.store import make_engine, notification_rows, utcnow
from exstream_push.status import Status
from tests.premigration import create_premigration_ledger


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


def test_a_ledger_made_by_an_earlier_version_gets_the_columns_added_since(database_url: str) -> None:
    """workrun.content came after workrun: opening the older ledger adds it, and a run can be joined."""
    engine = make_engine(database_url)
    create_premigration_ledger(engine, "before-workrun-content")
    engine.dispose()

    ledger = Ledger(database_url)
    try:
        joined = ledger.join_run("statement-ready/J1", "host:1:token", utcnow(), lambda worker: False, "digest")
        assert joined is not None and joined[1]
        with ledger.engine.connect() as conn:
            assert conn.execute(select(WorkRun.content)).scalar_one() == "digest"
    finally:
        ledger.dispose()
