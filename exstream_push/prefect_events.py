"""Prefect events through one outbox: written with the input that caused them, emitted when Prefect answers.

An accepted request must not be lost because the Prefect API is down, and must not be acknowledged before it is
stored. So an event is a row of the ledger's outbox inserted in the same transaction as the input (an ingress
request, the watcher's cursor advance), and ``drain_outbox`` — the one emitter — posts the rows still unemitted to
``POST {PREFECT_API_URL}/events`` (the self-hosted server's events endpoint; webhooks are Cloud-only), marking
them emitted after Prefect accepted them. Delivery is at-least-once: a crash between the POST and the mark sends a
batch again, with the same event ids, which the Prefect server drops when it has seen them.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from exstream_push.ledger import Ledger
from exstream_push.ledger.outbox import Transaction, add_events
from exstream_push.ledger.store import utcnow

DRAIN_BATCH = 200
RESOURCE_ID = "prefect.resource.id"
ROLE = "prefect.resource.role"
NAME = "prefect.resource.name"
logger = logging.getLogger(__name__)

# One drain at a time per process: concurrent drains would only post the same rows twice.
_drain_lock = threading.Lock()


def emitting_run() -> list[dict[str, str]]:
    """The flow run (and its flow) storing an event, as related resources; none outside a run (the ingress).

    Stored with the event, so it names the run that stored it even when another run emits it after a crash.
    """
    from prefect.context import FlowRunContext, TaskRunContext

    flow_context = FlowRunContext.get()
    if flow_context is not None and flow_context.flow_run is not None:
        run = flow_context.flow_run
        related = [{RESOURCE_ID: f"prefect.flow-run.{run.id}", ROLE: "flow-run", NAME: run.name}]
        if run.flow_id is not None:
            related.append({RESOURCE_ID: f"prefect.flow.{run.flow_id}", ROLE: "flow", NAME: flow_context.flow.name})
        return related
    task_context = TaskRunContext.get()
    if task_context is not None and task_context.task_run.flow_run_id is not None:
        return [{RESOURCE_ID: f"prefect.flow-run.{task_context.task_run.flow_run_id}", ROLE: "flow-run"}]
    return []


def _related_column(related: Sequence[Mapping[str, str]]) -> str | None:
    return json.dumps([dict(resource) for resource in related], sort_keys=True) if related else None


def enqueue(
    conn: Transaction, event: str, resource_id: str, payload: Mapping[str, Any], occurred: datetime | None = None
) -> str:
    """Add an event to the outbox inside the caller's transaction; the payload carries ids only, never PII."""
    event_id = str(uuid.uuid4())
    add_events(
        conn,
        [
            {
                "id": event_id,
                "event": event,
                "resource_id": resource_id,
                "payload": json.dumps(dict(payload), sort_keys=True),
                "occurred": occurred or utcnow(),
                "related": _related_column(emitting_run()),
            }
        ],
    )
    return event_id


def outbox_rows(events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Prefect events as JSON (``Event.model_dump(mode="json")``) → outbox rows, keeping their ids, labels, related
    resources and order."""
    rows = []
    for position, event in enumerate(events):
        labels = {name: value for name, value in event["resource"].items() if name != RESOURCE_ID}
        rows.append(
            {
                "id": str(event["id"]),
                "event": event["event"],
                "resource_id": event["resource"][RESOURCE_ID],
                "resource_labels": json.dumps(labels, sort_keys=True) if labels else None,
                "payload": json.dumps(event.get("payload") or {}, sort_keys=True),
                "occurred": datetime.fromisoformat(str(event["occurred"])),
                "position": position,
                "related": _related_column(event.get("related") or ()),
            }
        )
    return rows


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


def _as_prefect_event(row: Mapping[str, Any]) -> dict[str, Any]:
    labels = json.loads(row["resource_labels"]) if row["resource_labels"] else {}
    return {
        "id": row["id"],
        "occurred": _utc(row["occurred"]).isoformat(),
        "event": row["event"],
        "resource": {RESOURCE_ID: row["resource_id"], **labels},
        "payload": json.loads(row["payload"]),
        "related": json.loads(row["related"]) if row["related"] else [],
    }


def post_events(client: httpx.Client, api_url: str, events: list[dict[str, Any]]) -> None:
    """One ``POST /events``; raises unless the server accepted them."""
    response = client.post(f"{api_url.rstrip('/')}/events", json=events)
    response.raise_for_status()


def drain_outbox(
    ledger: Ledger, api_url: str | None, *, wait: bool = True, timeout: float = 10.0, raise_errors: bool = False
) -> int:
    """Emit unemitted outbox rows, oldest first, in batches; returns how many Prefect accepted.

    Stops at the first failure (API down, refused): the rows stay for the next drain, in the same order, and with
    ``raise_errors`` the failure is raised (a flow's task then retries or fails). With ``wait=False`` it returns 0
    at once when another drain of this process is running: that one reads the outbox again before it stops, so a
    burst of requests does not park a thread per request on the lock.
    """
    if not api_url or not _drain_lock.acquire(blocking=wait):
        return 0
    try:
        return _drain(ledger, api_url, timeout, raise_errors)
    finally:
        _drain_lock.release()


def _drain(ledger: Ledger, api_url: str, timeout: float, raise_errors: bool) -> int:
    emitted = 0
    with httpx.Client(headers=_auth_headers(), timeout=timeout) as client:
        while True:
            rows = ledger.outbox.unemitted(DRAIN_BATCH)
            if not rows:
                return emitted
            try:
                post_events(client, api_url, [_as_prefect_event(row) for row in rows])
            except httpx.HTTPError as exc:
                if raise_errors:
                    raise
                logger.warning("Prefect did not take %d event(s) (%s); they stay in the outbox", len(rows), exc)
                return emitted
            ledger.outbox.mark_emitted([row["id"] for row in rows])
            emitted += len(rows)


def pending_count(ledger: Ledger) -> int:
    """Events accepted but not yet emitted: what a Prefect outage has left to send."""
    return ledger.outbox.pending_count()
