"""The ledger's engine: SQLite pragmas, PostgreSQL's driver and time zone, and value-free database errors."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, ExceptionContext, make_url

from exstream_push.ledger.errors import ledger_error, ledger_unavailable


def make_engine(url: str) -> Engine:
    """The ledger's engine: parameters hidden from SQLAlchemy's error text, and every database error replaced by
    a ``LedgerError`` that carries no value (see ``ledger.errors``), whichever statement raised it."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database:
            try:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ledger_unavailable(exc, parsed) from None
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_SECONDS, "cached_statements": SQLITE_CACHED_STATEMENTS},
            hide_parameters=True,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            _switch_to_wal(cursor)
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    elif parsed.get_backend_name() == "postgresql":
        if parsed.get_driver_name() in ("psycopg2", ""):
            parsed = parsed.set(drivername="postgresql+psycopg")
        engine = create_engine(
            parsed, pool_pre_ping=True, connect_args={"options": "-c timezone=UTC"}, hide_parameters=True
        )
    else:
        engine = create_engine(parsed, pool_pre_ping=True, hide_parameters=True)

    @event.listens_for(engine, "handle_error")
    def _value_free_errors(context: ExceptionContext) -> None:
        _replace_error(context, engine.url)

    return engine


SQLITE_BUSY_SECONDS = 60
"""How long a SQLite connection waits for another process's lock before it gives up."""
SQLITE_CACHED_STATEMENTS = 32
"""Prepared statements a SQLite connection keeps (the driver's default is 128). A read or claim of 2,000 keys is a
statement of its own for each list length, a quarter to half a megabyte prepared, and each batch's last chunks bring
new lengths, so with 128 kept a worker's SQLite memory grows batch by batch (5.6 and 7.0 MB per worker at exit after
50,000 customers) towards ~45 MB per connection of statements it will not run again; with 32, ~11 MB
(``tests/test_memory.py``). The statements a send runs over and over stay among the last 32."""


def _switch_to_wal(cursor: sqlite3.Cursor) -> None:
    """Put the database file in WAL mode, waiting out another process's write lock.

    SQLite answers a journal-mode change with "database is locked" at once, without calling its busy handler,
    while another connection holds a write lock; several processes opening a fresh ledger together hit exactly
    that. The mode is stored in the file, so a database already in WAL needs no change."""
    deadline = time.monotonic() + SQLITE_BUSY_SECONDS
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def _replace_error(context: ExceptionContext, url: URL) -> None:
    """Raise the value-free replacement of a database error: ``LedgerUnavailable`` when no connection could be
    opened or it was lost, else the ``LedgerError`` of its class. A pre-ping is left to SQLAlchemy (it reconnects),
    and what SQLAlchemy does not wrap (KeyboardInterrupt, errors of our own code) passes unchanged."""
    if context.is_pre_ping or context.sqlalchemy_exception is None:
        return
    if context.connection is None or context.is_disconnect:
        raise ledger_unavailable(context.original_exception, url)
    raise ledger_error(context.original_exception, url)
