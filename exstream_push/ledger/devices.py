"""The device aggregate: a customer's registered push targets, replaced on import, deactivated when the
provider refuses them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from exstream_push.ledger import bulk, store
from exstream_push.ledger.base import LedgerBase
from exstream_push.ledger.models import Device


class DeviceMixin(LedgerBase):
    """Devices: upserted by id, deactivated with a reason, read per customer."""

    def upsert_devices(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert or replace devices by device_id (an import is the latest truth about a device)."""
        if not rows:
            return
        table = Device.__table__
        if self._copies(rows):
            with self.engine.begin() as conn:
                bulk.upsert(conn, table, rows, "device_id")
            return
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(table)
        updatable = [c.name for c in table.columns if c.name != "device_id"]
        statement = statement.on_conflict_do_update(
            index_elements=["device_id"], set_={name: statement.excluded[name] for name in updatable}
        )
        with self.engine.begin() as conn:
            for chunk in store._chunks(rows):
                conn.execute(statement, list(chunk))

    def deactivate_devices(self, device_ids: Iterable[str], reason: str) -> int:
        ids = sorted(set(device_ids))
        if not ids:
            return 0
        changed = 0
        with self.engine.begin() as conn:
            for chunk in store._chunks(ids):
                result = conn.execute(
                    update(Device)
                    .where(Device.device_id.in_(chunk), Device.active.is_(True))
                    .values(active=False, deactivated_reason=reason, updated_at=store.utcnow())
                )
                changed += result.rowcount
        return changed

    def devices_for(self, customer_ids: Sequence[str]) -> pd.DataFrame:
        """Every device (active or not) of the given customers, as a frame."""
        table = Device.__table__
        columns = [c.name for c in table.columns]
        frames = []
        with self.engine.connect() as conn:
            for chunk in store._chunks(sorted(set(customer_ids))):
                if self.on_sqlite:
                    rows = bulk.sqlite_rows_among(conn, table, "customer_id", chunk)
                else:
                    rows = conn.execute(select(table).where(table.c.customer_id.in_(chunk))).fetchall()
                frames.append(pd.DataFrame(rows, columns=columns))
        if not frames:
            return pd.DataFrame(columns=columns)
        return pd.concat(frames, ignore_index=True)
