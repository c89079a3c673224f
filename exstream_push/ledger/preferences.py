"""The preference aggregate (use case 6): what customers stated, and when their devices or statements changed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from exstream_push.ledger import store
from exstream_push.ledger.models import Device, Preference


class PreferenceRepository:
    """One per ledger (``ledger.preferences``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def changes(self, since: datetime | None, until: datetime) -> list[tuple[str, datetime]]:
        """(customer_id, updated_at) of every device and every stated preference changed in (since, until]."""
        found: list[tuple[str, datetime]] = []
        with self.engine.connect() as conn:
            for model in (Device, Preference):
                condition = model.updated_at <= until
                if since is not None:
                    condition &= model.updated_at > since
                found.extend(
                    (customer_id, updated_at)
                    for customer_id, updated_at in conn.execute(
                        select(model.customer_id, model.updated_at).where(condition)
                    )
                )
        return found

    def stated(self, customer_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Each customer's stated preferences (the ``preference`` row as a dict), for those who stated any."""
        stated: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for chunk in store._chunks(list(customer_ids)):
                for row in conn.execute(select(Preference.__table__).where(Preference.customer_id.in_(chunk))):
                    stated[row.customer_id] = dict(row._mapping)
        return stated
