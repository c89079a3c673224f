"""The ledger's schema comes from Alembic revisions: a new ledger is exactly what the models describe, one made
before migrations is upgraded in place with every row kept, and processes opening a ledger at once all succeed."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Connection, Engine, Integer, Table, inspect, text
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

from exstream_push.ledger import Ledger, evidence, migrations
from exstream_push.ledger.migrations import CONTEXT_OPTIONS, LedgerSchemaError, baseline
from exstream_push.ledger.migrations.__main__ import revision
from exstream_push.ledger.store import make_engine
from tests.premigration import OLDER, ROWS_PER_TABLE, create_premigration_ledger, every_row, fill_every_table


def _differences(conn: Connection) -> list[Any]:
    """What Alembic's autogenerate would still change to make the database match the models."""
    return compare_metadata(MigrationContext.configure(conn, opts=CONTEXT_OPTIONS), SQLModel.metadata)


def _schema(engine: Engine) -> dict[str, dict[str, Any]]:
    """Everything reflection tells about the ledger's tables, CHECK constraints included (autogenerate skips them)."""
    inspector = inspect(engine)
    schema = {}
    for name in set(inspector.get_table_names()) - {"alembic_version"}:
        columns = inspector.get_columns(name)
        indexes = inspector.get_indexes(name)
        schema[name] = {
            "columns": {c["name"]: (repr(c["type"]), c["nullable"], c.get("default")) for c in columns},
            "primary_key": inspector.get_pk_constraint(name)["constrained_columns"],
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in indexes),
            "unique": sorted((u["name"], tuple(u["column_names"])) for u in inspector.get_unique_constraints(name)),
            "checks": sorted((c["name"], c["sqltext"]) for c in inspector.get_check_constraints(name)),
        }
    return schema


def _at_head(engine: Engine) -> bool:
    with engine.connect() as conn:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [migrations.head()]


def test_a_new_ledger_is_exactly_what_the_models_describe(database_url: str) -> None:
    ledger = Ledger(database_url)
    try:
        assert _at_head(ledger.engine)
        with ledger.engine.connect() as conn:
            assert _differences(conn) == []
        migrated = _schema(ledger.engine)
        with ledger.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE alembic_version")
            SQLModel.metadata.drop_all(conn)
            SQLModel.metadata.create_all(conn)
        assert _schema(ledger.engine) == migrated
    finally:
        ledger.dispose()


@pytest.mark.parametrize("version", OLDER)
def test_a_ledger_made_before_migrations_is_upgraded_with_every_row_kept(database_url: str, version: str) -> None:
    engine = make_engine(database_url)
    create_premigration_ledger(engine, version)
    fill_every_table(engine)
    before = every_row(engine)
    engine.dispose()
    assert before and all(len(rows) == ROWS_PER_TABLE for rows in before.values())

    ledger = Ledger(database_url)
    try:
        after = every_row(ledger.engine)
        if version == "before-workrun-content":
            assert [row.pop("content") for row in after["workrun"]] == [None] * ROWS_PER_TABLE
        # Outbox rows from before revision 0003 gain no resource labels and the first position, and from before
        # revision 0005 no related resources.
        added = [(row.pop("resource_labels"), row.pop("position"), row.pop("related")) for row in after["outboxevent"]]
        assert added == [(None, 0, None)] * ROWS_PER_TABLE
        # Devices from before revision 0004 were all FCM ones, with no Web Push keys.
        reached = [(row.pop("provider"), row.pop("webpush_p256dh"), row.pop("webpush_auth")) for row in after["device"]]
        assert reached == [("fcm", None, None)] * ROWS_PER_TABLE
        assert {name: after[name] for name in before} == before
        # Revision 0006 starts every evidence shard's chain at its genesis head; every other new table is empty.
        heads = after.pop("evidencehead")
        assert [(row["shard"], row["seq"], row["hash"]) for row in heads] == [
            (shard, 0, evidence.GENESIS) for shard in range(evidence.SHARDS)
        ]
        assert all(after[name] == [] for name in set(after) - set(before))
        assert set(after) >= set(baseline.metadata.tables)
        assert _at_head(ledger.engine)
        with ledger.engine.connect() as conn:
            assert _differences(conn) == []
        upgraded = _schema(ledger.engine)
    finally:
        ledger.dispose()

    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE alembic_version")
        SQLModel.metadata.drop_all(conn)
    engine.dispose()
    fresh = Ledger(database_url)
    try:
        assert upgraded == _schema(fresh.engine)
    finally:
        fresh.dispose()


def test_a_ledger_migrated_by_a_newer_version_is_refused_with_a_clear_error(database_url: str) -> None:
    Ledger(database_url).dispose()
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(LedgerSchemaError, match=r"revision 9999, .* newer version"):
        Ledger(database_url)


_OPEN_AND_TELL_WHETHER_ALEMBIC_RAN = """
import sys
from exstream_push.ledger import Ledger
Ledger(sys.argv[1]).dispose()
print("alembic" in sys.modules)
"""


@pytest.mark.parametrize(("stamped", "migrates"), [("newest", False), ("0002", True)])
def test_only_a_ledger_behind_the_newest_revision_is_migrated(database_url: str, stamped: str, migrates: bool) -> None:
    """Every command opens the ledger: one at the newest revision costs a look at ``alembic_version``, not Alembic
    (a fresh process tells whether it had to import it); one stamped at an older revision is brought to the head."""
    engine = make_engine(database_url)
    try:
        if stamped == "newest":
            migrations.upgrade(engine)
        else:
            from alembic import command

            with engine.begin() as conn:
                command.upgrade(migrations.config(conn), stamped)
    finally:
        engine.dispose()
    opened = subprocess.run(
        [sys.executable, "-c", _OPEN_AND_TELL_WHETHER_ALEMBIC_RAN, database_url],
        capture_output=True,
        text=True,
        check=True,
    )
    assert opened.stdout.split() == [str(migrates)]
    engine = make_engine(database_url)
    try:
        assert _at_head(engine)
        with engine.connect() as conn:
            assert _differences(conn) == []
    finally:
        engine.dispose()


def test_the_newest_revision_read_without_alembic_is_alembics_head() -> None:
    assert migrations.newest_revision() == migrations.head()


_OPEN_WHEN_TOLD = """
import sys, time
from pathlib import Path
from exstream_push.ledger import Ledger
url, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
ready.touch()
while not go.exists():
    time.sleep(0.005)
Ledger(url).dispose()
"""


@pytest.mark.parametrize("start", ["empty", "premigration"])
def test_processes_opening_one_ledger_at_once_all_succeed(database_url: str, tmp_path: Path, start: str) -> None:
    """Each process imports first and waits for the word, so they all reach the upgrade together."""
    if start == "premigration":
        engine = make_engine(database_url)
        create_premigration_ledger(engine, "before-workrun-content")
        engine.dispose()
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{number}" for number in range(3)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN_WHEN_TOLD, database_url, str(flag), str(go)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for flag in ready
    ]
    while not all(flag.exists() for flag in ready) and all(process.poll() is None for process in processes):
        time.sleep(0.05)
    go.touch()
    for process in processes:
        _, errors = process.communicate(timeout=300)
        assert process.returncode == 0, errors

    engine = make_engine(database_url)
    try:
        assert _at_head(engine)
        with engine.connect() as conn:
            assert _differences(conn) == []
    finally:
        engine.dispose()


def test_opening_a_sqlite_ledger_waits_out_another_process_write_lock(tmp_path: Path) -> None:
    """SQLite refuses a switch to WAL at once, without waiting, while another connection holds a write lock:
    the engine waits it out rather than failing the run (the race of processes opening one fresh ledger)."""
    path = tmp_path / "ledger.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE other_writer (value INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO other_writer VALUES (1)")
    release = threading.Timer(0.5, holder.execute, ["COMMIT"])
    release.start()
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        release.join()
        engine.dispose()
        holder.close()


def test_adding_a_table_is_one_generated_revision(database_url: str, tmp_path: Path) -> None:
    """The revision command writes a migration that needs no model code and brings a ledger to the models."""
    folder = tmp_path / "migrations"
    shutil.copytree(migrations.FOLDER, folder, ignore=shutil.ignore_patterns("__pycache__"))
    added = Table(
        "postbackrow",
        SQLModel.metadata,
        Column("id", Integer, primary_key=True),
        Column("job_id", AutoString, nullable=False, index=True),
        Column("posted_at", UTCDateTime),
    )
    following = f"{int(migrations.head(folder)) + 1:04d}"
    try:
        path = revision("post-back rows", folder)
        assert path.parent == folder / "versions" and path.name.startswith(f"{following}_")
        assert "sqlmodel" not in path.read_text()
        assert migrations.newest_revision(folder) == following

        engine = make_engine(database_url)
        try:
            migrations.upgrade(engine, folder)
            with engine.connect() as conn:
                assert migrations.current(conn) == (following,)
                assert _differences(conn) == []
        finally:
            engine.dispose()
    finally:
        SQLModel.metadata.remove(added)
