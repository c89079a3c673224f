"""Alembic's environment for the ledger, run by ``exstream_push.ledger.migrations`` on the connection it hands over
(inside the transaction that holds the upgrade lock)."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import exstream_push.ledger.models  # noqa: F401  (the tables register on SQLModel.metadata)
from exstream_push.ledger.migrations import CONTEXT_OPTIONS

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("the ledger's migrations run online, through exstream_push.ledger.migrations")
context.configure(connection=connection, target_metadata=SQLModel.metadata, **CONTEXT_OPTIONS)
with context.begin_transaction():
    context.run_migrations()
