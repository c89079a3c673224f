"""Notices by customer and moment, whatever the use case: what a frequency cap counts and quiet hours hold back."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import pandas as pd
from sqlalchemy import Engine, func, select, update

from exstream_push.ledger import store
from exstream_push.ledger.models import Notification
from exstream_push.status import Status

# A notice counts against the cap once it has gone, is going, or waits for quiet hours to end.
CAPPED_STATUSES = (Status.SENT.value, Status.PENDING.value, Status.DEFERRED.value)
# The device of a notification posted to an Exstream channel (a follow-up's hand-back), not pushed: not capped.
EXSTREAM_DEVICE_PREFIX = "exstream:"


class NoticeRepository:
    """One per ledger (``ledger.notices``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def recent_counts(
        self, use_case: str, customer_ids: Sequence[str], as_of: datetime, window: timedelta
    ) -> pd.Series:
        """Pushes (a document at a stage, however many devices) per customer decided in (as_of − window, as_of];
        a hand-back to Exstream is no push."""
        table = Notification.__table__
        counts: dict[str, int] = {}
        with self.engine.connect() as conn:
            for chunk in store._chunks(list(customer_ids)):
                notices = (
                    select(table.c.customer_id, table.c.document_id, table.c.stage)
                    .where(
                        table.c.use_case == use_case,
                        table.c.customer_id.in_(chunk),
                        table.c.status.in_(CAPPED_STATUSES),
                        ~table.c.device_id.startswith(EXSTREAM_DEVICE_PREFIX),
                        table.c.as_of > as_of - window,
                        table.c.as_of <= as_of,
                    )
                    .distinct()
                    .subquery()
                )
                rows = conn.execute(select(notices.c.customer_id, func.count()).group_by(notices.c.customer_id))
                counts.update({customer_id: count for customer_id, count in rows})
        return pd.Series(counts, dtype="int64")

    def release_deferred(self, use_case: str, as_of: datetime) -> int:
        """Deferred notifications whose quiet hours ended by ``as_of`` become ``pending``, their key unchanged, and
        move to ``as_of``: that is when they go, which the cap counts."""
        table = Notification.__table__
        with self.engine.begin() as conn:
            return conn.execute(
                update(table)
                .where(table.c.use_case == use_case, table.c.status == Status.DEFERRED, table.c.not_before <= as_of)
                .values(status=Status.PENDING, as_of=as_of, updated_at=store.utcnow())
            ).rowcount
