"""Requests in flight that follow FCM's round trip: more while it stays flat, fewer when it rises or FCM is overloaded.

Asserted on the limit's own accounting (its peak, its back-offs), never on a stopwatch.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from google.oauth2 import service_account

from exstream_push.connectors.concurrency import AdaptiveLimit
from exstream_push.connectors.fcm import FcmSender
from tests.conftest import statement_requests

PROJECT = "test-project"


def settle(limit: AdaptiveLimit, round_trip: float, times: int, *, overloaded: bool = False) -> None:
    """``times`` requests taken and answered one after another, each after ``round_trip`` seconds."""

    async def run() -> None:
        for _ in range(times):
            await limit.acquire()
            limit.release(round_trip, overloaded=overloaded)

    asyncio.run(run())


def test_a_flat_round_trip_grows_the_limit_to_its_ceiling_and_no_further() -> None:
    limit = AdaptiveLimit(floor=64, ceiling=512)
    settle(limit, 0.05, 200)
    assert limit.limit == 264  # slow start: one more per answer, so doubling per round trip
    settle(limit, 0.05, 1000)
    assert limit.limit == 512 and limit.stats().latency_backoffs == 0


def test_a_rising_round_trip_steps_down_but_never_below_the_floor() -> None:
    limit = AdaptiveLimit(floor=64, ceiling=512)
    settle(limit, 0.01, 300)
    grown = limit.limit
    settle(limit, 0.5, 5)  # fifty times the fastest: queueing somewhere; one step down per window
    assert limit.limit == int(grown * 0.9) and limit.stats().latency_backoffs == 1
    settle(limit, 0.5, 5_000)
    assert limit.limit == 64


def test_overload_halves_the_limit_once_per_window_even_below_the_floor() -> None:
    limit = AdaptiveLimit(floor=64, ceiling=512)
    settle(limit, 0.05, 64, overloaded=True)  # a window: as many answers as the limit
    settle(limit, 0.05, 5, overloaded=True)  # answers to requests sent before the halving
    assert limit.limit == 32 and limit.stats().overload_backoffs == 1


def test_a_few_devices_answering_429_on_their_own_do_not_slow_everyone() -> None:
    limit = AdaptiveLimit(floor=64, ceiling=512)

    async def run() -> None:
        for n in range(2_000):
            await limit.acquire()
            limit.release(0.05, overloaded=n % 20 == 0)  # 5% of answers

    asyncio.run(run())
    assert limit.limit == 512 and limit.stats().overload_backoffs == 0


def test_a_limit_resumed_from_a_previous_send_starts_where_that_one_ended() -> None:
    first = AdaptiveLimit(floor=64, ceiling=512)
    settle(first, 0.05, 100)
    resumed = AdaptiveLimit(floor=64, ceiling=512, resume=first.stats())
    assert resumed.stats().start == resumed.limit == 164
    settle(resumed, 0.05, 10)
    assert resumed.limit == 174  # still in slow start: one more per answer
    after_backoff = AdaptiveLimit(floor=64, ceiling=512)
    settle(after_backoff, 0.05, 64, overloaded=True)
    resumed = AdaptiveLimit(floor=64, ceiling=512, resume=after_backoff.stats())
    assert resumed.limit == 64 and not resumed.stats().slow_start  # halved below the floor: back at the floor
    settle(resumed, 0.05, 10)
    assert 64 < resumed.limit < 64 + 10  # 512/16 per round trip (half a slot per answer at 64), not one per answer


def test_a_fixed_limit_stays_where_it_is_on_flat_and_rising_round_trips() -> None:
    limit = AdaptiveLimit(floor=8, ceiling=8)
    settle(limit, 0.01, 100)
    settle(limit, 1.0, 100)
    assert limit.limit == 8


def test_acquire_waits_at_the_limit_and_a_release_lets_the_next_one_in() -> None:
    async def run() -> tuple[bool, bool]:
        limit = AdaptiveLimit(floor=2, ceiling=2)
        await limit.acquire()
        await limit.acquire()
        third = asyncio.create_task(limit.acquire())
        await asyncio.sleep(0.01)
        blocked = not third.done()
        limit.release(0.01)
        await asyncio.wait_for(third, 1)
        return blocked, limit.stats().peak_in_flight == 2

    assert asyncio.run(run()) == (True, True)


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="floor"):
        AdaptiveLimit(floor=0, ceiling=4)
    with pytest.raises(ValueError, match="floor"):
        AdaptiveLimit(floor=8, ceiling=4)


async def no_wait(_: float) -> None:
    await asyncio.sleep(0)


def test_the_sender_keeps_more_than_64_in_flight_when_fcm_is_far_away(
    fcm: Any, fcm_google_credentials: service_account.Credentials
) -> None:
    fcm.app.state.fcm.latency = 0.05
    sender = FcmSender(
        base_url=fcm.url, project_id=PROJECT, credentials=fcm_google_credentials, concurrency=64, max_concurrency=512
    )
    results = sender.send(statement_requests(4_000))
    assert all(result.ok for result in results)
    assert sender.last_limit is not None
    assert sender.last_limit.peak_in_flight > 64
    assert fcm.app.state.fcm.accepted == 4_000


def test_the_next_batch_on_the_same_sender_starts_where_the_last_left_the_limit(
    fcm: Any, fcm_google_credentials: service_account.Credentials
) -> None:
    fcm.app.state.fcm.latency = 0.05
    sender = FcmSender(
        base_url=fcm.url, project_id=PROJECT, credentials=fcm_google_credentials, concurrency=64, max_concurrency=512
    )
    assert all(result.ok for result in sender.send(statement_requests(3_000)))
    first = sender.last_limit
    assert first is not None and first.start == 64 and first.limit > 64
    assert all(result.ok for result in sender.send(statement_requests(500)))
    assert sender.last_limit is not None and sender.last_limit.start == first.limit


@pytest.mark.parametrize("latency", [0.0, 0.02])
def test_no_request_waits_for_a_slot_the_workers_follow_the_limit(
    fcm: Any, fcm_google_credentials: service_account.Credentials, latency: float
) -> None:
    """A worker is started when the limit rises and leaves when it falls, so none queues on the limit (a pool as
    large as the ceiling, waiting on it, cost a sixth of the client's CPU in wake-ups and garbage collection)."""
    fcm.app.state.fcm.latency = latency
    sender = FcmSender(
        base_url=fcm.url, project_id=PROJECT, credentials=fcm_google_credentials, concurrency=16, max_concurrency=512
    )
    results = sender.send(statement_requests(2_000))
    assert all(result.ok for result in results)
    assert sender.last_limit is not None
    assert sender.last_limit.waits == 0
    assert fcm.app.state.fcm.accepted == 2_000


def test_the_sender_backs_off_when_fcm_answers_429(
    fcm: Any, fcm_google_credentials: service_account.Credentials
) -> None:
    fcm.app.state.fcm.latency = 0.01
    sender = FcmSender(
        base_url=fcm.url,
        project_id=PROJECT,
        credentials=fcm_google_credentials,
        concurrency=64,
        max_concurrency=512,
        sleep=no_wait,
    )
    # quota- tokens get one 429 (with Retry-After) each, then go through: every message arrives, once.
    results = sender.send(statement_requests(600, token_prefix="quota"))
    assert all(result.ok for result in results)
    assert sender.last_limit is not None
    assert sender.last_limit.overload_backoffs >= 1
    assert sender.last_limit.limit < 512
    assert fcm.app.state.fcm.accepted == 600
