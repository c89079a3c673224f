"""What every aggregate of the ledger shares: the engine, which bulk path a write takes, conflict-free inserts."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import SQLModel

from exstream_push.ledger import bulk, evidence, store

# The evidence of a write's rows, found in the write's transaction once they are in (``ledger/evidence.py``); told
# whether every row went in, when the insert says so, it need not read back which did.
FactsOf = Callable[[Connection, Sequence[Mapping[str, Any]], bool], list[dict[str, Any]]]


class LedgerBase:
    """The state ``Ledger.__init__`` sets up, and the write paths the aggregates share."""

    url: str
    engine: Engine
    use_copy: bool
    on_sqlite: bool

    def _copies(self, rows: Sequence[Any]) -> bool:
        return self.use_copy and len(rows) >= bulk.COPY_THRESHOLD

    def _insert_ignoring_conflicts(
        self, model: type[SQLModel], rows: Sequence[Mapping[str, Any]], facts_of: FactsOf | None = None
    ) -> None:
        """Insert, leaving rows already present alone; ``facts_of`` gives the evidence of the rows that went in,
        appended in the same transaction."""
        if not rows:
            return
        table: Table = model.__table__  # type: ignore[attr-defined]
        if self.on_sqlite:
            for chunk in store._chunks(rows, store._SQLITE_WRITE_CHUNK):
                with self.engine.begin() as conn:
                    inserted = bulk.sqlite_insert_ignoring_conflicts(conn, table, chunk)
                    if facts_of is not None:
                        evidence.append(conn, facts_of(conn, chunk, inserted == len(chunk)))
            return
        with self.engine.begin() as conn:
            inserted = -1
            if self._copies(rows):
                inserted = bulk.insert_ignoring_conflicts(conn, table, rows)
            else:
                dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
                statement = dialect.insert(table).on_conflict_do_nothing()
                for chunk in store._chunks(rows):
                    conn.execute(statement, list(chunk))
            if facts_of is not None:
                all_new = inserted == len(rows)
                evidence.append(conn, [f for chunk in store._chunks(rows) for f in facts_of(conn, chunk, all_new)])
