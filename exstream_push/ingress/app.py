"""The signed ingress API: the app back end, the document portal, operations and Exstream call in here.

Every route but ``/healthz`` and the API docs (``/docs``, ``/redoc``, their assets served from here) is signed and
authenticated before its body is parsed (see ``signed``). Then, in one transaction, the signature is remembered (a
replay gets 401), the input is written and the Prefect events it causes are put in the outbox (see
``ledger.ingress``). Only then is the request answered; the outbox is drained to Prefect right after, and every
``drain_interval`` seconds, so a Prefect outage delays events but loses none.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from exstream_push.ingress.loops import LoopAnnouncer
from exstream_push.ingress.routes import health_routes, signed_routes
from exstream_push.ingress.signed import EXCEPTION_HANDLERS
from exstream_push.ingress.signing import REPLAY_MEMORY, SIGNATURE_HEADER
from exstream_push.ledger import Ledger
from exstream_push.ledger.store import utcnow
from exstream_push.prefect_events import configured_api_url, drain_outbox
from exstream_push.runtime import ledger_for
from exstream_push.settings import Settings, get_settings

DRAIN_INTERVAL_SECONDS = 10.0
LOOP_TICK_SECONDS = 1.0  # how often owed loop announcements are looked at (no database read when none is)

logger = logging.getLogger(__name__)


class IngressConfigurationError(RuntimeError):
    """The ingress cannot start as configured; the message says what to set."""


def _housekeeping(ledger: Ledger, api_url: str | None) -> None:
    ledger.ingress.forget_seen_requests(utcnow() - REPLAY_MEMORY)
    drain_outbox(ledger, api_url)


async def _keep_draining(ledger: Ledger, api_url: str | None, interval: float) -> None:
    """Emit what a Prefect outage (or a restart) left in the outbox; the loop outlives any one failure."""
    while True:
        try:
            await asyncio.to_thread(_housekeeping, ledger, api_url)
        except Exception:
            logger.exception("ingress housekeeping failed; trying again in %.0f s", interval)
        await asyncio.sleep(interval)


def _announce_loops(announcer: LoopAnnouncer, ledger: Ledger, api_url: str | None) -> None:
    if announcer.announce_due():
        drain_outbox(ledger, api_url)


async def _keep_announcing(announcer: LoopAnnouncer, ledger: Ledger, api_url: str | None, tick: float) -> None:
    """Announce the closed loops input arrived for, each once its quiet time has passed (``ingress.loops``)."""
    while True:
        await asyncio.sleep(tick)
        if announcer.owed():
            try:
                await asyncio.to_thread(_announce_loops, announcer, ledger, api_url)
            except Exception:
                logger.exception("announcing the closed loops failed; trying again in %.0f s", tick)


def create_app(
    settings: Settings,
    prefect_api_url: str | None = None,
    drain_interval: float = DRAIN_INTERVAL_SECONDS,
    loop_tick: float = LOOP_TICK_SECONDS,
) -> FastAPI:
    """The ingress for one ledger; events go to ``prefect_api_url``, by default Prefect's ``PREFECT_API_URL``.

    Every ``loop_tick`` seconds the closed loops owed an announcement are announced (``ingress.loops``)."""
    secret = settings.ingress_secret.get_secret_value() if settings.ingress_secret is not None else ""
    if not secret:
        raise IngressConfigurationError(
            "EXSTREAM_PUSH_INGRESS_SECRET is not set: every request is signed with it, so the ingress will not start"
        )
    ledger = ledger_for(settings)
    api_url = prefect_api_url or configured_api_url()
    if api_url is None:
        logger.warning("PREFECT_API_URL is not set: accepted events wait in the outbox until it is")

    announcer = LoopAnnouncer(ledger, settings.loop_quiet_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        drainer = asyncio.create_task(_keep_draining(ledger, api_url, drain_interval))
        announcing = asyncio.create_task(_keep_announcing(announcer, ledger, api_url, loop_tick))
        yield
        announcing.cancel()
        drainer.cancel()

    # Swagger UI and ReDoc from fastapi-offline's copies of their assets, not a CDN a bank's network cannot reach;
    # no online validator either (Swagger UI would send the spec's URL to swagger.io).
    app = FastAPIOffline(
        title="exstream-push ingress",
        swagger_ui_parameters={"validatorUrl": None},
        version="1",
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
        description=(
            "Devices, preferences, engagement events, Exstream tracking events and operational alerts. Sign every "
            f'request with `{SIGNATURE_HEADER}: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">` and '
            "the shared secret; a timestamp more than 5 minutes off, or a signature already received, gets 401. "
            f"A body over {settings.ingress_max_body_bytes} bytes (EXSTREAM_PUSH_INGRESS_MAX_BODY_BYTES) gets 413."
        ),
    )
    app.state.ingress_key = secret.encode()
    app.state.max_body_bytes = settings.ingress_max_body_bytes
    app.include_router(health_routes(ledger))
    app.include_router(signed_routes(settings, ledger, api_url, announcer))
    return app


def serve(host: str, port: int) -> None:
    """``exstream-push serve``: the ingress on uvicorn until Ctrl-C."""
    try:
        app = create_app(get_settings())
    except IngressConfigurationError as exc:
        raise SystemExit(f"exstream-push serve: {exc}") from None
    uvicorn.run(app, host=host, port=port, log_level="info")
