"""The Web Push sender: pywebpush's RFC 8291 encryption and py-vapid's RFC 8292 token, posted by aiohttp over one
keep-alive session per batch; the batch driver (limit, quota, retries, flushes) is the shared one
(``exstream_push.connectors.push``).

pywebpush 2.5's one-call ``webpush``/``webpush_async`` sign a new VAPID token for every message, and
``WebPusher.send_async`` neither retries nor reads ``Retry-After``; so the encryption (``WebPusher.encode``) is
pywebpush's and the transport ours, as for FCM. Subscriptions live on many push services (Google's, Mozilla's,
Apple's, Microsoft's): one token per origin.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from py_vapid import Vapid

from exstream_push.connectors.push import Attempt, PushRequest, PushResult, PushSender, parse_retry_after
from exstream_push.connectors.push_errors import PushProvider, classify
from exstream_push.connectors.tls import client_ssl_context
from exstream_push.connectors.webpush.message import (
    InvalidSubscriptionError,
    PayloadTooLargeError,
    WebPushNotification,
    encrypt,
    headers,
    origin,
)
from exstream_push.connectors.webpush.vapid import VapidTokens, load_vapid_key
from exstream_push.quota import SendQuota
from exstream_push.status import QuarantineReason

TRANSPORT_ERROR = "transport_error"
TIMEOUT = "timeout"
TLS_UNTRUSTED = "tls_untrusted"
"""The push service's certificate did not verify against the system's authorities and ``ca_file``."""


class WebPushError(Exception):
    """A failed Web Push attempt: the push service's HTTP status (its only error code), or why none came.

    The message names the status or transport failure only, never the endpoint: it is a device address."""

    def __init__(self, code: str, status: int | None = None) -> None:
        super().__init__(f"Web Push {'answered HTTP ' + code if status is not None else 'failed: ' + code}")
        self.code = code
        self.status = status


@dataclass(frozen=True, slots=True)
class _Prepared:
    """What ``post`` sends: the encrypted body once, so a retry repeats exactly the same message."""

    endpoint: str
    origin: str
    headers: dict[str, str]
    body: bytes


class WebPushSender(PushSender[aiohttp.ClientSession]):
    """Sends many Web Push messages, each to its subscription's push service, with bounded concurrency and
    retries; ``PushRequest(key, message=WebPushNotification(...))``."""

    provider = PushProvider.WEBPUSH
    label = "Web Push"

    def __init__(
        self,
        *,
        vapid_private_key: Vapid | str,
        vapid_subject: str,
        ca_file: Path | None = None,
        concurrency: int = 64,
        max_concurrency: int | None = None,
        max_attempts: int = 5,
        timeout: float = 30.0,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        quota: SendQuota | None = None,
    ) -> None:
        """``vapid_private_key`` is a py-vapid key or its text (PEM, or the raw key in base64url);
        ``vapid_subject`` a ``mailto:`` or ``https:`` URI (``ValueError`` otherwise); ``ca_file`` an authority
        trusted besides the system's. See ``PushSender`` for the rest."""
        super().__init__(
            concurrency=concurrency,
            max_concurrency=max_concurrency,
            max_attempts=max_attempts,
            sleep=sleep,
            quota=quota,
        )
        key = vapid_private_key if isinstance(vapid_private_key, Vapid) else load_vapid_key(vapid_private_key)
        self.vapid = VapidTokens(key, vapid_subject)
        self._ca_file = ca_file
        self._timeout = timeout

    def prepare(self, request: PushRequest) -> _Prepared:
        notification: WebPushNotification = request.message
        return _Prepared(
            endpoint=notification.endpoint,
            origin=origin(notification.endpoint),
            headers=headers(notification),
            body=encrypt(notification),
        )

    def unsendable(self, key: str, error: ValueError) -> PushResult:
        if isinstance(error, PayloadTooLargeError):
            code = QuarantineReason.PAYLOAD_TOO_LARGE.value
        elif isinstance(error, InvalidSubscriptionError):
            code = "invalid_subscription"
        else:
            code = "invalid_headers"
        return self.failure(key, WebPushError(code), attempts=0)

    @asynccontextmanager
    async def open_session(self) -> AsyncIterator[aiohttp.ClientSession]:
        connector = aiohttp.TCPConnector(
            limit=self.max_concurrency, keepalive_timeout=30, ssl=client_ssl_context(self._ca_file)
        )
        async with aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            skip_auto_headers=("User-Agent",),
        ) as session:
            yield session

    def failure(self, key: str, error: Exception, attempts: int) -> PushResult:
        if not isinstance(error, WebPushError):  # post and unsendable produce only WebPushError
            error = WebPushError(TRANSPORT_ERROR)
        return PushResult(
            key=key,
            message_id=None,
            error=error,
            error_code=error.code,
            error_class=classify(self.provider, error.status, error.code),
            attempts=attempts,
            reason=error.code,
            provider=self.provider,
        )

    async def post(self, session: aiohttp.ClientSession, body: _Prepared) -> Attempt:
        """One attempt; 2xx (RFC 8030: 201 Created) is accepted, with the push service's ``Location`` as the
        message id. Nothing raised: errors come back as values."""
        request_headers = {**body.headers, "Authorization": self.vapid.authorization(body.origin)}
        try:
            async with session.post(body.endpoint, data=body.body, headers=request_headers) as response:
                await response.read()
        except TimeoutError:
            return Attempt(error=WebPushError(TIMEOUT))
        except aiohttp.ClientConnectorCertificateError:
            return Attempt(error=WebPushError(TLS_UNTRUSTED))
        except aiohttp.ClientError:
            return Attempt(error=WebPushError(TRANSPORT_ERROR))
        if 200 <= response.status <= 299:
            return Attempt(message_id=response.headers.get("Location"))
        return Attempt(
            error=WebPushError(str(response.status), response.status),
            status=response.status,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
