"""``python -m exstream_push.ledger.migrations revision -m "what changed"`` writes the next revision into
``versions/``: Alembic's autogenerate, comparing the models with a scratch SQLite ledger at the newest revision."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from exstream_push.ledger.migrations import FOLDER, config, upgrade


def revision(message: str, folder: Path = FOLDER) -> Path:
    """The new revision's file, numbered after the last one so that two branches adding one collide visibly."""
    with tempfile.TemporaryDirectory() as scratch:
        engine = create_engine(f"sqlite:///{scratch}/ledger.db")
        try:
            upgrade(engine, folder)
            with engine.begin() as conn:
                settings = config(conn, folder)
                number = sum(1 for _ in ScriptDirectory.from_config(settings).walk_revisions()) + 1
                script = command.revision(settings, message=message, autogenerate=True, rev_id=f"{number:04d}")
        finally:
            engine.dispose()
    assert script is not None and not isinstance(script, list)
    return Path(script.path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m exstream_push.ledger.migrations")
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("revision", help="write the next revision from the models' changes")
    new.add_argument("-m", "--message", required=True, help="what the revision changes, in a few words")
    args = parser.parse_args(argv)
    print(revision(args.message))


if __name__ == "__main__":
    main()
