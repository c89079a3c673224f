"""One FCM send quota shared by every worker: FCM counts messages per project, not per process.

FCM allows 600,000 messages a minute per project and answers ``429 QUOTA_EXCEEDED`` over it, after which every
sender must back off for at least a minute. With several Dask workers or flow runs sending at once, each one's
own pace says nothing about the sum, so they draw permits from one token bucket: a Prefect global concurrency
limit with slot decay (no new service: every flow already has a Prefect API) or a Redis bucket (one round-trip
to Redis instead of to Prefect). A bucket of ``burst`` permits refilled at ``per_minute / 60`` a second lets
through at most ``burst + per_minute`` messages in any minute; the default burst is one second of rate, so the
default 480,000/min stays under 488,000 in any minute, below FCM's 600,000.

Permits are taken in groups (``group``, 500 by default) and handed out one per request by a ``PermitPool``, so
a backend is asked once per group, not once per message. Permits of a group a batch does not use are lost: the
bucket errs on the side of sending slower, never faster.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Protocol

from exstream_push.status import PushProvider

if TYPE_CHECKING:
    from exstream_push.settings import Settings

DEFAULT_GROUP = 500


class SendQuota(Protocol):
    """A shared budget of sends; ``acquire`` returns once ``permits`` (at most ``group``) are granted."""

    group: int

    async def acquire(self, permits: int) -> None: ...


class NoQuota:
    """No shared limit: the permit pool asks for one huge group once and never again."""

    group = 1 << 62

    async def acquire(self, permits: int) -> None:
        return None


def _burst_and_group(per_minute: int, burst: int | None, group: int) -> tuple[int, int]:
    """The bucket must hold a whole group, or a group could never be granted."""
    if per_minute < 1 or group < 1 or (burst is not None and burst < 1):
        raise ValueError("per_minute, burst and group must be at least 1")
    capacity = burst if burst is not None else math.ceil(per_minute / 60)
    return capacity, min(group, capacity)


class PrefectQuota:
    """A Prefect global concurrency limit with slot decay, created (or corrected) on first use."""

    def __init__(self, name: str, per_minute: int, *, burst: int | None = None, group: int = DEFAULT_GROUP) -> None:
        self.name = name
        self.per_second = per_minute / 60
        self.burst, self.group = _burst_and_group(per_minute, burst, group)
        self._ensured = False

    async def ensure(self) -> None:
        """Create the limit or bring its size and decay to ours, so no operator step precedes the first run.

        Prefect's upsert reads, then creates: workers starting together race, and the losers' create is refused
        as a duplicate. Their second upsert finds the limit and takes the update path."""
        from prefect.client.orchestration import get_client
        from prefect.exceptions import ObjectAlreadyExists

        async with get_client() as client:
            try:
                await client.upsert_global_concurrency_limit_by_name(
                    self.name, limit=self.burst, slot_decay_per_second=self.per_second
                )
            except ObjectAlreadyExists:
                await client.upsert_global_concurrency_limit_by_name(
                    self.name, limit=self.burst, slot_decay_per_second=self.per_second
                )
        self._ensured = True

    async def acquire(self, permits: int) -> None:
        """``strict``: a limit missing on the server must stop sending, not silently let everything through."""
        from prefect.concurrency.asyncio import rate_limit

        if not self._ensured:
            await self.ensure()
        await rate_limit(self.name, occupy=permits, strict=True)


_TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local permits = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= permits then
  tokens = tokens - permits
else
  wait = (permits - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 60)
return tostring(wait)
"""
"""Refill by elapsed time on Redis's own clock, then take ``permits`` or say how long until they are there.
One script runs atomically, so concurrent workers can never both spend the same tokens."""


class RedisQuota:
    """A token bucket in Redis: one atomic script call per group, on Redis's clock rather than the workers'."""

    def __init__(
        self, url: str, key: str, per_minute: int, *, burst: int | None = None, group: int = DEFAULT_GROUP
    ) -> None:
        self.url = url
        self.key = key
        self.per_second = per_minute / 60
        self.burst, self.group = _burst_and_group(per_minute, burst, group)

    async def acquire(self, permits: int) -> None:
        """The client is opened per call: each ``FcmSender.send`` runs its own event loop, which a pooled
        asyncio client cannot outlive."""
        import redis.asyncio

        if permits > self.burst:
            raise ValueError(f"cannot take {permits} permits from a bucket of {self.burst}")
        async with redis.asyncio.Redis.from_url(self.url) as client:
            take = client.register_script(_TOKEN_BUCKET)
            while wait := float(await take(keys=[self.key], args=[self.per_second, self.burst, permits])):
                await asyncio.sleep(wait)


class PermitPool:
    """Hands out one permit per request from groups taken from a ``SendQuota``; one per ``send_async`` call,
    since its tasks belong to that call's event loop.

    The next group is asked for when half of the current one is spent, so sending does not stall for a round-trip
    to the backend at every group (a Prefect API call is tens of milliseconds): a batch may end with up to one and
    a half groups unused, which are lost, never the other way round.
    """

    def __init__(self, quota: SendQuota) -> None:
        self._quota = quota
        self._left = 0
        self._low_water = quota.group // 2
        self._next: asyncio.Task[None] | None = None

    async def take(self) -> None:
        while self._left == 0:
            await asyncio.shield(self._fetch_next())
        self._left -= 1
        if self._left <= self._low_water:
            self._fetch_next()

    def _fetch_next(self) -> asyncio.Task[None]:
        if self._next is None:
            self._next = asyncio.get_running_loop().create_task(self._acquire())
        return self._next

    async def _acquire(self) -> None:
        try:
            await self._quota.acquire(self._quota.group)
            self._left += self._quota.group
        finally:
            self._next = None

    async def close(self) -> None:
        """Stop asking for a group nobody will use (the batch is done)."""
        if self._next is not None:
            self._next.cancel()
            await asyncio.gather(self._next, return_exceptions=True)


def send_quota(settings: Settings, provider: PushProvider, account: str) -> SendQuota:
    """The send rate of one provider account (an FCM project, an APNs bundle id, the VAPID key's Web Push origin
    set), as the settings choose; every worker sending for it shares it. Each provider has its own bucket and
    rate, so a Web Push burst never spends FCM's quota."""
    per_minute, group = provider_quota_per_minute(settings, provider), settings.quota_group
    if settings.quota_backend == "prefect":
        return PrefectQuota(f"{provider}-send-{account}", per_minute, group=group)
    if settings.quota_backend == "redis":
        return RedisQuota(settings.redis_url, f"exstream-push:{provider}-quota:{account}", per_minute, group=group)
    return NoQuota()


def provider_quota_per_minute(settings: Settings, provider: PushProvider) -> int:
    """The one setting that owns each provider's share."""
    return {
        PushProvider.FCM: settings.fcm_quota_per_minute,
        PushProvider.APNS: settings.apns_quota_per_minute,
        PushProvider.WEBPUSH: settings.webpush_quota_per_minute,
    }[provider]
