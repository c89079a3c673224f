"""What every push provider's sender shares: the request and result types and the batch driver.

A provider (FCM, APNs, Web Push) supplies how one request is prepared and posted and how its failures read; the
driver here keeps requests in flight under an adaptive limit and the send quota, retries what the one error table
(``exstream_push.connectors.push_errors``) calls transient, honouring ``Retry-After``, renews a credential the
provider refused once, and hands results back in groups while the rest is in flight, so a crash repeats only what
was on the wire. One mechanism, so idempotency and the crash bound hold the same way for every provider.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Generic, TypeVar

from exstream_push.connectors.concurrency import AdaptiveLimit, LimitStats
from exstream_push.connectors.push_errors import PushErrorClass, PushProvider
from exstream_push.quota import NoQuota, PermitPool, SendQuota

logger = logging.getLogger("exstream_push.connectors.push")

BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 30.0
MAX_RETRY_WAIT_SECONDS = 120.0
"""A provider asking for a longer pause gets the message back as a retryable failure, to be rescheduled by the
caller, instead of one batch sleeping on it."""
FLUSH_INTERVAL_SECONDS = 0.2
OVERLOAD_STATUSES = frozenset({429, 503})

OnResults = Callable[[Sequence["PushResult"]], None]
Session = TypeVar("Session")


@dataclass(frozen=True, slots=True)
class PushRequest:
    key: str
    """The caller's idempotency key, returned untouched with the result."""
    message: Any
    """What the provider's sender posts: for FCM a firebase-admin ``Message`` or its encoded bytes; for APNs and
    Web Push their own prepared notification."""


@dataclass(frozen=True, slots=True)
class PushResult:
    key: str
    message_id: str | None
    error: Exception | None = None
    error_code: str | None = None
    """The provider's error code (UNREGISTERED, BadDeviceToken, 410…) if it gave one."""
    error_class: PushErrorClass | None = None
    attempts: int = 0
    reason: str | None = None
    """What the ledger records for a failure: the error code, with detail where the provider gives it safely
    (``INVALID_ARGUMENT:message.android.ttl``), or ``payload_too_large``."""
    provider: PushProvider | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one POST produced; errors come back as values, never raised."""

    message_id: str | None = None
    error: Exception | None = None
    retry_after: float | None = None
    rejected_credential: str | None = None
    """The credential the provider refused although we thought it good (an OAuth token FCM answered 401 to, an
    APNs provider token answered ``ExpiredProviderToken``): renew it and send again, once."""
    status: int | None = None

    @property
    def overloaded(self) -> bool:
        """The provider asked us to slow down (429) or could not keep up (503)."""
        return self.status in OVERLOAD_STATUSES


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` is either delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


class PushSender(ABC, Generic[Session]):
    """Sends many messages to one provider with bounded, adaptive concurrency, the send quota and retries.

    Subclasses say how a request becomes a body (``prepare``), how a body is posted (``open_session``, ``post``)
    and what a failure means (``failure``); everything else is shared.
    """

    provider: PushProvider
    label: str
    """How logs name the provider (counts only)."""

    def __init__(
        self,
        *,
        concurrency: int = 64,
        max_concurrency: int | None = None,
        max_attempts: int = 5,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        quota: SendQuota | None = None,
    ) -> None:
        """``concurrency`` requests are in flight from the start; up to ``max_concurrency`` while round trips stay
        flat (``AdaptiveLimit``; ``None``: a fixed ``concurrency``). ``sleep`` waits before each retry; tests pass
        one that records what it was asked to wait. ``quota`` grants a permit before every attempt, retries
        included: providers count each request."""
        if concurrency < 1 or max_attempts < 1:
            raise ValueError("concurrency and max_attempts must be at least 1")
        if max_concurrency is not None and max_concurrency < concurrency:
            raise ValueError(f"max_concurrency {max_concurrency} is below concurrency {concurrency}")
        self.concurrency = concurrency
        self.max_concurrency = max_concurrency or concurrency
        self.max_attempts = max_attempts
        self._sleep = sleep
        self.quota: SendQuota = quota if quota is not None else NoQuota()
        self.last_limit: LimitStats | None = None
        """The in-flight limit's accounting of the last ``send_async``: its final value, peak and back-offs. The
        next ``send_async`` starts from that value: keep one sender for many batches to the same provider."""

    # What a provider supplies.

    @abstractmethod
    def prepare(self, request: PushRequest) -> Any:
        """The body to post for ``request``; ``ValueError`` when it cannot be sent at all (``unsendable``)."""

    @abstractmethod
    def unsendable(self, key: str, error: ValueError) -> PushResult:
        """The final result for a request ``prepare`` refused."""

    @abstractmethod
    def open_session(self) -> AbstractAsyncContextManager[Session]:
        """The connection(s) one ``send_async`` posts through."""

    @abstractmethod
    async def post(self, session: Session, body: Any) -> Attempt:
        """One attempt, errors returned as values."""

    @abstractmethod
    def failure(self, key: str, error: Exception, attempts: int) -> PushResult:
        """The result of a failed attempt, classified by the one error table."""

    async def before_batch(self) -> None:
        """Once before the first request (e.g. obtain a token, so requests do not race to); never raises."""

    def credential_rejected(self, credential: str) -> None:
        """The provider refused ``credential``: the next request renews it."""

    def quota_floor(self, attempt: Attempt) -> float | None:
        """The least pause a provider asks for when it says slow down without ``Retry-After`` (None: backoff)."""
        return None

    # Shared.

    def retry_delay(self, attempt_number: int, attempt: Attempt) -> float:
        """Exponential backoff with jitter; ``Retry-After`` (or the provider's floor for a bare 429) is a floor,
        with jitter on top so that messages told the same pause do not return in one burst."""
        backoff = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt_number - 1))
        retry_after = attempt.retry_after if attempt.retry_after is not None else self.quota_floor(attempt)
        if retry_after is None:
            return random.uniform(backoff / 2, backoff)
        return retry_after + random.uniform(0, backoff / 2)

    def send(
        self, requests: Sequence[PushRequest], on_results: OnResults | None = None, flush_size: int = 100
    ) -> list[PushResult]:
        """``send_async`` for synchronous callers, on an event loop of its own (uvloop where installed)."""
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            return runner.run(self.send_async(requests, on_results, flush_size))

    async def send_async(
        self, requests: Sequence[PushRequest], on_results: OnResults | None = None, flush_size: int = 100
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
        await self.before_batch()
        batch = _Batch(self, requests, on_results, flush_size)
        async with self.open_session() as session:
            results = await batch.run(session)
        self._log_summary(results)
        return results

    def _log_summary(self, results: Sequence[PushResult]) -> None:
        """Counts only: device addresses and payloads never reach the log."""
        failures = Counter(result.error_code for result in results if not result.ok)
        retried = sum(result.attempts > 1 for result in results)
        logger.info(
            "%s batch: %d sent, %d failed %s, %d needed retries",
            self.label,
            len(results) - failures.total(),
            failures.total(),
            dict(failures),
            retried,
        )
        if any(result.error_class is not None and result.error_class.alert_operator for result in results):
            logger.error("%s refused our configuration (credentials, project or keys): %s", self.label, dict(failures))


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop where installed (a sixth less client CPU per request here than asyncio's), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


class _Batch:
    """One ``send_async`` call: a queue of (index, attempt) drained by a pool of workers that follows the adaptive
    limit — one more when the limit rises and work is waiting, one fewer when a worker finishes above it — so no
    worker waits on the limit (a pool of ``max_concurrency`` workers waiting on it cost a sixth of the client's CPU
    on loopback, in wake-ups and garbage collection)."""

    def __init__(
        self,
        sender: PushSender[Any],
        requests: Sequence[PushRequest],
        on_results: OnResults | None,
        flush_size: int,
    ) -> None:
        self._sender = sender
        self._requests = requests
        self._on_results = on_results
        self._flush_size = flush_size
        self._results: list[PushResult | None] = [None] * len(requests)
        self._bodies: list[Any] = [None] * len(requests)
        self._unflushed: list[PushResult] = []
        self._unresolved = len(requests)
        self._finished = asyncio.Event()
        self._failure: BaseException | None = None
        self._queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
        self._workers: set[asyncio.Task[None]] = set()
        self._staffed = 0
        """Workers started and not yet leaving: what the limit is compared with (the set empties later)."""
        self._idle = 0
        """Workers waiting for the queue: queued work beyond them needs a new worker."""
        self._pending_retries: set[asyncio.Task[None]] = set()
        self._permits = PermitPool(sender.quota)
        self._limit = AdaptiveLimit(sender.concurrency, sender.max_concurrency, resume=sender.last_limit)
        self._session: Any = None

    async def run(self, session: Any) -> list[PushResult]:
        self._session = session
        for index, request in enumerate(self._requests):
            try:
                self._bodies[index] = self._sender.prepare(request)
            except ValueError as error:
                self._resolve(index, self._sender.unsendable(request.key, error))
            else:
                self._queue.put_nowait((index, 1))
        flusher = self._watched(self._flush_periodically())
        try:
            self._staff()
            if self._unresolved:
                await self._finished.wait()
            if self._failure is not None:
                raise self._failure  # a worker or the flusher stopped by raising (from on_results)
            self._flush()
        finally:
            tasks = [flusher, *self._workers, *self._pending_retries]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._permits.close()
            self._sender.last_limit = self._limit.stats()
        return [result for result in self._results if result is not None]

    def _watched(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        task.add_done_callback(self._watch)
        return task

    def _watch(self, task: asyncio.Task[None]) -> None:
        """A task that raised stops the batch: ``run`` re-raises its exception."""
        self._workers.discard(task)
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()
            self._finished.set()

    def _staff(self) -> None:
        """Start workers while the limit has room for more and queued work has no idle worker to take it."""
        while self._staffed < self._limit.limit and self._queue.qsize() > self._idle:
            self._staffed += 1
            self._workers.add(self._watched(self._work()))

    async def _work(self) -> None:
        try:
            while self._staffed <= self._limit.limit:
                self._idle += 1
                try:
                    index, attempt_number = await self._queue.get()
                finally:
                    self._idle -= 1
                await self._attempt(index, attempt_number)
                self._staff()
        finally:
            self._staffed -= 1

    async def _attempt(self, index: int, attempt_number: int) -> None:
        sender = self._sender
        await self._limit.acquire()
        await self._permits.take()
        started = time.monotonic()
        attempt = await sender.post(self._session, self._bodies[index])
        self._limit.release(time.monotonic() - started, overloaded=attempt.overloaded)
        key = self._requests[index].key
        if attempt.error is None:
            self._resolve(
                index,
                PushResult(key=key, message_id=attempt.message_id, attempts=attempt_number, provider=sender.provider),
            )
            return
        if attempt.rejected_credential is not None and attempt_number < sender.max_attempts:
            sender.credential_rejected(attempt.rejected_credential)
            self._queue.put_nowait((index, attempt_number + 1))
            return
        result = sender.failure(key, attempt.error, attempts=attempt_number)
        if result.error_class is not None and result.error_class.retryable and attempt_number < sender.max_attempts:
            delay = sender.retry_delay(attempt_number, attempt)
            if delay <= MAX_RETRY_WAIT_SECONDS:
                retry = asyncio.create_task(self._retry_later(delay, index, attempt_number + 1))
                self._pending_retries.add(retry)
                retry.add_done_callback(self._pending_retries.discard)
                return
        self._resolve(index, result)

    async def _retry_later(self, delay: float, index: int, attempt_number: int) -> None:
        """Wait outside the workers, so a message told to pause does not hold a connection slot meanwhile."""
        await self._sender._sleep(delay)
        self._queue.put_nowait((index, attempt_number))
        self._staff()

    def _resolve(self, index: int, result: PushResult) -> None:
        self._results[index] = result
        self._unresolved -= 1
        if self._on_results is not None:
            self._unflushed.append(result)
            if len(self._unflushed) >= self._flush_size:
                self._flush()
        if self._unresolved == 0:
            self._finished.set()

    def _flush(self) -> None:
        if self._on_results is None or not self._unflushed:
            return
        group, self._unflushed = self._unflushed, []
        self._on_results(group)

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_SECONDS)
            self._flush()
