"""A failed ledger statement carries no customer data: not in its message, traceback, pickle, logs, Prefect states
or persisted results. An unreachable database is named by its address, never with its password."""

from __future__ import annotations

import logging
import pickle
import traceback
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from exstream_push.errors import DependencyUnavailable
from exstream_push.ledger import Ledger, bulk
from exstream_push.ledger.errors import LedgerError, LedgerUnavailable
from exstream_push.ledger.store import notification_rows, utcnow
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push_dev.emulators.samples import write_manifest
from tests.oracle import read_scenario

CUSTOMER_ID, DOCUMENT_ID, JOB_ID = "CUST-7730-SECRET", "DOC-2026-4411-SECRET", "JOB-LEAK-1"
NOT_A_STATUS = "delivered-ish"  # a value too: a traceback shows source lines, so the test names values by constant


def exception_texts(exc: BaseException) -> list[str]:
    """Everything an exception shows: message, repr, the traceback a log line prints, and its pickle."""
    return [str(exc), repr(exc), "".join(traceback.format_exception(exc)), pickle.dumps(exc).decode("latin-1")]


def leaked(values: set[str], texts: list[str]) -> set[str]:
    return {value for value in values if any(value in text for text in texts)}


def refuse_documents(ledger: Ledger) -> None:
    """A real constraint that refuses every document row, as a ledger write failing mid-run would."""
    with ledger.engine.begin() as conn:
        if ledger.engine.dialect.name == "postgresql":
            conn.exec_driver_sql('ALTER TABLE "document" ADD CONSTRAINT "no_documents" CHECK (false) NOT VALID')
        else:
            conn.exec_driver_sql(
                'CREATE TRIGGER "no_documents" BEFORE INSERT ON "document" '
                "BEGIN SELECT RAISE(ABORT, 'no_documents'); END"
            )


def test_a_refused_write_names_the_constraint_and_no_value(database_url: str) -> None:
    ledger = Ledger(database_url)
    try:
        frame = pd.DataFrame(
            {"document_id": [DOCUMENT_ID], "job_id": [JOB_ID], "customer_id": [CUSTOMER_ID], "device_id": ["d1"]}
        )
        with pytest.raises(IntegrityError) as refused:
            ledger.record_final(notification_rows(frame, "statement-ready", NOT_A_STATUS))
        exc = refused.value
        assert isinstance(exc, LedgerError) and exc.exit_code == 1
        assert "status_in_vocabulary" in str(exc)
        assert leaked({CUSTOMER_ID, DOCUMENT_ID, JOB_ID, NOT_A_STATUS}, exception_texts(exc)) == set()
        assert exc.__cause__ is None and exc.__context__ is None
        assert str(pickle.loads(pickle.dumps(exc))) == str(exc)
    finally:
        ledger.dispose()


def test_a_value_copy_refuses_is_not_quoted(postgres_url: str) -> None:
    """Large writes COPY on the driver's own cursor, out of SQLAlchemy's sight; PostgreSQL quotes a refused
    value in its COPY error (``invalid input syntax for type integer: "…"``)."""
    ledger = Ledger(postgres_url)
    try:
        rows = [
            {"use_case": "statement-ready", "document_id": f"{DOCUMENT_ID}-{number}", "job_id": JOB_ID,
             "step_id": "manifest", "position": number, "customer_id": CUSTOMER_ID, "document_type": "STATEMENT",
             "ref": f"ref-{number}", "first_seen_at": utcnow()}
            for number in range(bulk.COPY_THRESHOLD + 1)
        ]  # fmt: skip
        rows[-1]["position"] = CUSTOMER_ID
        with pytest.raises(DataError) as refused:
            ledger.record_documents(rows)
        assert isinstance(refused.value, LedgerError) and "SQLSTATE 22P02" in str(refused.value)
        assert leaked({CUSTOMER_ID, DOCUMENT_ID, JOB_ID}, exception_texts(refused.value)) == set()
    finally:
        ledger.dispose()


@pytest.mark.parametrize(
    "url, address",
    [
        ("postgresql://exstream:s3cr3t-pw@127.0.0.1:{port}/ledger", "postgresql://exstream@127.0.0.1:{port}/ledger"),
        ("sqlite:///{file}/ledger.db", "{file}/ledger.db"),
    ],
)
def test_an_unreachable_database_is_named_by_address_without_password(tmp_path: Path, url: str, address: str) -> None:
    from exstream_push_dev.emulators.server import free_port

    port, file = free_port(), tmp_path / "a-file-not-a-folder"
    file.write_text("")
    with pytest.raises(LedgerUnavailable) as unreachable:
        Ledger(url.format(port=port, file=file))
    exc = unreachable.value
    assert isinstance(exc, DependencyUnavailable) and isinstance(exc, OperationalError) and exc.exit_code == 69
    assert address.format(port=port, file=file) in str(exc) and "EXSTREAM_PUSH_DATABASE_URL" in str(exc)
    assert "s3cr3t-pw" not in "".join(exception_texts(exc))


def test_a_failed_flow_leaves_no_customer_data_in_logs_states_or_results(
    prefect_harness: None,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    from exstream_push.flows.statement_ready import statement_ready

    monkeypatch.setenv("EXSTREAM_PUSH_DATABASE_URL", database_url)
    manifest = tmp_path / "_STDDELIVERYFILE.xml"
    write_manifest(manifest, 40, seed=31, job_id=JOB_ID)
    (tmp_path / "devices.csv").write_text("device_id,customer_id,platform,token\n")
    documents = read_scenario(manifest, tmp_path / "devices.csv", JOB_ID).documents
    values = {v for keys in documents.values() for k, v in keys.items() if k not in ("DocumentType", "Locale")}
    assert len(values) > 100
    refuse_documents(ledger_for(get_settings()))
    storage = tmp_path / "results"

    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: storage}), caplog.at_level(logging.INFO):
        state = statement_ready(manifest=str(manifest), job_id=JOB_ID, return_state=True)
    assert state.is_failed()
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, LedgerError) and "no_documents" in str(exc)

    APILogHandler().flush()  # the run's log lines are in the API before they are read
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(state.state_details.flow_run_id)
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
        api_logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id])))
    failed_tasks = [run for run in task_runs if run.state is not None and run.state.is_failed()]
    assert failed_tasks and api_logs
    persisted = [path.read_bytes().decode("latin-1") for path in storage.rglob("*") if path.is_file()]
    assert persisted, "Prefect persisted the failed flow's exception: it is part of what is checked"
    formatter = logging.Formatter()
    log_lines = [formatter.format(record) for record in caplog.records]
    assert any("Traceback" in line for line in log_lines)  # the engine's failure records were captured

    texts = [
        *exception_texts(exc),
        state.message or "",
        flow_run.state.message or "",
        *(run.state.message or "" for run in failed_tasks),
        *(log.message for log in api_logs),
        *log_lines,
        *persisted,
    ]
    assert leaked(values, texts) == set()
