"""The sender: many FCM messages over one keep-alive aiohttp session, with bounded concurrency, retries that
honour ``Retry-After``, a send quota, and results handed back while the rest is in flight."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
import firebase_admin
import google.auth.credentials
import google.auth.exceptions
import google.auth.transport.requests
import orjson
from firebase_admin import exceptions, messaging

from exstream_push.connectors.fcm.auth import fcm_send_url, resolve_credentials
from exstream_push.connectors.fcm.concurrency import AdaptiveLimit, LimitStats
from exstream_push.connectors.fcm.errors import firebase_error, parse_retry_after, transport_error
from exstream_push.connectors.fcm.message import PayloadTooLargeError, encode
from exstream_push.connectors.push_errors import (
    PushErrorClass,
    classify_fcm_exception,
    fcm_error_code,
    fcm_failure_reason,
)
from exstream_push.quota import NoQuota, PermitPool, SendQuota
from exstream_push.status import QuarantineReason

if TYPE_CHECKING:
    pass

# The package's name, as before it was split into modules: log configuration and readers find it unchanged.
logger = logging.getLogger("exstream_push.connectors.fcm")

BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 30.0
QUOTA_RETRY_FLOOR_SECONDS = 60.0
"""FCM asks for at least a minute before retrying a 429 that came without ``Retry-After``."""
MAX_RETRY_WAIT_SECONDS = 120.0
"""A provider asking for a longer pause gets the message back as a retryable failure, to be rescheduled by the
caller, instead of one batch sleeping on it."""
FLUSH_INTERVAL_SECONDS = 0.2
REFRESH_RETRY_SECONDS = 30.0
REFRESH_AHEAD_SECONDS = 225.0
"""An access token is renewed this long before it expires (google-auth's own margin for hour-long tokens)..."""
REFRESH_AHEAD_FRACTION = 0.5
"""...or at half its life when it is shorter than twice that, so a short-lived token is not renewed per request."""
THIRD_PARTY_AUTH_ERROR = "THIRD_PARTY_AUTH_ERROR"
OVERLOAD_STATUSES = frozenset({429, 503})


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop where installed (a sixth less client CPU per request here than asyncio's), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


@dataclass(frozen=True, slots=True)
class PushRequest:
    key: str
    """The caller's idempotency key, returned untouched with the result."""
    message: messaging.Message | bytes
    """A message, or what ``encode`` made of it: render encodes each message once to check its size, and the
    sender posts those bytes instead of encoding again."""


@dataclass(frozen=True, slots=True)
class PushResult:
    key: str
    message_id: str | None
    error: exceptions.FirebaseError | None = None
    error_code: str | None = None
    """The FCM error code (UNREGISTERED, QUOTA_EXCEEDED…) if FCM gave one, else firebase-admin's code."""
    error_class: PushErrorClass | None = None
    attempts: int = 0
    reason: str | None = None
    """What the ledger records for a failure: the error code, with the fields FCM refused
    (``INVALID_ARGUMENT:message.android.ttl``), or ``payload_too_large`` for a message over its target's limit."""

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class _Attempt:
    """What one POST produced."""

    message_id: str | None = None
    error: exceptions.FirebaseError | None = None
    retry_after: float | None = None
    rejected_token: str | None = None
    """The access token FCM answered 401 UNAUTHENTICATED to (expired early, revoked): renew it and send again."""
    status: int | None = None

    @property
    def overloaded(self) -> bool:
        """FCM asked us to slow down (429) or could not keep up (503)."""
        return self.status in OVERLOAD_STATUSES


class FcmSender:
    """Sends many FCM messages over one keep-alive aiohttp session, with bounded concurrency and retries."""

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
        """``concurrency`` requests are in flight from the start; up to ``max_concurrency`` while round trips stay
        flat (``AdaptiveLimit``; ``None``: a fixed ``concurrency``). ``sleep`` waits before each retry; tests pass
        one that records what it was asked to wait. ``quota`` grants a permit before every attempt, retries
        included: FCM counts each request."""
        if concurrency < 1 or max_attempts < 1:
            raise ValueError("concurrency and max_attempts must be at least 1")
        if max_concurrency is not None and max_concurrency < concurrency:
            raise ValueError(f"max_concurrency {max_concurrency} is below concurrency {concurrency}")
        self.url = fcm_send_url(base_url, project_id)
        self.concurrency = concurrency
        self.max_concurrency = max_concurrency or concurrency
        self.last_limit: LimitStats | None = None
        """The in-flight limit's accounting of the last ``send_async``: its final value, peak and back-offs."""
        self.max_attempts = max_attempts
        self._timeout = timeout
        self._sleep = sleep
        self.quota: SendQuota = quota if quota is not None else NoQuota()
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

    def send(
        self,
        requests: Sequence[PushRequest],
        on_results: Callable[[Sequence[PushResult]], None] | None = None,
        flush_size: int = 100,
    ) -> list[PushResult]:
        """``send_async`` for synchronous callers, on an event loop of its own (uvloop where installed)."""
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            return runner.run(self.send_async(requests, on_results, flush_size))

    async def send_async(
        self,
        requests: Sequence[PushRequest],
        on_results: Callable[[Sequence[PushResult]], None] | None = None,
        flush_size: int = 100,
    ) -> list[PushResult]:
        """Send every request; return one result per request, in request order.

        ``on_results`` receives completed results in groups of at most ``flush_size``, at least every 0.2 s,
        on the event-loop thread, so the caller can record outcomes while the rest is in flight: after a crash
        only what was truly in flight (or not yet handed over) may be sent again. Keep it quick (one batched
        write). If it raises, sending stops and the exception propagates.
        """
        if flush_size < 1:
            raise ValueError("flush_size must be at least 1")
        if not requests:
            return []
        with contextlib.suppress(google.auth.exceptions.GoogleAuthError):
            await self._ensure_fresh_token()  # once up front; a failure is reported per message by _post
        batch = _Batch(self, requests, on_results, flush_size)
        connector = aiohttp.TCPConnector(limit=self.max_concurrency, keepalive_timeout=30)
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            headers=self._static_headers,
            skip_auto_headers=("User-Agent",),
        ) as session:
            results = await batch.run(session)
        _log_summary(results)
        return results

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

    def _token_rejected(self, token: str) -> None:
        """FCM refused a token we thought good: the next request renews it (once, whoever noticed first)."""
        if self._credentials.token == token:
            self._rejected_token = token

    async def _authorization_headers(self) -> dict[str, str]:
        await self._ensure_fresh_token()
        headers: dict[str, str] = {}
        self._credentials.apply(headers)
        return headers

    async def _post(self, session: aiohttp.ClientSession, body: bytes) -> _Attempt:
        """One attempt; FCM and transport errors come back as values, never raised."""
        try:
            headers = await self._authorization_headers()
            async with session.post(self.url, data=body, headers=headers) as response:
                content = await response.read()
        except (TimeoutError, aiohttp.ClientError, google.auth.exceptions.GoogleAuthError) as error:
            return _Attempt(error=transport_error(error))
        if response.status == 200:
            try:
                return _Attempt(message_id=orjson.loads(content)["name"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                pass  # accepted but unreadable: an error that is not retried, lest the push arrive twice
        error = firebase_error(self.url, response.status, list(response.headers.items()), content)
        token_refused = response.status == 401 and fcm_error_code(error) != THIRD_PARTY_AUTH_ERROR
        return _Attempt(
            error=error,
            status=response.status,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            rejected_token=headers["authorization"].partition(" ")[2] if token_refused else None,
        )

    def _retry_delay(self, attempt: int, error: exceptions.FirebaseError, retry_after: float | None) -> float:
        """Exponential backoff with jitter; ``Retry-After`` (or FCM's one-minute rule for a bare 429) is a
        floor, with jitter on top so that messages told the same pause do not return in one burst."""
        backoff = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))
        if retry_after is None and error.http_response is not None and error.http_response.status_code == 429:
            retry_after = QUOTA_RETRY_FLOOR_SECONDS
        if retry_after is None:
            return random.uniform(backoff / 2, backoff)
        return retry_after + random.uniform(0, backoff / 2)


class _Batch:
    """One ``send_async`` call: a queue of (index, attempt) drained by ``concurrency`` workers."""

    def __init__(
        self,
        sender: FcmSender,
        requests: Sequence[PushRequest],
        on_results: Callable[[Sequence[PushResult]], None] | None,
        flush_size: int,
    ) -> None:
        self._sender = sender
        self._requests = requests
        self._on_results = on_results
        self._flush_size = flush_size
        self._results: list[PushResult | None] = [None] * len(requests)
        self._bodies: list[bytes] = [b""] * len(requests)
        self._unflushed: list[PushResult] = []
        self._unresolved = len(requests)
        self._all_resolved = asyncio.Event()
        self._queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
        self._pending_retries: set[asyncio.Task[None]] = set()
        self._permits = PermitPool(sender.quota)
        self._limit = AdaptiveLimit(sender.concurrency, sender.max_concurrency)

    async def run(self, session: aiohttp.ClientSession) -> list[PushResult]:
        for index, request in enumerate(self._requests):
            try:
                encoded = request.message if isinstance(request.message, bytes) else encode(request.message)
                self._bodies[index] = b'{"message":' + encoded + b"}"
            except ValueError as error:
                invalid = exceptions.InvalidArgumentError(str(error), cause=error)
                reason = QuarantineReason.PAYLOAD_TOO_LARGE.value if isinstance(error, PayloadTooLargeError) else None
                self._resolve(index, _failure(request.key, invalid, attempts=0, reason=reason))
            else:
                self._queue.put_nowait((index, 1))
        workers = [
            asyncio.create_task(self._work(session))
            for _ in range(min(self._sender.max_concurrency, self._queue.qsize()))
        ]
        background = [*workers, asyncio.create_task(self._flush_periodically())]
        all_resolved = asyncio.create_task(self._all_resolved.wait())
        try:
            done, _ = await asyncio.wait([all_resolved, *background], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a worker or the flusher only finishes early by raising (from on_results)
            self._flush()
        finally:
            for task in (all_resolved, *background, *self._pending_retries):
                task.cancel()
            await asyncio.gather(all_resolved, *background, *self._pending_retries, return_exceptions=True)
            await self._permits.close()
            self._sender.last_limit = self._limit.stats()
        return [result for result in self._results if result is not None]

    async def _work(self, session: aiohttp.ClientSession) -> None:
        sender = self._sender
        while True:
            index, attempt = await self._queue.get()
            await self._limit.acquire()
            await self._permits.take()
            started = time.monotonic()
            outcome = await sender._post(session, self._bodies[index])
            self._limit.release(time.monotonic() - started, overloaded=outcome.overloaded)
            key = self._requests[index].key
            if outcome.error is None:
                self._resolve(index, PushResult(key=key, message_id=outcome.message_id, attempts=attempt))
                continue
            if outcome.rejected_token is not None and attempt < sender.max_attempts:
                sender._token_rejected(outcome.rejected_token)
                self._queue.put_nowait((index, attempt + 1))
                continue
            result = _failure(key, outcome.error, attempts=attempt)
            if result.error_class is not None and result.error_class.retryable and attempt < sender.max_attempts:
                delay = sender._retry_delay(attempt, outcome.error, outcome.retry_after)
                if delay <= MAX_RETRY_WAIT_SECONDS:
                    retry = asyncio.create_task(self._retry_later(delay, index, attempt + 1))
                    self._pending_retries.add(retry)
                    retry.add_done_callback(self._pending_retries.discard)
                    continue
            self._resolve(index, result)

    async def _retry_later(self, delay: float, index: int, attempt: int) -> None:
        """Wait outside the workers, so a message told to pause does not hold a connection slot meanwhile."""
        await self._sender._sleep(delay)
        self._queue.put_nowait((index, attempt))

    def _resolve(self, index: int, result: PushResult) -> None:
        self._results[index] = result
        self._unresolved -= 1
        if self._on_results is not None:
            self._unflushed.append(result)
            if len(self._unflushed) >= self._flush_size:
                self._flush()
        if self._unresolved == 0:
            self._all_resolved.set()

    def _flush(self) -> None:
        if self._on_results is None or not self._unflushed:
            return
        group, self._unflushed = self._unflushed, []
        self._on_results(group)

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_SECONDS)
            self._flush()


def _utcnow() -> datetime.datetime:
    """google-auth keeps ``expiry`` as a naive UTC datetime."""
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def _failure(key: str, error: exceptions.FirebaseError, attempts: int, reason: str | None = None) -> PushResult:
    return PushResult(
        key=key,
        message_id=None,
        error=error,
        error_code=fcm_error_code(error),
        error_class=classify_fcm_exception(error),
        attempts=attempts,
        reason=reason or fcm_failure_reason(error),
    )


def _log_summary(results: Sequence[PushResult]) -> None:
    """Counts only: tokens and payloads never reach the log."""
    failures = Counter(result.error_code for result in results if not result.ok)
    retried = sum(result.attempts > 1 for result in results)
    logger.info(
        "FCM batch: %d sent, %d failed %s, %d needed retries",
        len(results) - failures.total(),
        failures.total(),
        dict(failures),
        retried,
    )
    if any(result.error_class is not None and result.error_class.alert_operator for result in results):
        logger.error("FCM refused our configuration (credentials, project or APNs/Web Push keys): %s", dict(failures))
