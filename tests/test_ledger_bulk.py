"""The ledger's bulk paths store what SQLAlchemy would: same values, same column formats, same semantics.

SQLite writes plain tuples to the driver and PostgreSQL COPYs large batches; both are read back here through
SQLModel, and on SQLite compared with what SQLAlchemy's own executemany stores.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.dialects import sqlite
from sqlmodel import Session, SQLModel

from exstream_push.ledger import Device, Ledger, Notification, bulk, store
from exstream_push.ledger.store import notification_rows
from exstream_push.status import Status

NOW = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
PARIS = timezone(timedelta(hours=2))
# One row takes the per-row path everywhere; this many take COPY on PostgreSQL.
SIZES = [1, bulk.COPY_THRESHOLD + 100]


@pytest.fixture
def ledger(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ledger]:
    monkeypatch.setattr(store, "utcnow", lambda: NOW)
    ledger = Ledger(database_url)
    yield ledger
    ledger.dispose()


def _frame(count: int, start: int = 0) -> pd.DataFrame:
    numbers = range(start, start + count)
    return pd.DataFrame(
        {
            "document_id": [f"D{n}" for n in numbers],
            "job_id": "J1",
            "customer_id": [f"C{n}" for n in numbers],
            "device_id": [None if n % 5 == 0 else f"d{n}" for n in numbers],
            "stage": ["" if n % 3 else "+3d" for n in numbers],
            "not_before": [
                pd.Timestamp("2024-06-01 10:00:00.25", tz="Europe/Paris") + pd.Timedelta(seconds=n) if n % 2 else pd.NaT
                for n in numbers
            ],
        }
    )


def _notifications(ledger: Ledger) -> dict[str, Notification]:
    with Session(ledger.engine) as session:
        return {n.key: n for n in session.scalars(select(Notification))}


@pytest.mark.parametrize("count", SIZES)
def test_final_rows_read_back_as_written(ledger: Ledger, count: int) -> None:
    as_of = datetime(2024, 5, 1, 12, 0, 0, 1, tzinfo=PARIS)
    reasons = [None if n % 2 else "opted_out" for n in range(count)]
    rows = notification_rows(_frame(count), "uc", Status.SKIPPED, reason=reasons, as_of=as_of)
    ledger.record_final(rows)
    ledger.record_final([{**row, "reason": "changed", "as_of": NOW} for row in rows])  # conflicts leave rows alone

    stored = _notifications(ledger)
    assert len(stored) == count
    for row in rows:
        got = stored[row["key"]]
        assert (got.document_id, got.device_id, got.stage, got.status) == (
            row["document_id"],
            row["device_id"],
            row["stage"],
            "skipped",
        )
        assert got.reason == row["reason"]
        assert got.provider_message_id is None  # a column the rows leave out takes its default
        assert got.attempts == 0
        assert got.as_of == as_of and got.as_of.tzinfo is not None
        assert got.not_before == row["not_before"]
        assert got.created_at == NOW and got.updated_at == NOW


def test_sqlite_stores_utc_text_like_sqlalchemy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Byte for byte what SQLAlchemy's executemany stores: UTC wall time as text, NULLs, integers."""
    monkeypatch.setattr(store, "utcnow", lambda: NOW)
    rows = notification_rows(
        _frame(50), "uc", Status.SKIPPED, reason="no_device", as_of=datetime(2024, 5, 1, 12, tzinfo=PARIS)
    )
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    reference = create_engine(f"sqlite:///{tmp_path / 'reference.db'}")
    SQLModel.metadata.create_all(reference)
    try:
        ledger.record_final(rows)
        with reference.begin() as conn:
            conn.execute(sqlite.insert(Notification.__table__).on_conflict_do_nothing(), rows)
        dump = "SELECT *, typeof(as_of), typeof(not_before), typeof(reason) FROM notification ORDER BY rowid"
        with ledger.engine.connect() as ours, reference.connect() as theirs:
            written = ours.execute(text(dump)).all()
            assert written == theirs.execute(text(dump)).all()
            assert ours.execute(text("SELECT as_of, created_at FROM notification LIMIT 1")).one() == (
                "2024-05-01 10:00:00.000000",
                "2024-05-06 07:08:09.123456",
            )
    finally:
        ledger.dispose()
        reference.dispose()


@pytest.mark.parametrize("count", SIZES)
def test_outcomes_replace_status_and_add_attempts(ledger: Ledger, count: int) -> None:
    rows = notification_rows(_frame(count), "uc", Status.PENDING, as_of=NOW)
    keys = [row["key"] for row in rows]
    assert ledger.claim(rows) == set(keys)

    ledger.record_outcomes(
        [{"key": k, "status": Status.PENDING, "reason": "retry_exhausted:UNAVAILABLE", "attempts": 2} for k in keys]
    )
    ledger.record_outcomes([{"key": k, "status": Status.SENT, "provider_message_id": f"m-{k}"} for k in keys])
    ledger.record_outcomes([{"key": "not-claimed", "status": Status.SENT}])
    ledger.record_outcomes([])

    stored = _notifications(ledger)
    assert set(stored) == set(keys)
    for key in keys:
        got = stored[key]
        assert (got.status, got.reason, got.provider_message_id, got.attempts) == ("sent", None, f"m-{key}", 3)
        assert got.updated_at == NOW


@pytest.mark.parametrize("count", SIZES)
def test_claim_returns_exactly_the_keys_left_pending(ledger: Ledger, count: int) -> None:
    frame = _frame(4 * count)
    finals = notification_rows(frame.iloc[:count], "uc", Status.SKIPPED, reason="opted_out")
    sent, left_pending, fresh = (
        notification_rows(frame.iloc[start : start + count], "uc", Status.PENDING)
        for start in (count, 2 * count, 3 * count)
    )
    ledger.record_final(finals)
    assert ledger.claim(sent + left_pending) == {row["key"] for row in sent + left_pending}
    ledger.record_outcomes([{"key": row["key"], "status": Status.SENT} for row in sent])

    owed = ledger.claim(finals + sent + left_pending + fresh + fresh[:1])
    assert owed == {row["key"] for row in left_pending + fresh}
    assert ledger.claim([]) == set()
    assert ledger.claim(notification_rows(_frame(count, start=9 * count), "uc", Status.DEFERRED)) == set()
    assert {n.status for n in _notifications(ledger).values() if n.key in {r["key"] for r in finals}} == {"skipped"}


def test_devices_for_gives_the_frame_sqlalchemy_gives(ledger: Ledger) -> None:
    at = datetime(2024, 5, 6, 9, 0, tzinfo=PARIS)
    count = store._CHUNK + 300  # two chunks of customers
    ledger.upsert_devices(
        [
            {
                "device_id": f"d{n}",
                "customer_id": f"C{n % count}",
                "platform": "android",
                "token": f"t{n}",
                "active": n % 4 != 0,
                "push_opt_in": n % 3 != 0,
                "locale": None if n % 2 else "en",
                "timezone": "UTC",
                "categories": "",
                "deactivated_reason": None if n % 4 else "fcm:UNREGISTERED",
                "updated_at": at + timedelta(microseconds=n),
            }
            for n in range(count + 500)
        ]
    )
    customers = [f"C{n}" for n in range(count)] + ["nobody"]
    table = Device.__table__
    columns = [c.name for c in table.columns]
    with ledger.engine.connect() as conn:
        expected = pd.concat(
            [
                pd.DataFrame(
                    conn.execute(select(table).where(table.c.customer_id.in_(chunk))).fetchall(), columns=columns
                )
                for chunk in store._chunks(sorted(set(customers)))
            ],
            ignore_index=True,
        )
    frame = ledger.devices_for(customers)
    pd.testing.assert_frame_equal(frame, expected, check_exact=True)
    assert frame["active"].dtype == bool and str(frame["updated_at"].dtype).endswith("UTC]")
    assert frame.loc[frame["device_id"] == "d1", "updated_at"].item() == at + timedelta(microseconds=1)
    assert ledger.devices_for(["nobody"]).empty and list(ledger.devices_for([]).columns) == columns
