"""Signed routes: a request is authenticated, within the body limit, before FastAPI parses any of it.

A missing, malformed or stale ``X-Signature`` gets 401 before any of the body is read; a body over the limit gets
413, by its declared length or as soon as a streamed one passes it, so no more than the limit is ever held. The
signature is then checked on the raw body, so a bad one gets 401 whatever the body holds; only then is the body
parsed (nested at most ``MAX_JSON_DEPTH`` levels) and validated (422 names the field).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any

from fastapi import HTTPException, Request, Response, status
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from exstream_push.ingress.schemas import BodyError, load_json
from exstream_push.ingress.signing import SIGNATURE_HEADER, SignatureError, check, parse_header
from exstream_push.ledger.ingress import ReplayedRequest

REPLAY_DETAIL = "this signed request was already received; sign a retry anew"


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


async def replay_refused(_request: Request, _exc: Exception) -> JSONResponse:
    """A signature already remembered (``ReplayedRequest``, its transaction rolled back): 401."""
    return JSONResponse({"detail": REPLAY_DETAIL}, status_code=status.HTTP_401_UNAUTHORIZED)


EXCEPTION_HANDLERS: dict[type[Exception], Callable[[Request, Exception], Awaitable[Response]]] = {
    ReplayedRequest: replay_refused
}


def signature_of(request: Request) -> str:
    """The checked signature ``SignedRoute`` put on the request, which the ledger remembers to refuse replays."""
    return str(request.state.signature)


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
