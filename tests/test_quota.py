"""The shared FCM send quota: permits per attempt, in groups, and two workers holding one low limit together.

No stopwatch: the rate is checked against the token bucket's own bound. Every grant is bracketed by the moments
just before it was asked for and just after it returned, so it happened inside that bracket on the limiter's
side; over any span from one grant's start to another's end, a bucket of ``burst`` refilled at ``r`` a second
can have granted at most ``burst + r * span``. Slow code only widens the spans and loosens the bound: the check
can fail when the limiter over-grants, never because a machine is slow.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from exstream_push.connectors.fcm import FcmSender, PushRequest, build_message
from exstream_push.quota import NoQuota, PermitPool, PrefectQuota, RedisQuota, SendQuota, send_quota
from exstream_push.settings import Settings
from exstream_push.status import PushProvider
from exstream_push_dev.emulators.google_oauth import GoogleEmulators
from exstream_push_dev.emulators.server import ServerThread

REQUIRE_SERVICES = os.environ.get("EXSTREAM_PUSH_REQUIRE_SERVICES") == "1"
REDIS_URL = os.environ.get("EXSTREAM_PUSH_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
PROJECT = "test-project"
PER_MINUTE = 3_000  # 50 a second: 80 messages from a burst of 10 must wait for about 70 refilled permits
BURST = 10
GROUP = 5


@pytest.fixture(autouse=True)
def signed_in_by_application_default_credentials(monkeypatch: pytest.MonkeyPatch, google: GoogleEmulators) -> None:
    """These senders find their service account as google-auth's application-default credentials do."""
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(google.service_account_file))


@pytest.fixture
def redis_url() -> str:
    """Redis for the bucket; skipped without a server unless services are required."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        if REQUIRE_SERVICES:
            pytest.fail(f"Redis is required (EXSTREAM_PUSH_REQUIRE_SERVICES=1) but unreachable: {exc}")
        pytest.skip(f"Redis not reachable at {REDIS_URL}; set EXSTREAM_PUSH_REQUIRE_SERVICES=1 to fail")
    finally:
        client.close()
    return REDIS_URL


@dataclass
class Grant:
    started: float
    returned: float
    permits: int


@dataclass
class RecordingQuota:
    """Wraps a worker's quota and notes when each grant was asked for and when it came back."""

    inner: SendQuota
    grants: list[Grant] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)

    @property
    def group(self) -> int:
        return self.inner.group

    async def acquire(self, permits: int) -> None:
        started = time.monotonic()
        await self.inner.acquire(permits)
        self.grants.append(Grant(started, time.monotonic(), permits))
        self.calls.append(permits)


def request(token: str) -> PushRequest:
    message = build_message(
        title="Your statement is ready",
        body="Open the app to view it.",
        data={"document_ref": f"r-{token}"},
        collapse_key=f"c-{token}",
        token=token,
    )
    return PushRequest(key=f"key-{token}", message=message)


def requests_for(prefix: str, count: int) -> list[PushRequest]:
    return [request(f"ok-{prefix}-{n}") for n in range(count)]


def assert_bucket_held(grants: list[Grant], burst: int, per_second: float) -> None:
    """Every span [one grant's start, another's end] holds no more than the bucket could have let through."""
    grants = sorted(grants, key=lambda grant: grant.started)
    for first in grants:
        for last in grants:
            if last.returned < first.started:
                continue
            inside = sum(g.permits for g in grants if g.started >= first.started and g.returned <= last.returned)
            allowed = burst + per_second * (last.returned - first.started)
            assert inside <= allowed + 1e-6, f"{inside} permits granted where the bucket allowed {allowed:.2f}"


def two_workers_send(fcm: ServerThread, quotas: list[RecordingQuota], per_worker: int) -> None:
    """Two senders, each with its own quota client and event loop in its own thread, as two workers would."""
    errors: list[BaseException] = []

    def work(index: int, quota: RecordingQuota) -> None:
        sender = FcmSender(base_url=fcm.url, project_id=PROJECT, concurrency=8, quota=quota)
        try:
            results = sender.send(requests_for(f"w{index}", per_worker))
            assert all(result.ok for result in results)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i, q)) for i, q in enumerate(quotas)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


def check_shared_limit(fcm: ServerThread, make_quota: Callable[[], SendQuota], per_worker: int = 40) -> None:
    quotas = [RecordingQuota(make_quota()), RecordingQuota(make_quota())]
    two_workers_send(fcm, quotas, per_worker)

    grants = [grant for quota in quotas for grant in quota.grants]
    granted = sum(grant.permits for grant in grants)
    assert fcm.app.state.fcm.requests == 2 * per_worker <= granted  # every request went out with a permit
    assert granted > 4 * BURST  # the bucket was refilled many times over: the limit, not the burst, set the pace
    assert all(quota.grants for quota in quotas)  # both workers drew from it
    assert_bucket_held(grants, BURST, PER_MINUTE / 60)


def test_two_workers_share_one_redis_bucket(fcm: ServerThread, redis_url: str) -> None:
    key = f"exstream-push-test:{uuid.uuid4().hex}"
    check_shared_limit(fcm, lambda: RedisQuota(redis_url, key, PER_MINUTE, burst=BURST, group=GROUP))


def test_two_workers_share_one_prefect_global_concurrency_limit(fcm: ServerThread, prefect_harness: None) -> None:
    name = f"fcm-send-test-{uuid.uuid4().hex[:12]}"
    check_shared_limit(fcm, lambda: PrefectQuota(name, PER_MINUTE, burst=BURST, group=GROUP))

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(name)
    assert (limit.limit, limit.slot_decay_per_second) == (BURST, PER_MINUTE / 60)


def test_a_redis_bucket_never_grants_past_its_burst_between_refills(redis_url: str) -> None:
    """Refilling one permit a minute, two clients asking 20 times each get exactly the burst between them."""
    key = f"exstream-push-test:{uuid.uuid4().hex}"
    workers = [RedisQuota(redis_url, key, per_minute=1, burst=6, group=1) for _ in range(2)]

    async def ask(quota: RedisQuota) -> bool:
        try:
            await asyncio.wait_for(quota.acquire(1), timeout=0.5)
        except TimeoutError:
            return False
        return True

    async def both() -> list[bool]:
        return list(await asyncio.gather(*(ask(workers[n % 2]) for n in range(40))))

    assert sum(asyncio.run(both())) == 6  # a seventh permit needs a minute of refill: the test ends long before


def test_permits_are_taken_per_attempt_in_groups(fcm: ServerThread) -> None:
    """23 requests, two of them answered 503 once and retried: 25 attempts, so five groups of five, and at most
    one more asked for ahead of need."""
    quota = RecordingQuota(_Unlimited(group=5))

    async def no_wait(_: float) -> None:
        return None

    sender = FcmSender(base_url=fcm.url, project_id=PROJECT, concurrency=4, quota=quota, sleep=no_wait)
    requests = [*requests_for("g", 21), request("flaky-1"), request("flaky-2")]
    assert all(result.ok for result in sender.send(requests))
    assert fcm.app.state.fcm.requests == 25
    assert quota.calls in ([5] * 5, [5] * 6)


@dataclass
class _Unlimited:
    group: int

    async def acquire(self, permits: int) -> None:
        return None


def test_settings_choose_the_backend_and_groups_fit_the_bucket() -> None:
    assert isinstance(send_quota(Settings(quota_backend="none"), PushProvider.FCM, PROJECT), NoQuota)
    prefect = send_quota(Settings(), PushProvider.FCM, PROJECT)
    assert isinstance(prefect, PrefectQuota) and prefect.name == f"fcm-send-{PROJECT}"
    assert (prefect.burst, prefect.per_second, prefect.group) == (8_000, 8_000, 500)
    redis_quota = send_quota(
        Settings(quota_backend="redis", fcm_quota_per_minute=600, quota_group=50), PushProvider.FCM, PROJECT
    )
    assert isinstance(redis_quota, RedisQuota) and redis_quota.key.endswith(PROJECT)
    assert (redis_quota.burst, redis_quota.group) == (10, 10)  # a group larger than the bucket could never be granted
    assert FcmSender(base_url="http://127.0.0.1:9", project_id=PROJECT).quota.__class__ is NoQuota


def test_each_provider_has_its_own_bucket_and_rate() -> None:
    settings = Settings(fcm_quota_per_minute=600, apns_quota_per_minute=1_200, webpush_quota_per_minute=60)
    buckets = {
        provider: send_quota(settings, provider, "acct")
        for provider in (PushProvider.FCM, PushProvider.APNS, PushProvider.WEBPUSH)
    }
    assert {quota.name for quota in buckets.values()} == {"fcm-send-acct", "apns-send-acct", "webpush-send-acct"}
    assert [buckets[p].per_second for p in (PushProvider.FCM, PushProvider.APNS, PushProvider.WEBPUSH)] == [10, 20, 1]


def test_the_next_group_is_asked_for_when_half_the_current_one_is_spent() -> None:
    """So a sender never stops for a round-trip to the backend while permits could have been on their way."""
    quota = RecordingQuota(_Unlimited(group=10))

    async def take(count: int) -> list[int]:
        pool = PermitPool(quota)
        asked = []
        for _ in range(count):
            await pool.take()
            await asyncio.sleep(0)  # let a group being fetched arrive
            asked.append(len(quota.calls))
        await pool.close()
        return asked

    # The first group on the first permit; the second once 5 are left; the third once 15 of 20 are spent.
    assert asyncio.run(take(16)) == [1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3]
