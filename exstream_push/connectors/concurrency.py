"""How many FCM requests may be in flight: enough to keep a distant FCM's pipe full, no more than it takes.

At a real round trip (tens of milliseconds) the send rate is requests in flight over the round trip, so a fixed 64
caps a sender at 1,280 messages/s at 50 ms. The limit here starts at the configured floor (or where the same
sender's previous batch left it) and grows while round trips stay flat — doubling per round trip at first (slow
start), then by a sixteenth of the ceiling per round trip — up to the ceiling. Round trips that rise past twice the
fastest seen mean requests are queueing somewhere (our CPU, the network, FCM): the limit steps down a tenth, never
below the floor. When more than a tenth of a window's answers say FCM is overloaded (429, 503), it halves, below the
floor if need be: a few dead or rate-limited devices answering 429 or 503 on their own do not slow everyone. A
window is as many answers as the limit was when it opened, about one round trip's worth; each rule acts at most once
per window, since the answers to requests sent before a change say nothing of it. On loopback the round trip is
CPU-bound and the limit stays near the floor.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

LATENCY_TOLERANCE = 2.0
"""A round trip up to this many times the fastest seen counts as flat."""
LATENCY_STEP_DOWN = 0.9
OVERLOAD_STEP_DOWN = 0.5
OVERLOAD_SHARE = 0.1
"""More than this share of a window's answers overloaded (429, 503) halves the limit."""
GROWTH_PER_ROUND_TRIP = 1 / 16
"""After slow start, the limit grows by this share of the ceiling per round trip of flat answers."""


@dataclass(frozen=True, slots=True)
class LimitStats:
    """The limit's own accounting of one send: what a test or the bench asserts on, never a stopwatch."""

    start: int
    """Where the send began: the floor, or where the same sender's previous send left the limit."""
    limit: int
    peak_in_flight: int
    overload_backoffs: int
    latency_backoffs: int
    waits: int
    """Requests that found every slot taken and waited for one: none while the workers follow the limit."""
    slow_start: bool
    """Still doubling per round trip (no back-off yet, ceiling not reached)."""


class AdaptiveLimit:
    """An asyncio gate: ``await acquire()`` before a request, ``release(...)`` after it, with its outcome."""

    def __init__(self, floor: int, ceiling: int, resume: LimitStats | None = None) -> None:
        """``resume``: the previous send's accounting, to start where it left off (as TCP keeps a destination's
        slow-start threshold), not from the floor; a batch of a few thousand messages would otherwise spend
        several round trips of it in slow start. The fastest round trip is learnt afresh each send."""
        if not 1 <= floor <= ceiling:
            raise ValueError(f"concurrency floor {floor} and ceiling {ceiling}: need 1 <= floor <= ceiling")
        self.floor = floor
        self.ceiling = ceiling
        self._start = floor if resume is None else min(max(resume.limit, floor), ceiling)
        self._limit = float(self._start)
        self._slow_start = self._start < ceiling and (resume is None or resume.slow_start)
        self._fastest = float("inf")
        self._window_size = self._start
        self._window_answers = 0
        self._window_overloads = 0
        self._stepped_down_in_window = False
        self._in_flight = 0
        self._peak_in_flight = 0
        self._overload_backoffs = 0
        self._latency_backoffs = 0
        self._waits = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def limit(self) -> int:
        return max(1, int(self._limit))

    def stats(self) -> LimitStats:
        return LimitStats(
            start=self._start,
            limit=self.limit,
            peak_in_flight=self._peak_in_flight,
            overload_backoffs=self._overload_backoffs,
            latency_backoffs=self._latency_backoffs,
            waits=self._waits,
            slow_start=self._slow_start and self._limit < self.ceiling,
        )

    async def acquire(self) -> None:
        if self._in_flight >= self.limit or self._waiters:
            self._waits += 1
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter  # the slot is handed over by _wake, already counted
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._in_flight -= 1  # handed a slot, then cancelled before using it
                    self._wake()
                raise
        else:
            self._in_flight += 1
        self._peak_in_flight = max(self._peak_in_flight, self._in_flight)

    def release(self, round_trip: float, *, overloaded: bool = False) -> None:
        """``round_trip`` in seconds; ``overloaded`` when FCM answered 429 or 503."""
        self._in_flight -= 1
        self._window_answers += 1
        if overloaded:
            self._window_overloads += 1
        else:
            self._fastest = min(self._fastest, round_trip)
            if round_trip <= self._fastest * LATENCY_TOLERANCE:
                step = 1.0 if self._slow_start else self.ceiling * GROWTH_PER_ROUND_TRIP / self._limit
                self._limit = min(float(self.ceiling), self._limit + step)
            elif self._limit > self.floor and not self._stepped_down_in_window:
                self._limit = max(float(self.floor), self._limit * LATENCY_STEP_DOWN)
                self._slow_start = False
                self._stepped_down_in_window = True
                self._latency_backoffs += 1
        if self._window_answers >= self._window_size:
            self._close_window()
        self._wake()

    def _close_window(self) -> None:
        if self._window_overloads > OVERLOAD_SHARE * self._window_answers:
            self._limit = max(1.0, self._limit * OVERLOAD_STEP_DOWN)
            self._slow_start = False
            self._overload_backoffs += 1
        self._window_size = self.limit
        self._window_answers = self._window_overloads = 0
        self._stepped_down_in_window = False

    def _wake(self) -> None:
        while self._waiters and self._in_flight < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._in_flight += 1
                waiter.set_result(None)
