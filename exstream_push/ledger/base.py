"""What every aggregate of the ledger shares: the engine, which bulk path a write takes, conflict-free inserts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Engine, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import SQLModel

from exstream_push.ledger import bulk, store


class LedgerBase:
    """The state ``Ledger.__init__`` sets up, and the write paths the aggregates share."""

    url: str
    engine: Engine
    use_copy: bool
    on_sqlite: bool

    def _copies(self, rows: Sequence[Any]) -> bool:
        return self.use_copy and len(rows) >= bulk.COPY_THRESHOLD

    def _insert_ignoring_conflicts(self, model: type[SQLModel], rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        table: Table = model.__table__  # type: ignore[attr-defined]
        if self.on_sqlite:
            for chunk in store._chunks(rows, store._SQLITE_WRITE_CHUNK):
                with self.engine.begin() as conn:
                    bulk.sqlite_insert_ignoring_conflicts(conn, table, chunk)
            return
        if self._copies(rows):
            with self.engine.begin() as conn:
                bulk.insert_ignoring_conflicts(conn, table, rows)
            return
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(table).on_conflict_do_nothing()
        with self.engine.begin() as conn:
            for chunk in store._chunks(rows):
                conn.execute(statement, list(chunk))
