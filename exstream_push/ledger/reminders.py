"""The payment-reminder aggregate (use case 2): reminder documents, their payments, and their notices by stage.

Customers are paged by id so one customer's documents are always read, and decided, together."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import DateTime, Engine, Select, String, column, delete, func, select, update, values

from exstream_push.ledger import evidence, store
from exstream_push.ledger.models import Device, Document, Notification
from exstream_push.status import PAYMENT_DETAIL, DocumentState, EvidenceFact, Status


@dataclass(frozen=True)
class CustomerPage:
    """Customers ``first <= customer_id < before`` (no upper bound when ``before`` is None)."""

    first: str
    before: str | None


def _in_page(column: Any, page: CustomerPage) -> Any:
    return column >= page.first if page.before is None else (column >= page.first) & (column < page.before)


class ReminderRepository:
    """Reads and writes of the payment-reminder use case; one per ledger (``ledger.reminders``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _frame(self, query: Select) -> pd.DataFrame:
        with self.engine.connect() as conn:
            result = conn.execute(query)
            return pd.DataFrame(result.fetchall(), columns=list(result.keys()))

    def _pages(self, customer_ids: Select, size: int) -> list[CustomerPage]:
        """Pages of ``size`` distinct customers, by the first customer id of each; the database numbers them."""
        distinct = customer_ids.distinct().subquery()
        column = distinct.c[0]
        numbered = select(column.label("customer_id"), func.row_number().over(order_by=column).label("n")).subquery()
        starts_query = select(numbered.c.customer_id).where((numbered.c.n - 1) % size == 0).order_by(numbered.c.n)
        with self.engine.connect() as conn:
            starts = list(conn.scalars(starts_query))
        if not starts:
            return []
        return [CustomerPage(first, before) for first, before in zip(starts, [*starts[1:], None], strict=True)]

    def pending_pages(self, use_case: str, size: int) -> list[CustomerPage]:
        """Pages of customers with notifications still ``pending``."""
        table = Notification.__table__
        customers = select(table.c.customer_id).where(table.c.use_case == use_case, table.c.status == Status.PENDING)
        return self._pages(customers, size)

    def open_pages(self, use_case: str, size: int) -> list[CustomerPage]:
        """Pages of customers with open documents."""
        table = Document.__table__
        customers = select(table.c.customer_id).where(table.c.use_case == use_case, table.c.state == DocumentState.OPEN)
        return self._pages(customers, size)

    def forget_documents(self, use_case: str, job_id: str, step_id: str, document_ids: Sequence[str]) -> None:
        """Drop documents registered from one delivery file, so a corrected manifest registers them afresh."""
        document = Document.__table__
        with self.engine.begin() as conn:
            for chunk in store._chunks(list(document_ids)):
                conn.execute(
                    delete(document).where(
                        document.c.use_case == use_case,
                        document.c.job_id == job_id,
                        document.c.step_id == step_id,
                        document.c.document_id.in_(chunk),
                    )
                )

    def known_documents(self, use_case: str, document_ids: Sequence[str]) -> pd.DataFrame:
        """``document_id``, ``known_customer``, ``job_id`` and ``state`` of those of the documents registered."""
        document = Document.__table__
        rows: list[Any] = []
        with self.engine.connect() as conn:
            for chunk in store._chunks(list(document_ids)):
                rows += conn.execute(
                    select(document.c.document_id, document.c.customer_id, document.c.job_id, document.c.state).where(
                        document.c.use_case == use_case, document.c.document_id.in_(chunk)
                    )
                ).fetchall()
        return pd.DataFrame(rows, columns=["document_id", "known_customer", "job_id", "state"])

    def mark_paid(self, use_case: str, paid: pd.DataFrame) -> None:
        """Open documents of ``paid`` (``document_id``, ``paid_at``) become ``paid`` at the moment they were (a
        document paid twice, at its first payment). Each one marked is evidence that its customer did what its
        reminders asked: ``completed`` (detail ``payment``) at that moment, appended in the same transaction."""
        if paid.empty:
            return
        first = paid.sort_values("paid_at", kind="stable").drop_duplicates("document_id")
        document = Document.__table__
        facts = []
        with self.engine.begin() as conn:
            payments = zip(first["document_id"], first["paid_at"], strict=True)
            for chunk in store._chunks([(document_id, at.to_pydatetime()) for document_id, at in payments]):
                given = (
                    values(column("document_id", String), column("paid_at", DateTime(timezone=True)), name="paid")
                    .data(list(chunk))
                    .cte("paid")
                )
                marked = conn.execute(
                    update(document)
                    .where(
                        document.c.use_case == use_case,
                        document.c.document_id == given.c.document_id,
                        document.c.state == DocumentState.OPEN,
                    )
                    .values(state=DocumentState.PAID, state_changed_at=given.c.paid_at)
                    .returning(
                        document.c.document_id, document.c.customer_id, document.c.job_id, document.c.state_changed_at
                    )
                )
                facts += [
                    evidence.fact(
                        EvidenceFact.COMPLETED,
                        document_id,
                        paid_at,
                        use_case=use_case,
                        customer_id=customer_id,
                        job_id=job_id,
                        detail=PAYMENT_DETAIL,
                    )
                    for document_id, customer_id, job_id, paid_at in marked
                ]
            evidence.append(conn, facts)

    def pending_with_consent(self, use_case: str, page: CustomerPage) -> pd.DataFrame:
        """Pending notifications of a page, with their document's state and content and their device's consent."""
        notification, document, device = Notification.__table__, Document.__table__, Device.__table__
        return self._frame(
            select(
                notification.c.key,
                notification.c.document_id,
                notification.c.job_id,
                notification.c.customer_id,
                notification.c.device_id,
                notification.c.stage,
                document.c.state,
                document.c.document_type,
                document.c.locale,
                document.c.ref,
                document.c.attributes,
                device.c.provider,
                device.c.token,
                device.c.webpush_p256dh,
                device.c.webpush_auth,
                device.c.locale.label("device_locale"),
                device.c.active,
                device.c.push_opt_in,
                device.c.categories,
            )
            .join(
                document,
                (document.c.use_case == notification.c.use_case)
                & (document.c.document_id == notification.c.document_id),
            )
            .join(device, device.c.device_id == notification.c.device_id, isouter=True)
            .where(
                notification.c.use_case == use_case,
                notification.c.status == Status.PENDING,
                _in_page(notification.c.customer_id, page),
            )
        )

    def open_documents(self, use_case: str, page: CustomerPage) -> pd.DataFrame:
        table = Document.__table__
        return self._frame(
            select(
                table.c.document_id,
                table.c.job_id,
                table.c.customer_id,
                table.c.document_type,
                table.c.locale,
                table.c.ref,
                table.c.attributes,
            ).where(
                table.c.use_case == use_case, table.c.state == DocumentState.OPEN, _in_page(table.c.customer_id, page)
            )
        )

    def decided_stages(self, use_case: str, page: CustomerPage) -> pd.DataFrame:
        """Every (document, stage) of the page decided already, whatever came of it."""
        table = Notification.__table__
        query = (
            select(table.c.document_id, table.c.stage)
            .where(table.c.use_case == use_case, table.c.stage != "", _in_page(table.c.customer_id, page))
            .distinct()
        )
        with self.engine.connect() as conn:
            return pd.DataFrame(conn.execute(query).fetchall(), columns=["document_id", "stage"])

    def run_outcomes(self, use_case: str, as_of: datetime) -> Iterator[pd.DataFrame]:
        """``stage``, ``status``, ``reason`` and the document's ``attributes`` of every notification decided by the
        run at ``as_of``, streamed."""
        notification, document = Notification.__table__, Document.__table__
        query = (
            select(notification.c.stage, notification.c.status, notification.c.reason, document.c.attributes)
            .join(
                document,
                (document.c.use_case == notification.c.use_case)
                & (document.c.document_id == notification.c.document_id),
            )
            .where(notification.c.use_case == use_case, notification.c.as_of == as_of)
        )
        with self.engine.connect().execution_options(stream_results=True, yield_per=50_000) as conn:
            for rows in conn.execute(query).partitions():
                yield pd.DataFrame(rows, columns=["stage", "status", "reason", "attributes"])
