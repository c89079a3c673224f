"""The signed ingress API: the app back end, the document portal, operations and Exstream call in here.

Every route but ``/healthz`` is signed (see ``signing``). A missing, malformed or stale ``X-Signature`` gets 401
before any of the body is read; a body over ``EXSTREAM_PUSH_INGRESS_MAX_BODY_BYTES`` gets 413, by its declared
length or as soon as a streamed one passes the limit, so no more than the limit is ever held. The signature is then
checked on the raw body before anything is parsed, so a bad one gets 401 whatever the body holds; then the body is
parsed (nested at most ``MAX_JSON_DEPTH`` levels) and validated (422 names the field); then, in one transaction,
the signature is remembered (a replay gets 401), the input is written and the Prefect events it causes are put in
the outbox. Only then is the request answered; the outbox is drained to Prefect right after, and every
``drain_interval`` seconds, so a Prefect outage delays events but loses none. Events carry opaque references
(``customer_ref``, ``document_ref``), never a customer's or a document's id.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import uvicorn
from fastapi import APIRouter, BackgroundTasks, Body, FastAPI, HTTPException, Request, Response, Security, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from sqlalchemy import Connection, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.dml import Insert

from exstream_push.content.links import customer_ref
from exstream_push.events import EventError, EventImportReport, parse_event, store_events
from exstream_push.ingress.schemas import (
    BodyError,
    DeviceIn,
    EngagementEvents,
    OpsAlertIn,
    PreferenceIn,
    TrackingEventIn,
    TrackingEvents,
    load_json,
)
from exstream_push.ingress.signing import REPLAY_MEMORY, SIGNATURE_HEADER, SignatureError, check, parse_header
from exstream_push.ledger import (
    Device,
    Document,
    EngagementEvent,
    Ledger,
    OpsAlert,
    Preference,
    SeenRequest,
    TrackingEvent,
)
from exstream_push.ledger.store import utcnow
from exstream_push.prefect_events import configured_api_url, drain_outbox, enqueue, pending_count
from exstream_push.runtime import ledger_for
from exstream_push.settings import Settings, get_settings
from exstream_push.status import EngagementType, OpsAlertState
from exstream_push.usecases.operational_alert.config import load_segments

OPS_ALERT_EVENT = "exstream-push.ops.alert"
DELIVERY_FAILED_EVENT = "exstream.delivery.failed"
PREFERENCE_EVENT = "exstream-push.preference.updated"
ENGAGEMENT_EVENT_PREFIX = "exstream-push.engagement."
# Engagement that changes a document's state (reminders stop); opens and deliveries are only stored, since one
# Prefect event per open would flood the server for nothing a flow does at once.
STATE_CHANGING_ENGAGEMENT = (EngagementType.ACKNOWLEDGED.value, EngagementType.ACTION_COMPLETED.value)
DRAIN_INTERVAL_SECONDS = 10.0

logger = logging.getLogger(__name__)


class IngressConfigurationError(RuntimeError):
    """The ingress cannot start as configured; the message says what to set."""


class BodyTooLarge(Exception):
    """The request body is over the configured limit; the rest of it is never read."""


async def read_body(request: Request, limit: int) -> bytes:
    """The body, read chunk by chunk and never more than ``limit`` bytes of it; BodyTooLarge past that.

    A declared ``Content-Length`` over the limit is refused before the first chunk; a chunked body as soon as the
    chunk that passes the limit arrives.
    """
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and (len(declared) > len(str(limit)) or int(declared) > limit):
        raise BodyTooLarge
    received = bytearray()
    async with aclosing(request.stream()) as chunks:
        async for chunk in chunks:
            if len(received) + len(chunk) > limit:
                raise BodyTooLarge
            received += chunk
    return bytes(received)


class AuthenticatedRequest(Request):
    """The request once its body was read within the limit and its signature matched: FastAPI parses that body."""

    def __init__(self, request: Request, body: bytes) -> None:
        super().__init__(request.scope, request.receive)
        self._authenticated_body = body

    async def body(self) -> bytes:
        return self._authenticated_body

    async def json(self) -> Any:
        """Parsed with a bounded depth; FastAPI answers a JSONDecodeError with 422 ``json_invalid`` itself."""
        try:
            return load_json(self._authenticated_body)
        except BodyError as exc:
            detail = [{"type": "json_invalid", "loc": ["body"], "msg": str(exc), "input": {}}]
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail) from None


def _refused(status_code: int, detail: str) -> JSONResponse:
    """Refused with the body (partly) unread: closing the connection stops the caller from sending the rest."""
    return JSONResponse({"detail": detail}, status_code=status_code, headers={"Connection": "close"})


class SignedRoute(APIRoute):
    """Authenticates a request before FastAPI parses anything, so 401 and 413 come before 422.

    The header is judged first, alone, so a request that cannot be authenticated is refused unread; the body is
    read up to the configured limit only for a request whose header could be genuine.
    """

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def verified(request: Request) -> Response:
            key, limit = request.app.state.ingress_key, request.app.state.max_body_bytes
            try:
                claim = parse_header(request.headers.get(SIGNATURE_HEADER), datetime.now(UTC))
            except SignatureError as exc:
                return _refused(status.HTTP_401_UNAUTHORIZED, str(exc))
            try:
                body = await read_body(request, limit)
            except BodyTooLarge:
                return _refused(
                    status.HTTP_413_CONTENT_TOO_LARGE,
                    f"the body is larger than {limit} bytes (EXSTREAM_PUSH_INGRESS_MAX_BODY_BYTES)",
                )
            try:
                signature = check(key, claim, body)
            except SignatureError as exc:
                return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_401_UNAUTHORIZED)
            authenticated = AuthenticatedRequest(request, body)
            authenticated.state.signature = signature
            return await handler(authenticated)

        return verified


def _insert(conn: Connection, model: type) -> Insert:
    """The dialect's INSERT, which knows ON CONFLICT on both SQLite and PostgreSQL."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(model.__table__)  # type: ignore[attr-defined]


def claim_request(conn: Connection, request: Request) -> None:
    """Remember the request's signature in the caller's transaction; seen before, it is a replay (401)."""
    statement = _insert(conn, SeenRequest).values(signature=request.state.signature, seen_at=utcnow())
    # RETURNING, not rowcount: psycopg reports -1 for an INSERT … ON CONFLICT built this way.
    if conn.execute(statement.on_conflict_do_nothing().returning(SeenRequest.signature)).first() is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "this signed request was already received; sign a retry anew")


def forget_seen_requests(ledger: Ledger, before: datetime) -> int:
    """Signatures older than the replay window can no longer be presented with a valid timestamp."""
    with ledger.engine.begin() as conn:
        return conn.execute(delete(SeenRequest).where(SeenRequest.seen_at < before)).rowcount


def _field_error(field: str | int, message: str, value: Any) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": ("body", field), "msg": message, "input": value}])


def _tracking_event_id(payload: dict[str, Any], event_id: str | None) -> str:
    """Exstream's own event id, or a digest of the event: the same event sent twice is stored once either way."""
    if event_id:
        return event_id
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return f"sha256:{hashlib.sha256(canonical).hexdigest()}"


def _housekeeping(ledger: Ledger, api_url: str | None) -> None:
    forget_seen_requests(ledger, utcnow() - REPLAY_MEMORY)
    drain_outbox(ledger, api_url)


async def _keep_draining(ledger: Ledger, api_url: str | None, interval: float) -> None:
    """Emit what a Prefect outage (or a restart) left in the outbox; the loop outlives any one failure."""
    while True:
        try:
            await asyncio.to_thread(_housekeeping, ledger, api_url)
        except Exception:
            logger.exception("ingress housekeeping failed; trying again in %.0f s", interval)
        await asyncio.sleep(interval)


def create_app(
    settings: Settings, prefect_api_url: str | None = None, drain_interval: float = DRAIN_INTERVAL_SECONDS
) -> FastAPI:
    """The ingress for one ledger; events go to ``prefect_api_url``, by default Prefect's ``PREFECT_API_URL``."""
    secret = settings.ingress_secret.get_secret_value() if settings.ingress_secret is not None else ""
    if not secret:
        raise IngressConfigurationError(
            "EXSTREAM_PUSH_INGRESS_SECRET is not set: every request is signed with it, so the ingress will not start"
        )
    ledger = ledger_for(settings)
    api_url = prefect_api_url or configured_api_url()
    if api_url is None:
        logger.warning("PREFECT_API_URL is not set: accepted events wait in the outbox until it is")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        drainer = asyncio.create_task(_keep_draining(ledger, api_url, drain_interval))
        yield
        drainer.cancel()

    app = FastAPI(
        title="exstream-push ingress",
        version="1",
        lifespan=lifespan,
        description=(
            "Devices, preferences, engagement events, Exstream tracking events and operational alerts. Sign every "
            f'request with `{SIGNATURE_HEADER}: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">` and '
            "the shared secret; a timestamp more than 5 minutes off, or a signature already received, gets 401. "
            f"A body over {settings.ingress_max_body_bytes} bytes (EXSTREAM_PUSH_INGRESS_MAX_BODY_BYTES) gets 413."
        ),
    )
    app.state.ingress_key = secret.encode()
    app.state.max_body_bytes = settings.ingress_max_body_bytes
    reference_key = settings.link_key
    signature_scheme = APIKeyHeader(name=SIGNATURE_HEADER, auto_error=False, description="t=…,v1=…")
    signed = APIRouter(prefix="/v1", route_class=SignedRoute, dependencies=[Security(signature_scheme)])

    def drain_soon(background: BackgroundTasks) -> None:
        background.add_task(drain_outbox, ledger, api_url, wait=False)

    @app.get("/healthz", tags=["health"])
    def healthz() -> JSONResponse:
        """Unsigned. 503 when the ledger cannot be read; ``outbox_pending`` grows while Prefect is unreachable."""
        try:
            pending = pending_count(ledger)
        except SQLAlchemyError:
            return JSONResponse({"status": "ledger unavailable"}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
        return JSONResponse({"status": "ok", "outbox_pending": pending})

    @signed.post("/devices", tags=["app"])
    def register_device(device: DeviceIn, request: Request) -> dict[str, Any]:
        """Register or update a device by ``device_id``; ``active: false`` unregisters it."""
        row = {
            **device.model_dump(exclude={"categories"}),
            "categories": ";".join(sorted(set(device.categories))),
            "deactivated_reason": None if device.active else "unregistered",
            "updated_at": utcnow(),
        }
        with ledger.engine.begin() as conn:
            claim_request(conn, request)
            statement = _insert(conn, Device).values(row)
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=["device_id"],
                    set_={name: statement.excluded[name] for name in row if name != "device_id"},
                )
            )
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
        with ledger.engine.begin() as conn:
            claim_request(conn, request)
            statement = _insert(conn, Preference).values(row)
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=["customer_id"],
                    set_={name: statement.excluded[name] for name in row if name != "customer_id"},
                )
            )
            reference = customer_ref(reference_key, preference.customer_id)
            enqueue(
                conn,
                PREFERENCE_EVENT,
                f"exstream-push.customer.{reference}",
                {"customer_ref": reference, "fields": sorted(stated)},
            )
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
        table = EngagementEvent.__table__
        with ledger.engine.begin() as conn:
            claim_request(conn, request)
            known = set(conn.scalars(select(table.c.event_id).where(table.c.event_id.in_(event_ids))))
        report = EventImportReport()
        store_events(ledger, list(enumerate(parsed)), report)
        with ledger.engine.begin() as conn:
            documents = Document.__table__
            stored_now = conn.execute(
                select(table.c.event_id, table.c.type, table.c.use_case, documents.c.ref)
                .join(
                    documents,
                    (documents.c.use_case == table.c.use_case) & (documents.c.document_id == table.c.document_id),
                )
                .where(
                    table.c.event_id.in_(sorted(set(event_ids) - known)), table.c.type.in_(STATE_CHANGING_ENGAGEMENT)
                )
            ).all()
            for event_id, kind, use_case, ref in stored_now:
                enqueue(
                    conn,
                    ENGAGEMENT_EVENT_PREFIX + kind,
                    f"exstream-push.document.{ref}",
                    {"event_id": event_id, "type": kind, "use_case": use_case, "document_ref": ref},
                )
        if stored_now:
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
                failures[event_id] = _failure_payload(event_id, event)
        with ledger.engine.begin() as conn:
            claim_request(conn, request)
            statement = _insert(conn, TrackingEvent).on_conflict_do_nothing().returning(TrackingEvent.event_id)
            stored = set(conn.execute(statement, rows).scalars())
            new_failures = sorted(stored & failures.keys())
            for event_id in new_failures:
                enqueue(conn, DELIVERY_FAILED_EVENT, f"exstream.tracking-event.{event_id}", failures[event_id])
        if new_failures:
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
        with ledger.engine.begin() as conn:
            claim_request(conn, request)
            statement = _insert(conn, OpsAlert).values(row).on_conflict_do_nothing().returning(OpsAlert.alert_id)
            inserted = conn.execute(statement).first() is not None
            if inserted:
                enqueue(
                    conn,
                    OPS_ALERT_EVENT,
                    f"exstream-push.alert.{alert.alert_id}",
                    {"alert_id": alert.alert_id, "kind": alert.kind, "severity": alert.severity},
                )
        if inserted:
            drain_soon(background)
        return {"alert_id": alert.alert_id, "duplicate": not inserted}

    app.include_router(signed)
    return app


def _failure_payload(event_id: str, event: TrackingEventIn) -> dict[str, Any]:
    """Ids only: the tracking event's ``user{}`` block carries names and addresses and stays in the ledger."""
    payload = {"tracking_event_id": event_id, "schema_type": event.expctr.schemaType}
    communication_id = (event.exstreamJob or {}).get("communicationId")
    if communication_id:
        payload["communication_id"] = str(communication_id)
    return payload


def serve(host: str, port: int) -> None:
    """``exstream-push serve``: the ingress on uvicorn until Ctrl-C."""
    try:
        app = create_app(get_settings())
    except IngressConfigurationError as exc:
        raise SystemExit(f"exstream-push serve: {exc}") from None
    uvicorn.run(app, host=host, port=port, log_level="info")
