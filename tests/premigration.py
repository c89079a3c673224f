"""Ledgers as versions before migrations made them: main's ``create_all`` schema, frozen as SQL, with rows.

The schema comes from ``tests/fixtures/ledger/``, never from today's models, so a model change can't make the
"old" ledger look new.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Boolean, DateTime, Engine, Integer, MetaData, String, Table, select

FIXTURES = Path(__file__).parent / "fixtures" / "ledger"
MAIN = "main-76085ed"
ROWS_PER_TABLE = 3
# Columns a CHECK constraint holds to a vocabulary get a value from it.
_VOCABULARY = {
    ("notification", "status"): "sent",
    ("rejectedrecord", "status"): "quarantined",
    ("document", "state"): "open",
    ("deliveryexception", "state"): "open",
    ("opsalert", "state"): "received",
}


# What the versions before main lacked, undone from main's schema.
OLDER = {
    "main": [],
    "before-workrun-content": ['ALTER TABLE "workrun" DROP COLUMN "content"'],
    "before-work-queue": ['DROP TABLE "workbatch"', 'DROP TABLE "workrun"'],
}


def create_premigration_ledger(engine: Engine, version: str = "main") -> None:
    """The tables ``Ledger`` created at ``version`` (a key of ``OLDER``), and no ``alembic_version``."""
    script = (FIXTURES / f"{MAIN}.{engine.dialect.name}.sql").read_text()
    body = "\n".join(line for line in script.splitlines() if not line.startswith("--"))
    with engine.begin() as conn:
        for statement in [*body.split(";"), *OLDER[version]]:
            if statement.strip():
                conn.exec_driver_sql(statement)


def _value(table: str, column: Any, number: int) -> Any:
    if (table, column.name) in _VOCABULARY:
        return _VOCABULARY[table, column.name]
    if column.nullable and number == 1:
        return None  # NULLs must survive too
    if isinstance(column.type, Boolean):
        return number % 2 == 0
    if isinstance(column.type, Integer):
        return 100 + number
    if isinstance(column.type, DateTime):
        return datetime(2026, 11, 2, 9, number, 30, 123456, tzinfo=UTC)
    if isinstance(column.type, String):  # VARCHAR and TEXT
        return f"{table}.{column.name}.{number}"
    raise TypeError(f"no sample value for {table}.{column.name} ({column.type!r})")


def _tables(engine: Engine) -> list[Table]:
    metadata = MetaData()
    metadata.reflect(engine)
    return [table for table in metadata.sorted_tables if table.name != "alembic_version"]


def fill_every_table(engine: Engine) -> None:
    """A few rows in every table, through the reflected schema; integer ids come from the database's own sequence."""
    with engine.begin() as conn:
        for table in _tables(engine):
            columns = [c for c in table.columns if not (c.primary_key and isinstance(c.type, Integer))]
            rows = [
                {column.name: _value(table.name, column, number) for column in columns}
                for number in range(ROWS_PER_TABLE)
            ]
            conn.execute(table.insert(), rows)


def every_row(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Every row of every ledger table, in primary-key order."""
    with engine.connect() as conn:
        return {
            table.name: [dict(row._mapping) for row in conn.execute(select(table).order_by(*table.primary_key.columns))]
            for table in _tables(engine)
        }
