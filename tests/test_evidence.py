"""The evidence log: facts appended by the ledger's own writes, in their transactions; chains that show an edited,
deleted or reordered record; one document's trail; the export of every use case's documents with the chain head.

Every scenario goes through the ledger's real methods on SQLite and PostgreSQL; tampering is done with plain SQL,
as someone with database access would.
"""

from __future__ import annotations

import csv
import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select, text

from exstream_push.audit import EVIDENCE_SCHEMA, HEAD_METADATA
from exstream_push.cli import main
from exstream_push.ledger import Ledger, alerts, evidence, store
from exstream_push.ledger.errors import LedgerError
from exstream_push.ledger.models import Evidence, EvidenceHead, Notification, OpsAlert
from exstream_push.ledger.store import make_engine, notification_rows, notification_subjects
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push.status import DocumentState, Status

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
STATEMENT, POLICY, ACTION, PAYMENT = "statement-ready", "policy-change", "action-required", "payment-reminders"
TOKENS = {"dev-1": "fcm-registration-token-1", "dev-2": "apns-device-token-2"}


Clock = Callable[[datetime], None]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Sets the ledger's clock: when outcomes, hand-backs and appends happen."""

    def set_to(at: datetime) -> None:
        monkeypatch.setattr(store, "utcnow", lambda: at)

    set_to(T0)
    return set_to


@pytest.fixture
def ledger(database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Ledger]:
    """The ledger the CLI opens too (the process's one per URL)."""
    monkeypatch.setenv("EXSTREAM_PUSH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EXSTREAM_PUSH_DATABASE_URL", database_url)
    yield ledger_for(get_settings())


def document(use_case: str, document_id: str, position: int, customer_id: str = "C1") -> dict[str, Any]:
    return {
        "use_case": use_case,
        "document_id": document_id,
        "job_id": f"JOB-{use_case}",
        "step_id": "step-1",
        "position": position,
        "customer_id": customer_id,
        "document_type": "NOTICE",
        "ref": f"ref-{use_case}-{document_id}",
        "first_seen_at": T0,
    }


def claims(use_case: str, document_id: str, *pairs: tuple[str, str], customer_id: str = "C1") -> list[dict[str, Any]]:
    """Pending notifications of a document, one per (device, stage)."""
    frame = pd.DataFrame(
        {
            "document_id": document_id,
            "job_id": f"JOB-{use_case}",
            "customer_id": customer_id,
            "device_id": [device for device, _ in pairs],
            "stage": [stage for _, stage in pairs],
        }
    )
    return notification_rows(frame, use_case, Status.PENDING, as_of=T0)


def event(event_id: str, kind: str, use_case: str, document_id: str, at: datetime) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": kind,
        "use_case": use_case,
        "document_id": document_id,
        "customer_id": "C1",
        "device_id": "dev-1",
        "occurred_at": at,
        "received_at": store.utcnow(),
    }


def facts(ledger: Ledger) -> list[tuple[Any, ...]]:
    table = Evidence.__table__
    columns = ("fact", "use_case", "document_id", "device_id", "provider", "provider_message_id", "stage", "detail")
    with ledger.engine.connect() as conn:
        rows = conn.execute(select(*(table.c[name] for name in columns))).all()
    return sorted(tuple("" if value is None else value for value in row) for row in rows)


def every_case(ledger: Ledger, clock: Clock) -> None:
    """A statement pushed to two devices (one refused), a policy notice, events, a reminder, an escalation and the
    acknowledgement after it, an action expiring, a statement handed back for a fallback, a bill paid twice; each
    write through the ledger's own method, at the moments the clock is set to."""
    ledger.upsert_devices(
        [
            {
                "device_id": device,
                "customer_id": "C1",
                "platform": "android" if provider == "fcm" else "ios",
                "provider": provider,
                "token": TOKENS[device],
                "updated_at": T0,
            }
            for device, provider in (("dev-1", "fcm"), ("dev-2", "apns"))
        ]
    )
    ledger.record_documents(
        [
            document(STATEMENT, "S-1", 1),
            document(POLICY, "P-1", 1),
            document(ACTION, "A-1", 1, customer_id="C2"),
            document(PAYMENT, "B-1", 1),
        ]
    )
    clock(T0 + timedelta(minutes=5))
    statement = claims(STATEMENT, "S-1", ("dev-1", ""), ("dev-2", ""))
    ledger.claim(statement)
    ledger.record_outcomes(
        [
            {"key": statement[0]["key"], "status": Status.SENT, "provider_message_id": "projects/p/messages/1"},
            {"key": statement[1]["key"], "status": Status.FAILED, "reason": "BadDeviceToken"},
        ]
    )
    notice, reminder = claims(POLICY, "P-1", ("dev-1", "notice"), ("dev-1", "reminder+3d"))
    ledger.claim([notice, reminder])
    ledger.record_outcomes([{"key": notice["key"], "status": Status.PENDING, "reason": "retry_exhausted:UNAVAILABLE"}])
    ledger.record_outcomes([{"key": notice["key"], "status": Status.SENT, "provider_message_id": "m-notice"}])
    ledger.record_events(
        [
            event("e-1", "delivered", POLICY, "P-1", T0 + timedelta(minutes=10)),
            event("e-2", "opened", POLICY, "P-1", T0 + timedelta(minutes=20)),
            event("e-3", "document_accessed", POLICY, "P-1", T0 + timedelta(minutes=30)),
        ]
    )
    clock(T0 + timedelta(days=3))
    ledger.record_outcomes([{"key": reminder["key"], "status": Status.SENT, "provider_message_id": "m-reminder"}])
    clock(T0 + timedelta(days=14))
    ledger.claim(claims(POLICY, "P-1", ("exstream:policy-ack-overdue", "escalation")))
    ledger.follow_ups.mark_hand_backs_sent(POLICY, "escalation", ["P-1"])
    ledger.record_events([event("e-4", "acknowledged", POLICY, "P-1", T0 + timedelta(days=15))])
    ledger.follow_ups.set_state(ACTION, ["A-1"], DocumentState.EXPIRED, ["open"], T0 + timedelta(days=30))
    ledger.engagement.mark_fallback_requested([(STATEMENT, "S-1")], T0 + timedelta(days=2))
    ledger.reminders.mark_paid(PAYMENT, payments(("B-1", PAID_AT + timedelta(hours=1)), ("B-1", PAID_AT)))


PAID_AT = T0 + timedelta(days=4)


def payments(*rows: tuple[str, datetime]) -> pd.DataFrame:
    return pd.DataFrame({"document_id": [d for d, _ in rows], "paid_at": pd.to_datetime([at for _, at in rows])})


EXPECTED = sorted(
    [
        ("generated", STATEMENT, "S-1", "", "", "", "", "step-1"),
        ("generated", POLICY, "P-1", "", "", "", "", "step-1"),
        ("generated", ACTION, "A-1", "", "", "", "", "step-1"),
        ("generated", PAYMENT, "B-1", "", "", "", "", "step-1"),
        ("notified", STATEMENT, "S-1", "dev-1", "fcm", "projects/p/messages/1", "", ""),
        ("failed", STATEMENT, "S-1", "dev-2", "apns", "", "", "BadDeviceToken"),
        ("notified", POLICY, "P-1", "dev-1", "fcm", "m-notice", "notice", ""),
        ("reminded", POLICY, "P-1", "dev-1", "fcm", "m-reminder", "reminder+3d", ""),
        ("delivered", POLICY, "P-1", "dev-1", "", "", "", ""),
        ("opened", POLICY, "P-1", "dev-1", "", "", "", ""),
        ("accessed", POLICY, "P-1", "dev-1", "", "", "", ""),
        ("acknowledged", POLICY, "P-1", "dev-1", "", "", "", ""),
        ("handed_back", POLICY, "P-1", "", "", "", "escalation", "policy-ack-overdue"),
        ("expired", ACTION, "A-1", "", "", "", "", ""),
        ("handed_back", STATEMENT, "S-1", "", "", "", "fallback_delivery", ""),
        ("completed", PAYMENT, "B-1", "", "", "", "", "payment"),
    ]
)


def test_every_fact_is_appended_by_the_write_that_causes_it_once(ledger: Ledger, clock: Clock) -> None:
    every_case(ledger, clock)
    assert facts(ledger) == EXPECTED
    assert ledger.evidence_records() == len(EXPECTED)

    # The same writes again add nothing: the document, the events, the hand-back, the expiry and the fallback
    # are each recorded once, and so is their evidence.
    ledger.record_documents([document(STATEMENT, "S-1", 1) | {"first_seen_at": T0 + timedelta(days=1)}])
    ledger.record_events([event("e-1", "delivered", POLICY, "P-1", T0 + timedelta(minutes=1))])
    ledger.follow_ups.mark_hand_backs_sent(POLICY, "escalation", ["P-1"])
    ledger.follow_ups.set_state(ACTION, ["A-1"], DocumentState.EXPIRED, ["open"], T0 + timedelta(days=31))
    ledger.engagement.mark_fallback_requested([(STATEMENT, "S-1")], T0 + timedelta(days=3))
    ledger.reminders.mark_paid(PAYMENT, payments(("B-1", PAID_AT - timedelta(hours=1))))
    assert facts(ledger) == EXPECTED
    # A bill paid twice was completed by its first payment, and that is when its trail says so.
    assert [evidence.moment(row[0]) for row in ledger.evidence_trail("B-1") if row[1] == "completed"] == [PAID_AT]

    with ledger.engine.connect() as conn:
        stored = conn.execute(select(Evidence.__table__)).all()
    assert not any(token in str(row) for row in stored for token in TOKENS.values())
    assert ledger.verify_evidence().broken is None


def test_outcomes_given_their_subjects_append_what_a_read_back_would(ledger: Ledger, clock: Clock) -> None:
    """The sender hands ``record_outcomes`` what it holds about each key instead of the ledger reading it back: the
    facts are the same ones, and a settled key it does not name is still read back."""
    every_case(ledger, clock)
    ledger.record_documents([document(STATEMENT, "S-2", 2), document(STATEMENT, "S-3", 3)])
    read_back, given = claims(STATEMENT, "S-2", ("dev-1", ""), ("dev-2", "")), claims(STATEMENT, "S-3", ("dev-1", ""))
    ledger.claim(read_back + given)
    outcomes = [
        {"key": read_back[0]["key"], "status": Status.SENT, "provider_message_id": "m-2"},
        {"key": read_back[1]["key"], "status": Status.FAILED, "reason": "BadDeviceToken"},
    ]
    ledger.record_outcomes(outcomes)
    ledger.record_outcomes(
        [
            {"key": given[0]["key"], "status": Status.SENT, "provider_message_id": "m-3"},
            {"key": read_back[1]["key"], "status": Status.FAILED, "reason": "BadDeviceToken"},
        ],
        notification_subjects(given, ["fcm"]),
    )
    added = sorted(set(facts(ledger)) - set(EXPECTED))
    assert added == [
        ("failed", STATEMENT, "S-2", "dev-2", "apns", "", "", "BadDeviceToken"),
        ("generated", STATEMENT, "S-2", "", "", "", "", "step-1"),
        ("generated", STATEMENT, "S-3", "", "", "", "", "step-1"),
        ("notified", STATEMENT, "S-2", "dev-1", "fcm", "m-2", "", ""),
        ("notified", STATEMENT, "S-3", "dev-1", "fcm", "m-3", "", ""),
    ]
    with ledger.engine.connect() as conn:
        named = conn.execute(select(Evidence.customer_id, Evidence.job_id).where(Evidence.document_id == "S-3"))
        assert set(named) == {("C1", f"JOB-{STATEMENT}")}


def test_a_write_whose_evidence_cannot_be_appended_does_not_happen(ledger: Ledger) -> None:
    """Outcome and evidence share a transaction: without the shard heads the append fails, and the outcome with it."""
    ledger.record_documents([document(STATEMENT, "S-1", 1)])
    rows = claims(STATEMENT, "S-1", ("dev-1", ""))
    ledger.claim(rows)
    with ledger.engine.begin() as conn:
        conn.execute(EvidenceHead.__table__.delete())  # heads are not evidence: no trigger guards them
    with pytest.raises(RuntimeError, match="evidence heads are missing"):
        ledger.record_outcomes([{"key": rows[0]["key"], "status": Status.SENT, "provider_message_id": "m-1"}])
    with ledger.engine.connect() as conn:
        assert conn.execute(select(Notification.status)).scalars().all() == ["pending"]
        assert conn.execute(select(Evidence.fact)).scalars().all() == ["generated"]


def test_every_shard_head_starts_at_genesis(ledger: Ledger) -> None:
    with ledger.engine.connect() as conn:
        heads = conn.execute(select(EvidenceHead.__table__).order_by(EvidenceHead.shard)).all()
    assert [tuple(head) for head in heads] == [(shard, 0, evidence.GENESIS) for shard in range(evidence.SHARDS)]
    assert ledger.evidence_records() == 0


# -- verify ------------------------------------------------------------------------------------------------------


def tamper(url: str, *statements: str) -> None:
    """Change stored evidence as someone with database access would. On PostgreSQL the append-only trigger refuses
    that even to the table's owner: a superuser's ``session_replication_role = replica`` turns triggers off for
    this session only (the test database's user is one), which is the kind of bypass verify exists to catch."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def verify(capsys: pytest.CaptureFixture[str], *options: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["audit", "verify", *options])
    return code, capsys.readouterr().out.strip()


def many_facts(ledger: Ledger, documents: int = 600) -> None:
    """Enough documents that every shard holds a chain of several records, and that PostgreSQL's writes (the
    documents, the outcomes, their evidence) take the COPY path."""
    ledger.record_documents([document(STATEMENT, f"S-{n}", n) for n in range(documents)])
    rows = [row for n in range(documents) for row in claims(STATEMENT, f"S-{n}", ("dev-1", ""))]
    ledger.claim(rows)
    ledger.record_outcomes([{"key": row["key"], "status": Status.SENT, "provider_message_id": "m"} for row in rows])


def a_chain(ledger: Ledger) -> list[tuple[int, int, int]]:
    """(id, shard, seq) of the busiest shard's records, in chain order."""
    table = Evidence.__table__
    with ledger.engine.connect() as conn:
        shard = conn.execute(
            select(table.c.shard).group_by(table.c.shard).order_by(text("count(*) DESC"), table.c.shard).limit(1)
        ).scalar_one()
        return [tuple(row) for row in conn.execute(
            select(table.c.id, table.c.shard, table.c.seq).where(table.c.shard == shard).order_by(table.c.seq)
        )]  # fmt: skip


def test_verify_passes_an_untouched_log(ledger: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    assert verify(capsys) == (0, "evidence intact: 0 record(s) checked in 0 shard(s)")
    many_facts(ledger)
    code, out = verify(capsys)
    shards = len({shard for shard, _ in _shards_and_seqs(ledger)})
    assert (code, out) == (0, f"evidence intact: 1200 record(s) checked in {shards} shard(s)")


def _shards_and_seqs(ledger: Ledger) -> list[tuple[int, int]]:
    with ledger.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(select(Evidence.shard, Evidence.seq))]


def test_verify_names_a_record_whose_timestamp_was_edited(
    ledger: Ledger, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    many_facts(ledger)
    chain = a_chain(ledger)
    record_id, shard, seq = chain[2]
    tamper(database_url, f"UPDATE evidence SET occurred_at = recorded_at WHERE id = {record_id}")
    code, out = verify(capsys)
    assert code == 1
    assert out.startswith(
        f"evidence broken at record id={record_id}, shard={shard}, seq={seq}: its content does not match its hash ("
    )


def test_verify_names_the_record_after_a_deleted_one_and_a_missing_last_one(
    ledger: Ledger, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    many_facts(ledger)
    chain = a_chain(ledger)
    tamper(database_url, f"DELETE FROM evidence WHERE id = {chain[-1][0]}")
    code, out = verify(capsys)
    assert (code, out.split(" (")[0]) == (
        1,
        f"evidence broken at a missing record, shard={chain[-1][1]}, seq={chain[-1][2]}: the chain ends at seq "
        f"{chain[-2][2]}, not at the shard's head",
    )
    tamper(database_url, f"DELETE FROM evidence WHERE id = {chain[1][0]}")
    code, out = verify(capsys)
    record_id, shard, seq = chain[2]
    assert (code, out.split(" (")[0]) == (
        1,
        f"evidence broken at record id={record_id}, shard={shard}, seq={seq}: sequence gap: expected seq {seq - 1}",
    )


def test_verify_names_the_first_of_two_reordered_records(
    ledger: Ledger, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    many_facts(ledger)
    (first, shard, seq), (second, _, next_seq) = a_chain(ledger)[1:3]
    tamper(
        database_url,
        f"UPDATE evidence SET seq = -1 WHERE id = {first}",
        f"UPDATE evidence SET seq = {seq} WHERE id = {second}",
        f"UPDATE evidence SET seq = {next_seq} WHERE id = {first}",
    )
    code, out = verify(capsys)
    assert (code, out.split(" (")[0]) == (
        1,
        f"evidence broken at record id={second}, shard={shard}, seq={seq}: its content does not match its hash",
    )


def test_verify_since_checks_only_later_records_but_their_link_to_earlier_ones(
    ledger: Ledger, database_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "utcnow", lambda: T0)
    many_facts(ledger, 100)
    monkeypatch.setattr(store, "utcnow", lambda: T0 + timedelta(hours=1))
    ledger.record_events([event(f"e-{n}", "opened", STATEMENT, f"S-{n}", T0) for n in range(100)])
    earlier = a_chain(ledger)[0][0]
    tamper(database_url, f"UPDATE evidence SET detail = 'edited' WHERE id = {earlier}")
    since = (T0 + timedelta(minutes=30)).isoformat()
    assert verify(capsys, "--since", since)[0] == 0
    assert verify(capsys)[0] == 1
    later = a_chain(ledger)[-1][0]
    tamper(database_url, f"UPDATE evidence SET device_id = 'dev-9' WHERE id = {later}")
    assert verify(capsys, "--since", since)[0] == 1


def test_postgresql_refuses_to_change_or_remove_evidence(postgres_url: str) -> None:
    ledger = Ledger(postgres_url)
    try:
        ledger.record_documents([document(STATEMENT, "S-1", 1)])
        for statement in ("UPDATE evidence SET detail = 'edited'", "DELETE FROM evidence", "TRUNCATE evidence"):
            with pytest.raises(LedgerError), ledger.engine.begin() as conn:
                conn.exec_driver_sql(statement)
        assert ledger.verify_evidence() == evidence.Verdict(1, 1, None)
    finally:
        ledger.dispose()


def test_an_alerts_follow_up_is_evidence_once_per_affected_customer_however_many(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The follow-up's facts stream in pages of one transaction (every shard locked once); marking it again, as a
    re-run after a crash between the post and the mark does, appends nothing."""
    monkeypatch.setattr(alerts, "_STREAM", {"stream_results": True, "yield_per": 7})  # pages of 7: many pages
    with ledger.engine.begin() as conn:
        conn.execute(
            OpsAlert.__table__.insert(),
            [
                {
                    "alert_id": "OPS-1",
                    "kind": "outage",
                    "severity": "critical",
                    "audience": "{}",
                    "message_key": "outage",
                    "occurred_at": T0,
                    "received_at": T0,
                    "state": "pushed",
                }
            ],
        )
    customers = [f"C{n:03d}" for n in range(50)]
    frame = pd.DataFrame(
        {
            "document_id": [f"alert:OPS-1/{customer}" for customer in customers],
            "job_id": "OPS-1",
            "customer_id": customers,
            "device_id": "",
        }
    )
    ledger.record_final(notification_rows(frame, "operational-alert", Status.SKIPPED, reason="no_device"))

    assert ledger.alerts.mark_follow_up_requested("operational-alert", "OPS-1", "ops-follow-up", T0) == 50
    assert ledger.alerts.mark_follow_up_requested("operational-alert", "OPS-1", "ops-follow-up", T0) == 0
    assert ledger.alerts.read("OPS-1")["state"] == "follow_up_requested"
    with ledger.engine.connect() as conn:
        handed_back = conn.execute(
            select(Evidence.document_id, Evidence.customer_id, Evidence.stage, Evidence.detail).where(
                Evidence.fact == "handed_back"
            )
        ).all()
    assert sorted(handed_back) == [
        (f"alert:OPS-1/{customer}", customer, "follow_up", "ops-follow-up") for customer in customers
    ]
    assert ledger.evidence_records() == 50
    assert ledger.verify_evidence().broken is None


def test_concurrent_appends_to_the_same_shards_keep_one_chain_each(ledger: Ledger) -> None:
    """Four writers, each registering documents that fall in every shard, at once: no chain forks or skips."""
    writers, calls, per_call = 4, 10, 64

    def register(writer: int) -> None:
        for call in range(calls):
            ledger.record_documents([document(STATEMENT, f"W{writer}-{call}-{n}", n) for n in range(per_call)])

    threads = [threading.Thread(target=register, args=(writer,)) for writer in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    verdict = ledger.verify_evidence()
    assert verdict.broken is None and verdict.records == writers * calls * per_call
    by_shard: dict[int, list[int]] = {}
    for shard, seq in _shards_and_seqs(ledger):
        by_shard.setdefault(shard, []).append(seq)
    assert all(sorted(seqs) == list(range(1, len(seqs) + 1)) for seqs in by_shard.values())


# -- trail and export ----------------------------------------------------------------------------------------------


def test_trail_prints_one_documents_facts_in_order(
    ledger: Ledger, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    every_case(ledger, clock)
    capsys.readouterr()
    assert main(["audit", "trail", "P-1"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "\t".join(line)
        for line in [
            ("time", "fact", "use_case", "provider", "provider_message_id", "detail"),
            ("2026-12-01T09:00:00Z", "generated", POLICY, "-", "-", "step-1"),
            ("2026-12-01T09:05:00Z", "notified", POLICY, "fcm", "m-notice", "notice"),
            ("2026-12-01T09:10:00Z", "delivered", POLICY, "-", "-", "-"),
            ("2026-12-01T09:20:00Z", "opened", POLICY, "-", "-", "-"),
            ("2026-12-01T09:30:00Z", "accessed", POLICY, "-", "-", "-"),
            ("2026-12-04T09:00:00Z", "reminded", POLICY, "fcm", "m-reminder", "reminder+3d"),
            ("2026-12-15T09:00:00Z", "handed_back", POLICY, "-", "-", "escalation; policy-ack-overdue"),
            ("2026-12-16T09:00:00Z", "acknowledged", POLICY, "-", "-", "-"),
        ]
    ]
    assert main(["audit", "trail", "no-such-document"]) == 1


def test_export_all_writes_one_row_per_document_in_each_format(ledger: Ledger, clock: Clock, tmp_path: Path) -> None:
    every_case(ledger, clock)
    ledger.record_documents([document("operational-alert", "=HYPERLINK(1)", 1)])
    head = ledger.evidence_head()
    documents = {
        (STATEMENT, "S-1"),
        (POLICY, "P-1"),
        (ACTION, "A-1"),
        (PAYMENT, "B-1"),
        ("operational-alert", "=HYPERLINK(1)"),
    }
    read: dict[str, list[dict[str, Any]]] = {}
    for fmt in ("csv", "parquet", "jsonl"):
        out = tmp_path / f"all.{fmt}"
        assert main(["audit", "export", "--use-case", "all", "--format", fmt, "--out", str(out)]) == 0
        assert json.loads((tmp_path / f"all.{fmt}.head").read_text()) == {
            "evidence_head": head,
            "use_case": "all",
            "rows": 5,
        }
        if fmt == "csv":
            with out.open(newline="", encoding="utf-8") as handle:
                read[fmt] = list(csv.DictReader(handle))
        elif fmt == "parquet":
            assert pq.read_schema(out).metadata[HEAD_METADATA] == head.encode()
            assert pq.read_schema(out).remove_metadata() == EVIDENCE_SCHEMA
            read[fmt] = pq.read_table(out).to_pylist()
        else:
            read[fmt] = [json.loads(line) for line in out.read_text().splitlines()]
        assert list(read[fmt][0]) == EVIDENCE_SCHEMA.names
    csv_ids = {(row["use_case"], row["document_id"]) for row in read["csv"]}
    assert csv_ids == (documents - {("operational-alert", "=HYPERLINK(1)")}) | {("operational-alert", "'=HYPERLINK(1)")}
    for fmt in ("parquet", "jsonl"):
        assert {(row["use_case"], row["document_id"]) for row in read[fmt]} == documents

    policy = next(row for row in read["jsonl"] if row["document_id"] == "P-1")
    assert {name: policy[name] for name in ("devices_notified", "pushes_sent", "reminders_sent", "failures")} == {
        "devices_notified": 1,
        "pushes_sent": 2,
        "reminders_sent": 1,
        "failures": 0,
    }
    assert (policy["generated_at"], policy["first_notified_at"], policy["delivered_at"]) == (
        "2026-12-01T09:00:00Z",
        "2026-12-01T09:05:00Z",
        "2026-12-01T09:10:00Z",
    )
    assert (policy["handed_back_at"], policy["acknowledged_at"], policy["evidence_records"]) == (
        "2026-12-15T09:00:00Z",
        "2026-12-16T09:00:00Z",
        8,
    )
    statement = next(row for row in read["csv"] if row["document_id"] == "S-1")
    assert (statement["devices_notified"], statement["failures"], statement["expired_at"]) == ("1", "1", "")
    action = next(row for row in read["parquet"] if row["document_id"] == "A-1")
    assert action["expired_at"] == T0 + timedelta(days=30)
    bill = next(row for row in read["jsonl"] if row["document_id"] == "B-1")
    assert (bill["completed_at"], bill["evidence_records"]) == ("2026-12-05T09:00:00Z", 2)

    out = tmp_path / "one.jsonl"
    assert main(["audit", "export", "--use-case", POLICY, "--format", "jsonl", "--out", str(out)]) == 0
    assert [json.loads(line)["document_id"] for line in out.read_text().splitlines()] == ["P-1"]
    window = ["--from", (T0 + timedelta(days=1)).isoformat(), "--to", (T0 + timedelta(days=20)).isoformat()]
    out = tmp_path / "window.csv"
    assert main(["audit", "export", "--use-case", "all", "--format", "csv", *window, "--out", str(out)]) == 0
    with out.open(newline="", encoding="utf-8") as handle:
        assert [row["document_id"] for row in csv.DictReader(handle)] == ["'=HYPERLINK(1)"]


def test_a_run_publishes_the_evidence_head_in_its_summary(prefect_harness: None, ledger: Ledger) -> None:
    """The head as the run left it, on the flow run's summary (under the use case's one key): outside the ledger."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from exstream_push.tasks.summary import publish_summary, summary_key

    @flow
    def a_run() -> None:
        ledger.record_documents([document(STATEMENT, "S-1", 1)])
        publish_summary(STATEMENT, "a run", {})

    before = ledger.evidence_head()
    a_run()
    head = ledger.evidence_head()
    assert head != before
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[summary_key(STATEMENT)]))
        )
    latest = max(artifacts, key=lambda artifact: artifact.created)  # the harness lives for the session
    assert latest.type == "markdown" and f"Evidence head after this run: `{head}`" in str(latest.data)
