"""The FCM sender: firebase-admin's encoded messages posted over one keep-alive aiohttp session, OAuth tokens
renewed ahead of expiry, failures read as the SDK's own exceptions; the batch driver is the shared one
(``exstream_push.connectors.push``)."""

from __future__ import annotations

import asyncio
import datetime
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress

import aiohttp
import firebase_admin
import google.auth.credentials
import google.auth.exceptions
import google.auth.transport.requests
import orjson
from firebase_admin import exceptions

from exstream_push.connectors.fcm.auth import fcm_send_url, resolve_credentials
from exstream_push.connectors.fcm.errors import firebase_error, transport_error
from exstream_push.connectors.fcm.message import PayloadTooLargeError, encode
from exstream_push.connectors.push import Attempt, PushRequest, PushResult, PushSender, parse_retry_after
from exstream_push.connectors.push_errors import (
    PushProvider,
    classify_fcm_exception,
    fcm_error_code,
    fcm_failure_reason,
)
from exstream_push.quota import SendQuota
from exstream_push.status import QuarantineReason

QUOTA_RETRY_FLOOR_SECONDS = 60.0
"""FCM asks for at least a minute before retrying a 429 that came without ``Retry-After``."""
REFRESH_RETRY_SECONDS = 30.0
REFRESH_AHEAD_SECONDS = 225.0
"""An access token is renewed this long before it expires (google-auth's own margin for hour-long tokens)..."""
REFRESH_AHEAD_FRACTION = 0.5
"""...or at half its life when it is shorter than twice that, so a short-lived token is not renewed per request."""
THIRD_PARTY_AUTH_ERROR = "THIRD_PARTY_AUTH_ERROR"


class FcmSender(PushSender[aiohttp.ClientSession]):
    """Sends many FCM messages over one keep-alive aiohttp session, with bounded concurrency and retries."""

    provider = PushProvider.FCM
    label = "FCM"

    def __init__(
        self,
        *,
        base_url: str,
        project_id: str,
        credentials: google.auth.credentials.Credentials | None = None,
        concurrency: int = 64,
        max_concurrency: int | None = None,
        max_attempts: int = 5,
        timeout: float = 30.0,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        quota: SendQuota | None = None,
    ) -> None:
        """See ``PushSender`` for concurrency, attempts, ``sleep`` and ``quota``; ``credentials`` default to the
        service account found by google-auth (``resolve_credentials``)."""
        super().__init__(
            concurrency=concurrency,
            max_concurrency=max_concurrency,
            max_attempts=max_attempts,
            sleep=sleep,
            quota=quota,
        )
        self.url = fcm_send_url(base_url, project_id)
        self._timeout = timeout
        self._credentials = resolve_credentials(base_url, credentials)
        self._refresh_lock = threading.Lock()
        self._refresh_failure: tuple[float, google.auth.exceptions.GoogleAuthError] | None = None
        self._refresh_ahead = REFRESH_AHEAD_SECONDS
        self._rejected_token: str | None = None
        self.token_refreshes = 0
        self._static_headers = {
            "Content-Type": "application/json; charset=UTF-8",
            # What firebase-admin sends: FCM picks its error format by it and counts SDK traffic with it.
            "X-GOOG-API-FORMAT-VERSION": "2",
            "X-FIREBASE-CLIENT": f"fire-admin-python/{firebase_admin.__version__}",
        }

    def prepare(self, request: PushRequest) -> bytes:
        encoded = request.message if isinstance(request.message, bytes) else encode(request.message)
        return b'{"message":' + encoded + b"}"

    def unsendable(self, key: str, error: ValueError) -> PushResult:
        invalid = exceptions.InvalidArgumentError(str(error), cause=error)
        reason = QuarantineReason.PAYLOAD_TOO_LARGE.value if isinstance(error, PayloadTooLargeError) else None
        return self.failure(key, invalid, attempts=0, reason=reason)

    @asynccontextmanager
    async def open_session(self) -> AsyncIterator[aiohttp.ClientSession]:
        connector = aiohttp.TCPConnector(limit=self.max_concurrency, keepalive_timeout=30)
        async with aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            headers=self._static_headers,
            skip_auto_headers=("User-Agent",),
        ) as session:
            yield session

    async def before_batch(self) -> None:
        """One token up front; a failure is reported per message by ``post``."""
        with suppress(google.auth.exceptions.GoogleAuthError):
            await self._ensure_fresh_token()

    def failure(self, key: str, error: Exception, attempts: int, reason: str | None = None) -> PushResult:
        if not isinstance(error, exceptions.FirebaseError):  # post and unsendable produce only the SDK's own
            error = exceptions.UnknownError(str(error), cause=error)
        return PushResult(
            key=key,
            message_id=None,
            error=error,
            error_code=fcm_error_code(error),
            error_class=classify_fcm_exception(error),
            attempts=attempts,
            reason=reason or fcm_failure_reason(error),
            provider=self.provider,
        )

    def quota_floor(self, attempt: Attempt) -> float | None:
        return QUOTA_RETRY_FLOOR_SECONDS if attempt.status == 429 else None

    def _token_is_fresh(self) -> bool:
        """google-auth's own ``valid`` renews 3 min 45 s ahead, which would renew a short-lived token on every
        request; this renews that far ahead or at half the token's life, whichever comes first."""
        credentials = self._credentials
        if credentials.token is None or credentials.token == self._rejected_token:
            return False
        if credentials.expiry is None:
            return True
        remaining = (credentials.expiry - _utcnow()).total_seconds()
        return remaining > self._refresh_ahead

    async def _ensure_fresh_token(self) -> None:
        """Renew the OAuth token before it expires: once for everyone waiting, in a thread (it blocks)."""
        if not self._token_is_fresh():
            await asyncio.to_thread(self._refresh_token)

    def _refresh_token(self) -> None:
        """A failed refresh is remembered for a while, so a bad key costs one token request, not one per
        message."""
        with self._refresh_lock:
            if self._token_is_fresh():
                return
            if self._refresh_failure is not None and time.monotonic() < self._refresh_failure[0]:
                raise self._refresh_failure[1]
            try:
                self._credentials.refresh(google.auth.transport.requests.Request())
            except google.auth.exceptions.GoogleAuthError as error:
                self._refresh_failure = (time.monotonic() + REFRESH_RETRY_SECONDS, error)
                raise
            self._refresh_failure = None
            self.token_refreshes += 1
            if self._credentials.expiry is not None:
                lifetime = (self._credentials.expiry - _utcnow()).total_seconds()
                self._refresh_ahead = min(REFRESH_AHEAD_SECONDS, lifetime * REFRESH_AHEAD_FRACTION)

    def credential_rejected(self, credential: str) -> None:
        """FCM refused a token we thought good: the next request renews it (once, whoever noticed first)."""
        if self._credentials.token == credential:
            self._rejected_token = credential

    async def _authorization_headers(self) -> dict[str, str]:
        await self._ensure_fresh_token()
        headers: dict[str, str] = {}
        self._credentials.apply(headers)
        return headers

    async def post(self, session: aiohttp.ClientSession, body: bytes) -> Attempt:
        """One attempt; FCM and transport errors come back as values, never raised."""
        try:
            headers = await self._authorization_headers()
            async with session.post(self.url, data=body, headers=headers) as response:
                content = await response.read()
        except (TimeoutError, aiohttp.ClientError, google.auth.exceptions.GoogleAuthError) as error:
            return Attempt(error=transport_error(error))
        if response.status == 200:
            try:
                return Attempt(message_id=orjson.loads(content)["name"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                pass  # accepted but unreadable: an error that is not retried, lest the push arrive twice
        error = firebase_error(self.url, response.status, list(response.headers.items()), content)
        token_refused = response.status == 401 and fcm_error_code(error) != THIRD_PARTY_AUTH_ERROR
        return Attempt(
            error=error,
            status=response.status,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            rejected_credential=headers["authorization"].partition(" ")[2] if token_refused else None,
        )


def _utcnow() -> datetime.datetime:
    """google-auth keeps ``expiry`` as a naive UTC datetime."""
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
