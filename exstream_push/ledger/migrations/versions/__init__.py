"""The ledger's Alembic revisions, a package so setuptools installs them as one (Alembic skips this file)."""
