"""The APNs sender: notifications posted as HTTP/2 streams over a few TLS connections per batch (``http2``, on
h2), with the provider token shared and reused; the batch driver is the shared one
(``exstream_push.connectors.push``)."""

from __future__ import annotations

import asyncio
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
from hpack import NeverIndexedHeaderTuple

from exstream_push.connectors.apns.http2 import (
    STREAMS_PER_CONNECTION,
    Header,
    Http2Client,
    Http2TransportError,
)
from exstream_push.connectors.apns.notification import (
    MAX_PAYLOAD_BYTES,
    PRIORITIES,
    ApnsNotification,
    ApnsPayloadTooLarge,
    InvalidDeviceToken,
    validate_device_token,
)
from exstream_push.connectors.apns.token import provider_token
from exstream_push.connectors.push import Attempt, PushRequest, PushResult, PushSender, parse_retry_after
from exstream_push.connectors.push_errors import PushProvider, classify
from exstream_push.connectors.tls import client_ssl_context
from exstream_push.quota import SendQuota
from exstream_push.status import QuarantineReason

PRODUCTION_URL = "https://api.push.apple.com"
SANDBOX_URL = "https://api.sandbox.push.apple.com"
EXPIRED_PROVIDER_TOKEN = "ExpiredProviderToken"
BAD_DEVICE_TOKEN = "BadDeviceToken"
PAYLOAD_TOO_LARGE = "PayloadTooLarge"
_APNS_ID_NAMESPACE = uuid.UUID("6f1d7c2e-3b0a-4d5e-9f8a-1c2b3d4e5f60")
_REASON = re.compile(r"[A-Za-z]{1,64}")
"""What Apple's ``reason`` looks like; anything else in an error body is not stored."""
_UNIQUE_HEADERS = frozenset({"apns-id", "apns-collapse-id"})
"""Per-message values, sent never-indexed so they do not evict the repeated headers from the HPACK table."""


def apns_url(environment: str, override: str | None = None) -> str:
    """The base URL for ``production`` or ``sandbox`` (development builds of the app), unless overridden."""
    if override:
        return override.rstrip("/")
    if environment not in ("production", "sandbox"):
        raise ValueError(f"APNs environment {environment!r}: expected production or sandbox")
    return PRODUCTION_URL if environment == "production" else SANDBOX_URL


class ApnsError(Exception):
    """A send APNs refused (``status`` and Apple's ``reason``) or that got no answer (``status`` None)."""

    def __init__(self, message: str, *, status: int | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PreparedNotification:
    url: str
    headers: dict[str, str]
    payload: bytes


class ApnsSender(PushSender[Http2Client]):
    """Sends many APNs notifications over HTTP/2 connections, with bounded concurrency and retries."""

    provider = PushProvider.APNS
    label = "APNs"

    def __init__(
        self,
        *,
        team_id: str,
        key_id: str,
        signing_key: str | bytes,
        bundle_id: str,
        url: str = PRODUCTION_URL,
        ca_file: Path | None = None,
        concurrency: int = 64,
        max_concurrency: int | None = None,
        max_attempts: int = 5,
        timeout: float = 30.0,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        quota: SendQuota | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``signing_key`` is the ``.p8`` file's PEM; ``ca_file`` an authority trusted besides the system's
        (``client_ssl_context``); ``clock`` the wall clock the token's ``iat`` is read from. See ``PushSender``
        for the rest."""
        super().__init__(
            concurrency=concurrency,
            max_concurrency=max_concurrency,
            max_attempts=max_attempts,
            sleep=sleep,
            quota=quota,
        )
        self.url = url.rstrip("/")
        self.bundle_id = bundle_id
        self._ca_file = ca_file
        self._timeout = timeout
        self._clock = clock
        self._token = provider_token(team_id, key_id, signing_key)

    @property
    def token_signatures(self) -> int:
        """How often the provider token this sender uses has been signed in this process."""
        return self._token.signatures

    def prepare(self, request: PushRequest) -> PreparedNotification:
        notification: ApnsNotification = request.message
        if validate_device_token(notification.device_token) is not None:
            raise InvalidDeviceToken(BAD_DEVICE_TOKEN)
        if len(notification.payload) > MAX_PAYLOAD_BYTES:
            raise ApnsPayloadTooLarge(f"{len(notification.payload)} bytes, APNs takes {MAX_PAYLOAD_BYTES}")
        if notification.priority not in PRIORITIES:
            raise ValueError(f"apns-priority {notification.priority}: APNs takes 1, 5 or 10")
        headers = {
            "apns-topic": self.bundle_id,
            "apns-push-type": notification.push_type,
            "apns-priority": str(notification.priority),
            "apns-expiration": str(notification.expiration),
            # The same message has the same id on every attempt and after a crash; a digest, not the key itself.
            "apns-id": str(uuid.uuid5(_APNS_ID_NAMESPACE, request.key)),
        }
        if notification.collapse_id:
            headers["apns-collapse-id"] = notification.collapse_id
        return PreparedNotification(f"{self.url}/3/device/{notification.device_token}", headers, notification.payload)

    def unsendable(self, key: str, error: ValueError) -> PushResult:
        if isinstance(error, ApnsPayloadTooLarge):
            refused = ApnsError(f"payload too large: {error}", status=413, reason=PAYLOAD_TOO_LARGE)
            return self.failure(key, refused, attempts=0, reason=QuarantineReason.PAYLOAD_TOO_LARGE.value)
        if isinstance(error, InvalidDeviceToken):
            return self.failure(key, ApnsError("not a device token", status=400, reason=BAD_DEVICE_TOKEN), 0)
        return self.failure(key, ApnsError(str(error), status=400), attempts=0)

    @asynccontextmanager
    async def open_session(self) -> AsyncIterator[Http2Client]:
        """HTTP/2 multiplexes every request of the batch as its own stream (Apple allows up to 1,000 at once per
        connection): one connection per ``STREAMS_PER_CONNECTION`` the batch may have in flight. Only ``h2`` is
        offered by ALPN: APNs speaks nothing else."""
        async with Http2Client(
            self.url,
            client_ssl_context(self._ca_file, http2=True),
            timeout=self._timeout,
            max_connections=math.ceil(self.max_concurrency / STREAMS_PER_CONNECTION),
        ) as client:
            yield client

    async def post(self, session: Http2Client, body: PreparedNotification) -> Attempt:
        """One attempt; APNs and transport errors come back as values, never raised."""
        token = self._token.current(self._clock())
        headers: list[Header] = [(b"authorization", f"bearer {token.value}".encode())]
        for name, value in body.headers.items():
            pair = (name.encode(), value.encode())
            headers.append(NeverIndexedHeaderTuple(*pair) if name in _UNIQUE_HEADERS else pair)
        try:
            response = await session.post(body.url[len(self.url) :], headers, body.payload)  # prepare's URL
        except Http2TransportError as error:
            return Attempt(error=ApnsError(f"no answer from APNs: {error}"))
        if response.status == 200:
            return Attempt(message_id=response.headers.get("apns-id", body.headers["apns-id"]))
        reason = _reason(response.body)
        error = ApnsError(
            f"APNs answered {response.status} {reason or ''}".strip(), status=response.status, reason=reason
        )
        expired = reason == EXPIRED_PROVIDER_TOKEN and self._token.renewable(token.value, self._clock())
        return Attempt(
            error=error,
            status=response.status,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            rejected_credential=token.value if expired else None,
        )

    def credential_rejected(self, credential: str) -> None:
        """APNs called a token at least 20 minutes old expired: the next request signs a new one."""
        self._token.renew(credential, self._clock())

    def failure(self, key: str, error: Exception, attempts: int, reason: str | None = None) -> PushResult:
        status = error.status if isinstance(error, ApnsError) else None
        code = error.reason if isinstance(error, ApnsError) else None
        return PushResult(
            key=key,
            message_id=None,
            error=error,
            error_code=code,
            error_class=classify(self.provider, status, code),
            attempts=attempts,
            reason=reason or code or (str(status) if status is not None else "unreachable"),
            provider=self.provider,
        )


def _reason(content: bytes) -> str | None:
    """Apple's ``{"reason": "BadDeviceToken"}``; None when the body is not that shape."""
    try:
        reason = orjson.loads(content).get("reason")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return reason if isinstance(reason, str) and _REASON.fullmatch(reason) else None
