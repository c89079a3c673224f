"""What a failed ledger statement becomes: an error that names the failure and never carries a value.

SQLAlchemy's error text carries the statement's parameters (document ids, customer ids, refs) and PostgreSQL's
own message can carry row values (``DETAIL: Key (document_id)=(…) already exists``, ``Failing row contains (…)``).
Both reach logs, Prefect state messages and pickled results. The engine (``engine.make_engine``) turns every
database error into a ``LedgerError`` built here from the error's class, SQLSTATE, constraint, table and column
only, and the original stays out of the exception chain.

Each ``LedgerError`` is also the SQLAlchemy class it replaces (``except IntegrityError`` keeps working).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import URL
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError, ProgrammingError

from exstream_push.errors import DependencyUnavailable, ExstreamPushError
from exstream_push.settings import Settings

_BACKENDS = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}
_DATABASE_URL_SETTING = f"{Settings.model_config['env_prefix']}DATABASE_URL"


class LedgerError(ExstreamPushError, DBAPIError):
    """A ledger statement failed; the message says how, with identifiers only.

    ``__cause__`` and ``__context__`` read as None: the database's own exception, with its values, is never
    shown by a traceback or log line, and pickling keeps only the message.
    """

    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)
        self.statement = None
        self.params = None
        self.orig = None
        self.ismulti = None
        self.hide_parameters = True
        self.connection_invalidated = False
        self.detail = []

    def __str__(self) -> str:
        return str(self.args[0])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.args[0]!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), self.args

    __cause__ = property(lambda self: None, lambda self, value: None)  # type: ignore[assignment]
    __context__ = property(lambda self: None, lambda self, value: None)  # type: ignore[assignment]


class LedgerIntegrityError(LedgerError, IntegrityError):
    """A constraint refused a row: unique key, NOT NULL, CHECK, foreign key."""


class LedgerOperationalError(LedgerError, OperationalError):
    """The database could not run the statement: locked, out of space, connection lost."""

    retryable = True


class LedgerDataError(LedgerError, DataError):
    """A value did not fit its column: type, length, range."""


class LedgerProgrammingError(LedgerError, ProgrammingError):
    """The statement does not match the schema: a table or column missing."""


class LedgerUnavailable(DependencyUnavailable, LedgerOperationalError):
    """The ledger's database could not be reached: no connection could be opened, or it was lost.

    A dependency that is unavailable (its message and exit code) and an ``OperationalError`` as SQLAlchemy's was.
    """


# PEP 249 class names, as every driver spells them, to the replacement (the first found along the driver's MRO).
_REPLACEMENTS: dict[str, type[LedgerError]] = {
    "IntegrityError": LedgerIntegrityError,
    "OperationalError": LedgerOperationalError,
    "DataError": LedgerDataError,
    "ProgrammingError": LedgerProgrammingError,
}


def describe(original: BaseException) -> str:
    """The error's class, SQLSTATE, constraint, table and column as the driver reports them: never a value.

    PostgreSQL's message text is left out (its primary message names values for bad input, its DETAIL names the
    row); SQLite's is kept, since SQLite names constraints, tables and columns, never row values. Anything that is
    not a driver error (a bind processor refusing a value, say) is named by its class alone.
    """
    parts = [type(original).__name__]
    diagnostic = getattr(original, "diag", None)
    if diagnostic is not None:
        if getattr(original, "sqlstate", None):
            parts.append(f"SQLSTATE {original.sqlstate}")  # type: ignore[attr-defined]
        for label in ("constraint", "table", "column"):
            name = getattr(diagnostic, f"{label}_name", None)
            if name:
                parts.append(f"{label} {name}")
    elif isinstance(original, sqlite3.Error) and str(original):
        parts.append(str(original).splitlines()[0])
    return ", ".join(parts)


def ledger_error(original: BaseException, url: URL) -> LedgerError:
    """The replacement for a statement's error, of the SQLAlchemy class the driver's error maps to."""
    replacement = next(
        (_REPLACEMENTS[cls.__name__] for cls in type(original).__mro__ if cls.__name__ in _REPLACEMENTS),
        LedgerError,
    )
    return replacement(f"ledger statement failed on {backend_name(url)}: {describe(original)}")


@contextmanager
def driver_errors(conn: Connection) -> Iterator[None]:
    """The same replacement for statements sent on the driver's own cursor (COPY), which SQLAlchemy's error event
    does not see: PostgreSQL's COPY errors quote the refused value."""
    try:
        yield
    except conn.dialect.loaded_dbapi.Error as exc:
        raise ledger_error(exc, conn.engine.url) from None


def ledger_unavailable(original: BaseException, url: URL) -> LedgerUnavailable:
    """The replacement for a failed or lost connection: where the database was expected and what to check."""
    backend = url.get_backend_name()
    if backend == "sqlite":
        address = url.database or ":memory:"
        hint = f"check that its folder exists and is writable, and {_DATABASE_URL_SETTING}"
    else:
        where = URL.create(backend, url.username, host=url.host, port=url.port, database=url.database)
        address = where.render_as_string()
        hint = f"check that the database server is running there and accepts this user, and {_DATABASE_URL_SETTING}"
    return LedgerUnavailable(f"the ledger database ({backend_name(url)})", address, hint, _reason(original))


def backend_name(url: URL) -> str:
    return _BACKENDS.get(url.get_backend_name(), url.get_backend_name())


def _reason(original: BaseException) -> str:
    """The driver's reason for a failed connection, e.g. ``Connection refused``: libpq names the host, port, user
    and database in it, never the password."""
    first_line = str(original).strip().splitlines()[0] if str(original).strip() else type(original).__name__
    return first_line.rsplit("failed: ", 1)[-1].strip()
