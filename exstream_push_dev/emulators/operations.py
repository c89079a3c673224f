"""An operations inbox: where a local stack's failure notifications land when no real webhook is configured.

``exstream-push up`` points the ``exstream-push-operations`` notification block at it (a Custom Webhook block
posting JSON), so a failed flow run is visible locally without Slack, Teams or e-mail:

    POST /hooks/operations        a notification, any JSON body; 204
    GET  /_emulator/notifications  every notification received, oldest first
"""

from __future__ import annotations

import threading
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

HOOK_PATH = "/hooks/operations"


class OperationsInbox:
    """The notifications received, kept in memory; the server thread writes while a test reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: list[Any] = []

    @property
    def received(self) -> list[Any]:
        with self._lock:
            return list(self._received)

    async def hook(self, request: Request) -> Response:
        body = await request.json()
        with self._lock:
            self._received.append(body)
        return Response(status_code=204)

    async def notifications(self, request: Request) -> JSONResponse:
        return JSONResponse(self.received)


def create_operations_app() -> Starlette:
    """The inbox app; ``app.state.inbox`` holds what it received."""
    inbox = OperationsInbox()
    app = Starlette(
        routes=[
            Route(HOOK_PATH, inbox.hook, methods=["POST"]),
            Route("/_emulator/notifications", inbox.notifications, methods=["GET"]),
        ]
    )
    app.state.inbox = inbox
    return app
