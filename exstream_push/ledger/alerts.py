"""The operational-alert aggregate (use case 7): the alert, the devices a segment selects, what the push reached
and the follow-up posted for it. Large reads stream; nothing holds a segment of millions at once."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, case, func, select, update

from exstream_push.ledger.models import Device, Notification, OpsAlert, PostBack
from exstream_push.status import Status

_STREAM = {"stream_results": True, "yield_per": 10_000}


class AlertRepository:
    """One per ledger (``ledger.alerts``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def read(self, alert_id: str) -> dict[str, Any] | None:
        """The ``ops_alert`` row as a dict, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(OpsAlert.__table__).where(OpsAlert.alert_id == alert_id)).mappings().first()
        return dict(row) if row is not None else None

    def mark(self, alert_id: str, state: str, **moments: datetime | None) -> None:
        """Move the alert to ``state``, setting the moment columns given with it."""
        with self.engine.begin() as conn:
            conn.execute(update(OpsAlert).where(OpsAlert.alert_id == alert_id).values(state=state, **moments))

    def device_customers(self, attributes: Mapping[str, str]) -> Iterator[str]:
        """Each customer with an active device matching every attribute (column → value) once, in order."""
        table = Device.__table__
        conditions = [table.c.active.is_(True)]
        conditions += [table.c[name] == value for name, value in attributes.items()]
        statement = select(table.c.customer_id).where(*conditions).distinct().order_by(table.c.customer_id)
        with self.engine.connect().execution_options(**_STREAM) as conn:
            yield from conn.scalars(statement)

    def customer_outcomes(self, use_case: str, alert_id: str) -> Iterator[tuple[str, int]]:
        """(customer_id, devices the alert reached), one row per affected customer, in customer order."""
        table = Notification.__table__
        sent = func.sum(case((table.c.status == Status.SENT.value, 1), else_=0))
        statement = (
            select(table.c.customer_id, sent)
            .where(table.c.use_case == use_case, table.c.job_id == alert_id)
            .group_by(table.c.customer_id)
            .order_by(table.c.customer_id)
        )
        with self.engine.connect().execution_options(**_STREAM) as conn:
            for customer_id, devices in conn.execute(statement):
                yield customer_id, int(devices or 0)

    def report(
        self, use_case: str, channel: str, alert_id: str
    ) -> tuple[dict[str, Any], tuple[int, int, int], list[int]] | None:
        """In one read: the alert row; its customers, customers notified and devices notified; the rows of each
        follow-up post on ``channel``, oldest first. None without the alert."""
        alerts, post_backs, notifications = OpsAlert.__table__, PostBack.__table__, Notification.__table__
        sent = notifications.c.status == Status.SENT.value
        with self.engine.connect() as conn:
            alert = conn.execute(select(alerts).where(alerts.c.alert_id == alert_id)).mappings().first()
            if alert is None:
                return None
            customers, customers_notified, devices_notified = conn.execute(
                select(
                    func.count(notifications.c.customer_id.distinct()),
                    func.count(case((sent, notifications.c.customer_id)).distinct()),
                    func.count(case((sent, 1))),
                ).where(notifications.c.use_case == use_case, notifications.c.job_id == alert_id)
            ).one()
            posts = (
                conn.execute(
                    select(post_backs.c.rows)
                    .where(post_backs.c.channel == channel, post_backs.c.job_id == alert_id)
                    .order_by(post_backs.c.posted_at)
                )
                .scalars()
                .all()
            )
        return dict(alert), (customers, customers_notified, devices_notified), list(posts)
