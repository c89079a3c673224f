"""The ingress routes, one per resource: each validates its input and hands the rows and the outbox events they
cause to ``ledger.ingress``, which writes them with the request's signature in one transaction.

Events carry opaque references (``customer_ref``, ``document_ref``), never a customer's or a document's id.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Body, Request, Security, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader

from exstream_push.content.links import customer_ref
from exstream_push.events import EventError, EventImportReport, parse_event, store_events
from exstream_push.ingress.loops import LoopAnnouncer
from exstream_push.ingress.schemas import (
    DeviceIn,
    EngagementEvents,
    OpsAlertIn,
    PreferenceIn,
    TrackingEventIn,
    TrackingEvents,
)
from exstream_push.ingress.signed import SignedRoute, signature_of
from exstream_push.ingress.signing import SIGNATURE_HEADER
from exstream_push.ledger import Ledger
from exstream_push.ledger.ingress import LEDGER_UNREADABLE, PendingEvent
from exstream_push.ledger.store import utcnow
from exstream_push.prefect_events import drain_outbox, enqueue, pending_count
from exstream_push.settings import Settings
from exstream_push.status import EngagementType, OpsAlertState, UseCase
from exstream_push.usecases.operational_alert.config import load_segments

OPS_ALERT_EVENT = "exstream-push.ops.alert"
DELIVERY_FAILED_EVENT = "exstream.delivery.failed"
PREFERENCE_EVENT = "exstream-push.preference.updated"
ENGAGEMENT_EVENT_PREFIX = "exstream-push.engagement."
# Engagement that changes a document's state (reminders stop); opens and deliveries are only stored, since one
# Prefect event per open would flood the server for nothing a flow does at once.
STATE_CHANGING_ENGAGEMENT = (EngagementType.ACKNOWLEDGED.value, EngagementType.ACTION_COMPLETED.value)


def _field_error(field: str | int, message: str, value: Any) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": ("body", field), "msg": message, "input": value}])


def _tracking_event_id(payload: dict[str, Any], event_id: str | None) -> str:
    """Exstream's own event id, or a digest of the event: the same event sent twice is stored once either way."""
    if event_id:
        return event_id
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return f"sha256:{hashlib.sha256(canonical).hexdigest()}"


def _failure_payload(event_id: str, event: TrackingEventIn) -> dict[str, Any]:
    """Ids only: the tracking event's ``user{}`` block carries names and addresses and stays in the ledger."""
    payload = {"tracking_event_id": event_id, "schema_type": event.expctr.schemaType}
    communication_id = (event.exstreamJob or {}).get("communicationId")
    if communication_id:
        payload["communication_id"] = str(communication_id)
    return payload


def _engagement_event(event_id: str, kind: str, use_case: str, ref: str) -> PendingEvent:
    return PendingEvent(
        ENGAGEMENT_EVENT_PREFIX + kind,
        f"exstream-push.document.{ref}",
        {"event_id": event_id, "type": kind, "use_case": use_case, "document_ref": ref},
    )


def health_routes(ledger: Ledger) -> APIRouter:
    """``/healthz``, the one unsigned route."""
    router = APIRouter()

    @router.get("/healthz", tags=["health"])
    def healthz() -> JSONResponse:
        """Unsigned. 503 when the ledger cannot be read; ``outbox_pending`` grows while Prefect is unreachable."""
        try:
            pending = pending_count(ledger)
        except LEDGER_UNREADABLE:
            return JSONResponse({"status": "ledger unavailable"}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
        return JSONResponse({"status": "ok", "outbox_pending": pending})

    return router


def signed_routes(settings: Settings, ledger: Ledger, api_url: str | None, loops: LoopAnnouncer) -> APIRouter:
    """The ``/v1`` routes, every one signed; accepted events are drained to ``api_url`` right after the answer,
    and the closed loops the input feeds are owed an announcement (``ingress.loops``)."""
    reference_key = settings.link_key
    signature_scheme = APIKeyHeader(name=SIGNATURE_HEADER, auto_error=False, description="t=…,v1=…")
    signed = APIRouter(prefix="/v1", route_class=SignedRoute, dependencies=[Security(signature_scheme)])

    def drain_soon(background: BackgroundTasks) -> None:
        background.add_task(drain_outbox, ledger, api_url, wait=False)

    @signed.post("/devices", tags=["app"])
    def register_device(device: DeviceIn, request: Request) -> dict[str, Any]:
        """Register or update a device by ``device_id``; ``active: false`` unregisters it."""
        token, p256dh, auth = device.address()
        row = {
            **device.model_dump(exclude={"categories", "token", "subscription"}),
            "token": token,
            "webpush_p256dh": p256dh,
            "webpush_auth": auth,
            "categories": ";".join(sorted(set(device.categories))),
            "deactivated_reason": None if device.active else "unregistered",
            "updated_at": utcnow(),
        }
        ledger.ingress.register_device(signature_of(request), row)
        loops.owe(UseCase.PREFERENCE_SYNC.value)
        return {"device_id": device.device_id, "active": device.active}

    @signed.post("/preferences", tags=["app"])
    def state_preferences(preference: PreferenceIn, request: Request, background: BackgroundTasks) -> dict[str, Any]:
        """Push opt-in, opted-in categories and the preferred channel per category; fields left out are kept."""
        stated = preference.model_dump(exclude_unset=True, exclude={"customer_id"})
        if "categories" in stated:
            stated["categories"] = ";".join(sorted(set(stated["categories"])))
        if "preferred_channels" in stated:
            stated["preferred_channels"] = json.dumps(stated["preferred_channels"], sort_keys=True)
        row = {"customer_id": preference.customer_id, **stated, "updated_at": utcnow()}
        reference = customer_ref(reference_key, preference.customer_id)
        pending = PendingEvent(
            PREFERENCE_EVENT,
            f"exstream-push.customer.{reference}",
            {"customer_ref": reference, "fields": sorted(stated)},
        )
        ledger.ingress.state_preference(signature_of(request), row, pending, enqueue)
        loops.owe(UseCase.PREFERENCE_SYNC.value)
        drain_soon(background)
        return {"customer_id": preference.customer_id, "stated": sorted(stated)}

    @signed.post("/engagement-events", tags=["app"])
    def record_engagement(
        events: Annotated[EngagementEvents, Body()], request: Request, background: BackgroundTasks
    ) -> dict[str, Any]:
        """One event or a list, as ``events import`` reads them; stored once per ``event_id``.

        An event whose document is unknown (no push was sent for it) or belongs to another customer is not stored
        and is listed under ``rejected`` by its index.
        """
        parsed = []
        for index, event in enumerate(events):
            try:  # the import's own check has the last word, so both paths accept exactly the same events
                parsed.append(parse_event(event.model_dump(mode="json")))
            except EventError as exc:
                raise _field_error(index, str(exc), event.model_dump(mode="json")) from None
        event_ids = [event["event_id"] for event in parsed]
        known = ledger.ingress.claim_engagement(signature_of(request), event_ids)
        report = EventImportReport()
        store_events(ledger, list(enumerate(parsed)), report)
        new_ids = sorted(set(event_ids) - known)
        if report.stored:
            loops.owe(UseCase.LIFECYCLE_TRACKING.value)
        if ledger.ingress.announce_engagement(new_ids, STATE_CHANGING_ENGAGEMENT, _engagement_event, enqueue):
            drain_soon(background)
        return {
            "stored": report.stored,
            "repeated": report.repeated,
            "rejected": [{"index": index, "reason": reason} for index, reason in report.errors],
        }

    @signed.post("/exstream/events", tags=["exstream"], status_code=status.HTTP_202_ACCEPTED)
    def record_tracking_events(
        events: Annotated[TrackingEvents, Body()], request: Request, background: BackgroundTasks
    ) -> dict[str, Any]:
        """Exstream tracking events, one or a list, stored whole for the delivery-exceptions flow.

        A failure (``schemaType`` ``…-Failed`` or ``Exstream-Email-NDLV``) also emits ``exstream.delivery.failed``.
        """
        received_at = utcnow()
        rows, failures = [], {}
        for event in events:
            payload = event.model_dump(mode="json", exclude_unset=True)
            event_id = _tracking_event_id(payload, event.expctr.eventId)
            event_date = event.expctr.eventDate
            rows.append(
                {
                    "event_id": event_id,
                    "schema_type": event.expctr.schemaType,
                    "payload": json.dumps(payload),
                    "event_date": datetime.fromisoformat(event_date).astimezone(UTC) if event_date else None,
                    "received_at": received_at,
                    "processed_at": None,
                }
            )
            if event.failed:
                failures[event_id] = PendingEvent(
                    DELIVERY_FAILED_EVENT, f"exstream.tracking-event.{event_id}", _failure_payload(event_id, event)
                )
        stored, new_failures = ledger.ingress.record_tracking_events(signature_of(request), rows, failures, enqueue)
        if new_failures:
            loops.owe(UseCase.DELIVERY_EXCEPTIONS.value)
            drain_soon(background)
        return {"stored": len(stored), "repeated": len(rows) - len(stored), "failed": len(new_failures)}

    @signed.post("/ops/alerts", tags=["operations"], status_code=status.HTTP_202_ACCEPTED)
    def raise_alert(alert: OpsAlertIn, request: Request, background: BackgroundTasks) -> dict[str, Any]:
        """An operational event; the ``operational-alert`` flow pushes it and asks Exstream for the letter.

        The same ``alert_id`` again is acknowledged and changes nothing (``duplicate: true``).
        """
        if alert.segment is not None and alert.segment not in load_segments(settings):
            raise _field_error("segment", f"no segment named {alert.segment!r} is defined", alert.segment)
        row = {
            "alert_id": alert.alert_id,
            "kind": alert.kind,
            "severity": alert.severity,
            "audience": json.dumps(alert.audience()),
            "message_key": alert.message_key,
            "occurred_at": alert.occurred_at,
            "received_at": utcnow(),
            "state": OpsAlertState.RECEIVED.value,
        }
        pending = PendingEvent(
            OPS_ALERT_EVENT,
            f"exstream-push.alert.{alert.alert_id}",
            {"alert_id": alert.alert_id, "kind": alert.kind, "severity": alert.severity},
        )
        inserted = ledger.ingress.raise_alert(signature_of(request), row, pending, enqueue)
        if inserted:
            drain_soon(background)
        return {"alert_id": alert.alert_id, "duplicate": not inserted}

    return signed
