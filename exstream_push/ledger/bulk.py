"""Bulk paths for many rows at once, one per database.

PostgreSQL: COPY rows into a temporary table, then one set-based statement moves them into place. A multi-row
INSERT sends every value as a bind parameter and PostgreSQL plans each chunk; COPY streams the rows in its own
format and the INSERT … SELECT / UPDATE … FROM that follows is planned once, whatever the row count.

SQLite runs in this process, so what SQLAlchemy's executemany adds is Python: a parameter dictionary built, and
every value passed through its type's bind processor, row by row. Here the rows become plain tuples column by
column — each column's bind processor taken once, each shared value object converted once — and go to the
driver's executemany: the same values are stored, and what remains is mostly SQLite's own work.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Dialect, Table

from exstream_push.ledger.errors import driver_errors

# Below this many rows a multi-row statement is as fast as creating, filling and dropping a temporary table.
COPY_THRESHOLD = 500

# What a send outcome writes to its notification, in the order both outcome paths take them.
OUTCOME_COLUMNS = ("key", "status", "reason", "provider_message_id", "attempts", "updated_at")


def copy_columns(table: Table, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The columns the rows give, plus those with a Python-side default (COPY does not apply them)."""
    given = set(rows[0])
    return [
        column.name
        for column in table.columns
        if column.name in given or (column.default is not None and column.default.is_scalar)
    ]


def _default(table: Table, name: str) -> Any:
    return table.columns[name].default.arg  # type: ignore[union-attr]


def _value(row: Mapping[str, Any], table: Table, name: str) -> Any:
    return row[name] if name in row else _default(table, name)


def copy_into_temp(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """COPY ``rows`` into a temporary table shaped like ``columns`` of ``table``; it is dropped at commit."""
    temp = f"_bulk_{table.name}"
    quoted = ", ".join(f'"{name}"' for name in columns)
    raw = conn.connection.driver_connection
    with driver_errors(conn), raw.cursor() as cursor:
        cursor.execute(
            f'CREATE TEMPORARY TABLE "{temp}" ON COMMIT DROP AS SELECT {quoted} FROM "{table.name}" WITH NO DATA'
        )
        with cursor.copy(f'COPY "{temp}" ({quoted}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row([_value(row, table, name) for name in columns])
    return temp


def insert_ignoring_conflicts(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> int:
    """``INSERT … ON CONFLICT DO NOTHING`` by way of COPY; returns how many rows were inserted."""
    columns = copy_columns(table, rows)
    temp = copy_into_temp(conn, table, rows, columns)
    quoted = ", ".join(f'"{name}"' for name in columns)
    return conn.exec_driver_sql(
        f'INSERT INTO "{table.name}" ({quoted}) SELECT {quoted} FROM "{temp}" ON CONFLICT DO NOTHING'
    ).rowcount


def upsert(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]], key: str) -> None:
    """``INSERT … ON CONFLICT (key) DO UPDATE`` every other column, by way of COPY; the last row for a key wins."""
    columns = copy_columns(table, rows)
    temp = copy_into_temp(conn, table, rows, columns)
    quoted = ", ".join(f'"{name}"' for name in columns)
    updates = ", ".join(f'"{name}" = EXCLUDED."{name}"' for name in columns if name != key)
    # ON CONFLICT DO UPDATE refuses to touch one row twice in a statement: keep one row per key.
    conn.exec_driver_sql(
        f'INSERT INTO "{table.name}" ({quoted}) SELECT DISTINCT ON ("{key}") {quoted} FROM "{temp}" '
        f'ORDER BY "{key}", ctid DESC ON CONFLICT ("{key}") DO UPDATE SET {updates}'
    )


def copy_rows(conn: Connection, table: Table, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> None:
    """COPY ``rows`` (values in ``columns`` order) straight into ``table`` (an append-only log: no conflict to
    handle, nothing to move after)."""
    quoted = ", ".join(f'"{name}"' for name in columns)
    raw = conn.connection.driver_connection
    with driver_errors(conn), raw.cursor() as cursor, cursor.copy(f'COPY "{table.name}" ({quoted}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row(row)


def driver_rows(conn: Connection, statement: str, parameters: Sequence[Any]) -> list[tuple[Any, ...]]:
    """A read of plain values (text, numbers) on the driver's own cursor: tuples, without a Row object each."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        with driver_errors(conn):
            cursor.execute(statement, tuple(parameters))
            return cursor.fetchall()
    finally:
        cursor.close()


def pending_among(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]], pending: str) -> set[str]:
    """Claim idempotency keys (insert, ignoring those present) and return those still ``pending``, in one pass."""
    columns = copy_columns(table, rows)
    temp = copy_into_temp(conn, table, rows, columns)
    quoted = ", ".join(f'"{name}"' for name in columns)
    conn.exec_driver_sql(f'INSERT INTO "{table.name}" ({quoted}) SELECT {quoted} FROM "{temp}" ON CONFLICT DO NOTHING')
    result = conn.exec_driver_sql(
        f'SELECT n."key" FROM "{table.name}" n JOIN "{temp}" t ON n."key" = t."key" WHERE n."status" = %(pending)s',
        {"pending": pending},
    )
    return {key for (key,) in result}


def update_outcomes(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write send outcomes (key, status, reason, provider_message_id, attempts added, updated_at) with one UPDATE."""
    temp = copy_into_temp(conn, table, rows, OUTCOME_COLUMNS)
    conn.exec_driver_sql(
        f'UPDATE "{table.name}" n SET "status" = t."status", "reason" = t."reason", '
        f'"provider_message_id" = t."provider_message_id", "attempts" = n."attempts" + t."attempts", '
        f'"updated_at" = t."updated_at" FROM "{temp}" t WHERE n."key" = t."key"'
    )


# -- SQLite ------------------------------------------------------------------------------------------------------


def _converted_once(values: list[Any], process: Callable[[Any], Any]) -> list[Any]:
    """``process`` applied once per value object: a batch's rows share theirs (created_at, updated_at, as_of).

    Keyed by identity: equality would merge values that store differently (a plain DateTime keeps each offset's
    wall time).
    """
    done: dict[int, Any] = {}
    return [done[ident] if (ident := id(value)) in done else done.setdefault(ident, process(value)) for value in values]


def bound_tuples(
    dialect: Dialect, table: Table, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]
) -> list[tuple[Any, ...]]:
    """``rows`` as the driver-level tuples SQLAlchemy would bind for ``columns`` (UTCDateTime: UTC text on SQLite).

    As in SQLAlchemy's executemany, the first row decides which columns are given; the others take their default.
    """
    converted = []
    for name in columns:
        column = table.columns[name]
        values = [row[name] for row in rows] if name in rows[0] else [_default(table, name)] * len(rows)
        process = column.type.dialect_impl(dialect).bind_processor(dialect)
        converted.append(values if process is None else _converted_once(values, process))
    return list(zip(*converted, strict=True))


def sqlite_insert_ignoring_conflicts(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> int:
    """``INSERT … ON CONFLICT DO NOTHING`` as one driver-level executemany; returns how many rows were inserted."""
    columns = copy_columns(table, rows)
    quoted = ", ".join(f'"{name}"' for name in columns)
    marks = ", ".join("?" for _ in columns)
    result = conn.exec_driver_sql(
        f'INSERT INTO "{table.name}" ({quoted}) VALUES ({marks}) ON CONFLICT DO NOTHING',
        bound_tuples(conn.dialect, table, rows, columns),
    )
    return result.rowcount


def sqlite_keys_with_status(conn: Connection, table: Table, keys: Sequence[str], status: str) -> set[str]:
    """Those of ``keys`` (at most a statement's bind variables) whose row has ``status``.

    The unary ``+`` keeps SQLite off the status index, which it otherwise picks: a claim's keys are all pending,
    so every lookup would walk all pending rows instead of one primary-key entry.
    """
    marks = ", ".join("?" for _ in keys)
    result = conn.exec_driver_sql(
        f'SELECT "key" FROM "{table.name}" WHERE "key" IN ({marks}) AND +"status" = ?', (*keys, status)
    )
    return {key for (key,) in result}


def sqlite_update_outcomes(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write send outcomes, as ``update_outcomes`` does, with one driver-level executemany UPDATE by key."""
    conn.exec_driver_sql(
        f'UPDATE "{table.name}" SET "status" = ?, "reason" = ?, "provider_message_id" = ?, '
        f'"attempts" = "attempts" + ?, "updated_at" = ? WHERE "key" = ?',
        bound_tuples(conn.dialect, table, rows, [*OUTCOME_COLUMNS[1:], "key"]),
    )


def sqlite_rows_among(conn: Connection, table: Table, column: str, values: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Every row of ``table`` whose ``column`` is among ``values``, as tuples of what SQLAlchemy would return.

    Plain tuples, converted column by column with each type's result processor, instead of a Row object each.
    """
    dialect = conn.dialect
    marks = ", ".join("?" for _ in values)
    quoted = ", ".join(f'"{c.name}"' for c in table.columns)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        with driver_errors(conn):
            rows = cursor.execute(
                f'SELECT {quoted} FROM "{table.name}" WHERE "{column}" IN ({marks})', tuple(values)
            ).fetchall()
    finally:
        cursor.close()
    if not rows:
        return []
    converted = []
    for c, raw in zip(table.columns, zip(*rows, strict=True), strict=True):
        process = c.type.dialect_impl(dialect).result_processor(dialect, None)
        converted.append(raw if process is None else [process(value) for value in raw])
    return list(zip(*converted, strict=True))
