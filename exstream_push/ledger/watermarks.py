"""Watermarks: how far a poller or a sync has read."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from exstream_push.ledger.base import LedgerBase
from exstream_push.ledger.models import Watermark


class WatermarkMixin(LedgerBase):
    """One value per name, upserted."""

    def read_watermark(self, name: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.scalar(select(Watermark.value).where(Watermark.name == name))

    def write_watermark(self, name: str, value: str, at: datetime) -> None:
        """Upsert: how far a poller or a sync has read, so a restart neither misses nor repeats."""
        table = Watermark.__table__
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(table).values(name=name, value=value, updated_at=at)
        statement = statement.on_conflict_do_update(
            index_elements=["name"],
            set_={"value": statement.excluded.value, "updated_at": statement.excluded.updated_at},
        )
        with self.engine.begin() as conn:
            conn.execute(statement)
