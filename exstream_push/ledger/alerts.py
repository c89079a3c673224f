"""The operational-alert aggregate (use case 7): the alert, the devices a segment selects, what the push reached
and the follow-up posted for it. Large reads stream; nothing holds a segment of millions at once."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, case, func, select, update

from exstream_push.ledger import evidence, store
from exstream_push.ledger.models import Device, Notification, OpsAlert, PostBack
from exstream_push.status import EvidenceFact, OpsAlertState, Status

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

    def mark_follow_up_requested(self, use_case: str, alert_id: str, channel: str, posted_at: datetime | None) -> int:
        """Move the alert to ``follow_up_requested``. The first time its follow-up is marked posted (``posted_at``),
        each affected customer's document is evidence that the alert went to Exstream's ``channel`` for the formal
        letter (``handed_back``, at the moment of marking, as the follow-ups' hand-backs are), appended in the same
        transaction a page at a time, so a segment of millions is never held at once and a re-run appends nothing.
        Returns how many facts went in."""
        alerts = OpsAlert.__table__
        with self.engine.begin() as conn:
            first = 0
            if posted_at is not None:
                unmarked = (alerts.c.alert_id == alert_id) & alerts.c.follow_up_posted_at.is_(None)
                first = conn.execute(update(alerts).where(unmarked).values(follow_up_posted_at=posted_at)).rowcount
            state = OpsAlertState.FOLLOW_UP_REQUESTED.value
            conn.execute(update(alerts).where(alerts.c.alert_id == alert_id).values(state=state))
            if not first:
                return 0
            return evidence.append_all(conn, _follow_up_facts(conn, use_case, alert_id, channel, store.utcnow()))

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


def _follow_up_facts(
    conn: Connection, use_case: str, alert_id: str, channel: str, marked_at: datetime
) -> Iterator[list[dict[str, Any]]]:
    """Pages of ``handed_back`` facts, one per document of the alert (an affected customer), streamed."""
    table = Notification.__table__
    documents = (
        select(table.c.document_id, table.c.customer_id)
        .where(table.c.use_case == use_case, table.c.job_id == alert_id)
        .distinct()
        .order_by(table.c.document_id)
        # The statement's own options, not the connection's: the appends in between must not stream.
        .execution_options(stream_results=True, yield_per=_STREAM["yield_per"])
    )
    for page in conn.execute(documents).partitions():
        yield [
            evidence.fact(
                EvidenceFact.HANDED_BACK,
                document_id,
                marked_at,
                use_case=use_case,
                customer_id=customer_id,
                job_id=alert_id,
                stage="follow_up",
                detail=channel,
            )
            for document_id, customer_id in page
        ]
