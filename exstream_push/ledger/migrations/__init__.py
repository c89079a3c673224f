"""The ledger's schema history as Alembic revisions, and the one way a ledger is brought to the newest of them.

Every process opens the ledger, so a ledger already at the newest revision costs one look at ``alembic_version``,
without importing Alembic (a quarter of a second of every command's start): the newest revision is the highest
number among the revision files. Only a ledger behind it takes a lock (an advisory lock on PostgreSQL,
``BEGIN IMMEDIATE`` on SQLite), looks again and migrates with Alembic, so processes opening a new database at once
migrate it once.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Column, Connection, Engine, inspect, text
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

from exstream_push.errors import ExstreamPushError
from exstream_push.ledger.migrations import baseline

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

FOLDER = Path(__file__).parent
# Any number every process agrees on: PostgreSQL serialises the upgrades of one database on it.
_POSTGRES_LOCK = 0x6C6564676572


class LedgerSchemaError(ExstreamPushError):
    """The ledger's schema cannot be brought to this version's (made by a newer version, or lacking a column that
    existing rows would need a value for)."""


def _render_item(kind: str, item: Any, _context: Any) -> str | Literal[False]:
    """A generated revision spells SQLModel's column types as SQLAlchemy's, so it never depends on the models."""
    if kind == "type" and isinstance(item, AutoString):
        return "sa.String()"
    if kind == "type" and isinstance(item, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


# How ``env.py`` runs revisions and how a generated one is written: batch operations, so a revision that alters a
# table also runs on SQLite, which recreates the table.
CONTEXT_OPTIONS: dict[str, Any] = {"render_as_batch": True, "compare_type": True, "render_item": _render_item}


def config(connection: Connection | None = None, folder: Path = FOLDER) -> Config:
    """Alembic's configuration without an ``alembic.ini``: the revisions shipped in this package, on ``connection``."""
    from alembic.config import Config

    settings = Config()
    settings.set_main_option("script_location", str(folder))
    settings.attributes["connection"] = connection
    return settings


@cache
def _script(folder: Path = FOLDER) -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(config(folder=folder))


def head(folder: Path = FOLDER) -> str:
    """The newest revision; more than one head (two branches each adding a revision) stops here, loudly."""
    return str(_script(folder).get_current_head())


def newest_revision(folder: Path = FOLDER) -> str:
    """The newest revision, read without Alembic: the revision command names each file after its revision's number
    (``0003_one_outbox.py`` is revision ``0003``), so the highest number is the head (a test holds the two equal)."""
    return max(path.name.partition("_")[0] for path in (folder / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))


def current(connection: Connection) -> tuple[str, ...]:
    """The revisions the ledger is stamped with (Alembic's ``alembic_version`` rows); empty for a new database or
    one made before migrations."""
    if not inspect(connection).has_table("alembic_version"):
        return ()
    return tuple(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())


def upgrade(engine: Engine, folder: Path = FOLDER) -> None:
    """Bring the ledger at ``engine`` to the newest revision in ``folder``, whatever made it."""
    with engine.connect() as conn:
        if current(conn) == (newest_revision(folder),):
            return
    with engine.connect() as conn:
        _lock(conn)
        _migrate(conn, folder)
        conn.commit()


def _lock(conn: Connection) -> None:
    """Opens the transaction the upgrade runs in, held alone: another process waits, then finds the work done."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _POSTGRES_LOCK})
    elif conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _migrate(conn: Connection, folder: Path) -> None:
    from alembic import command
    from alembic.util import CommandError

    stamped = current(conn)
    if stamped == (head(folder),):
        return
    for revision in stamped:
        try:
            _script(folder).get_revision(revision)
        except CommandError:
            raise LedgerSchemaError(
                f"the ledger is at schema revision {revision}, which this version of exstream-push does not know: "
                "it was migrated by a newer version; run that version, or upgrade this installation"
            ) from None
    settings = config(conn, folder)
    if not stamped and set(inspect(conn).get_table_names()) & set(baseline.metadata.tables):
        _adopt(conn)
        command.stamp(settings, baseline.REVISION)
    command.upgrade(settings, "head")


def _adopt(conn: Connection) -> None:
    """A ledger made before migrations gets what the baseline has and it lacks (tables, nullable columns such as
    ``workrun.content``, indexes), so stamping it at the baseline is true."""
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    baseline.metadata.create_all(conn)  # the tables it lacks, with their indexes
    inspector = inspect(conn)
    operations = Operations(MigrationContext.configure(conn))
    for table in baseline.metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable:
                raise LedgerSchemaError(
                    f"the ledger's table {table.name} lacks the column {column.name}, which its rows need a value "
                    "for: it was made by a version too old to upgrade in place"
                )
            operations.add_column(table.name, Column(column.name, column.type, nullable=True))
        indexes = {index["name"] for index in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexes:
                index.create(conn)
