"""The ledger's engine: SQLite pragmas, PostgreSQL's driver and time zone, and value-free database errors."""

from __future__ import annotations

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
        engine = create_engine(url, connect_args={"timeout": 60}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
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


def _replace_error(context: ExceptionContext, url: URL) -> None:
    """Raise the value-free replacement of a database error: ``LedgerUnavailable`` when no connection could be
    opened or it was lost, else the ``LedgerError`` of its class. A pre-ping is left to SQLAlchemy (it reconnects),
    and what SQLAlchemy does not wrap (KeyboardInterrupt, errors of our own code) passes unchanged."""
    if context.is_pre_ping or context.sqlalchemy_exception is None:
        return
    if context.connection is None or context.is_disconnect:
        raise ledger_unavailable(context.original_exception, url)
    raise ledger_error(context.original_exception, url)
