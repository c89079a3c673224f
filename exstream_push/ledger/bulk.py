"""PostgreSQL bulk paths: COPY rows into a temporary table, then one set-based statement moves them into place.

A multi-row INSERT sends every value as a bind parameter and PostgreSQL plans each chunk; COPY streams the rows
in its own format and the INSERT … SELECT / UPDATE … FROM that follows is planned once, whatever the row count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Table

# Below this many rows a multi-row statement is as fast as creating, filling and dropping a temporary table.
COPY_THRESHOLD = 500


def copy_columns(table: Table, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The columns the rows give, plus those with a Python-side default (COPY does not apply them)."""
    given = set(rows[0])
    return [
        column.name
        for column in table.columns
        if column.name in given or (column.default is not None and column.default.is_scalar)
    ]


def _value(row: Mapping[str, Any], table: Table, name: str) -> Any:
    if name in row:
        return row[name]
    return table.columns[name].default.arg  # type: ignore[union-attr]


def copy_into_temp(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """COPY ``rows`` into a temporary table shaped like ``columns`` of ``table``; it is dropped at commit."""
    temp = f"_bulk_{table.name}"
    quoted = ", ".join(f'"{name}"' for name in columns)
    raw = conn.connection.driver_connection
    with raw.cursor() as cursor:
        cursor.execute(
            f'CREATE TEMPORARY TABLE "{temp}" ON COMMIT DROP AS SELECT {quoted} FROM "{table.name}" WITH NO DATA'
        )
        with cursor.copy(f'COPY "{temp}" ({quoted}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row([_value(row, table, name) for name in columns])
    return temp


def insert_ignoring_conflicts(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """``INSERT … ON CONFLICT DO NOTHING`` by way of COPY."""
    columns = copy_columns(table, rows)
    temp = copy_into_temp(conn, table, rows, columns)
    quoted = ", ".join(f'"{name}"' for name in columns)
    conn.exec_driver_sql(f'INSERT INTO "{table.name}" ({quoted}) SELECT {quoted} FROM "{temp}" ON CONFLICT DO NOTHING')


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
    columns = ["key", "status", "reason", "provider_message_id", "attempts", "updated_at"]
    temp = copy_into_temp(conn, table, rows, columns)
    conn.exec_driver_sql(
        f'UPDATE "{table.name}" n SET "status" = t."status", "reason" = t."reason", '
        f'"provider_message_id" = t."provider_message_id", "attempts" = n."attempts" + t."attempts", '
        f'"updated_at" = t."updated_at" FROM "{temp}" t WHERE n."key" = t."key"'
    )
