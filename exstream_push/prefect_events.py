"""Prefect events through an outbox: written with the input that caused them, emitted when Prefect answers.

An accepted request must not be lost because the Prefect API is down, and must not be acknowledged before it is
stored. So an event is a row of ``OutboxEvent`` inserted in the same transaction as the input, and
``drain_outbox`` posts the rows still unemitted to ``POST {PREFECT_API_URL}/events`` (the self-hosted server's
events endpoint; webhooks are Cloud-only), marking ``emitted_at`` after Prefect accepted them. Delivery is
at-least-once: a crash between the POST and the mark sends a batch again, with the same event ids.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import Connection, func, insert, select, update

from exstream_push.ledger import Ledger, OutboxEvent
from exstream_push.ledger.store import utcnow

DRAIN_BATCH = 200
logger = logging.getLogger(__name__)

# One drain at a time per process: concurrent drains would only post the same rows twice.
_drain_lock = threading.Lock()


def enqueue(
    conn: Connection, event: str, resource_id: str, payload: Mapping[str, Any], occurred: datetime | None = None
) -> str:
    """Add an event to the outbox inside the caller's transaction; the payload carries ids only, never PII."""
    event_id = str(uuid.uuid4())
    conn.execute(
        insert(OutboxEvent),
        {
            "id": event_id,
            "event": event,
            "resource_id": resource_id,
            "payload": json.dumps(dict(payload), sort_keys=True),
            "occurred": occurred or utcnow(),
            "emitted_at": None,
        },
    )
    return event_id


def configured_api_url() -> str | None:
    """``PREFECT_API_URL`` as Prefect's own client reads it; None without a server (nothing to emit to)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    return url.rstrip("/") if url else None


def _auth_headers() -> dict[str, str]:
    """Prefect's client authentication: a basic-auth string for a self-hosted server, else an API key."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY

    auth_string, api_key = PREFECT_API_AUTH_STRING.value(), PREFECT_API_KEY.value()
    if auth_string:
        return {"Authorization": f"Basic {base64.b64encode(auth_string.encode()).decode()}"}
    if api_key:
        return {"Authorization": f"Bearer {api_key}"}
    return {}


def _utc(moment: datetime) -> datetime:
    """SQLite hands datetimes back without their zone; every one the ledger stores is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _as_prefect_event(row: OutboxEvent) -> dict[str, Any]:
    return {
        "id": row.id,
        "occurred": _utc(row.occurred).isoformat(),
        "event": row.event,
        "resource": {"prefect.resource.id": row.resource_id},
        "payload": json.loads(row.payload),
    }


def drain_outbox(ledger: Ledger, api_url: str | None, *, wait: bool = True, timeout: float = 10.0) -> int:
    """Emit unemitted outbox rows, oldest first, in batches; returns how many Prefect accepted.

    Stops at the first failure (API down, refused): the rows stay for the next drain, in the same order. With
    ``wait=False`` it returns 0 at once when another drain of this process is running: that one reads the outbox
    again before it stops, so a burst of requests does not park a thread per request on the lock.
    """
    if not api_url or not _drain_lock.acquire(blocking=wait):
        return 0
    try:
        return _drain(ledger, api_url, timeout)
    finally:
        _drain_lock.release()


def _drain(ledger: Ledger, api_url: str, timeout: float) -> int:
    table = OutboxEvent.__table__
    emitted = 0
    with httpx.Client(headers=_auth_headers(), timeout=timeout) as client:
        while True:
            with ledger.engine.connect() as conn:
                rows = conn.execute(
                    select(table)
                    .where(table.c.emitted_at.is_(None))
                    .order_by(table.c.occurred, table.c.id)
                    .limit(DRAIN_BATCH)
                ).all()
            if not rows:
                return emitted
            try:
                response = client.post(f"{api_url.rstrip('/')}/events", json=[_as_prefect_event(r) for r in rows])
                response.raise_for_status()
            except httpx.HTTPError as exc:
                logger.warning("Prefect did not take %d event(s) (%s); they stay in the outbox", len(rows), exc)
                return emitted
            with ledger.engine.begin() as conn:
                conn.execute(update(table).where(table.c.id.in_([r.id for r in rows])).values(emitted_at=utcnow()))
            emitted += len(rows)


def pending_count(ledger: Ledger) -> int:
    """Events accepted but not yet emitted: what a Prefect outage has left to send."""
    table = OutboxEvent.__table__
    with ledger.engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(table).where(table.c.emitted_at.is_(None))) or 0
