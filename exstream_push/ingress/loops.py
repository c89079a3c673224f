"""Closed loops: a customer's signal starts the flow that acts on it within seconds, and a burst only a few runs.

Every accepted signal has its own Prefect event (``exstream-push.engagement.*``, ``exstream-push.preference.updated``,
``exstream.delivery.failed``), which says what happened; a flow run per signal would start thousands for a burst.
So the ingress remembers which loops are owed an announcement and its tick puts one ``exstream-push.loop.due`` event
per loop in the outbox, at most once per ``EXSTREAM_PUSH_LOOP_QUIET_SECONDS``: a burst's first signal is announced
at the next tick, its last once the quiet time has passed. ``prefect.yaml``'s triggers start each loop's deployment
on its event; the run reads everything that arrived since its own watermark (or not yet processed), so the runs an
announcement starts act on each signal once. The schedules stay as the safety net (an ingress that died owing one).
"""

from __future__ import annotations

import threading
from datetime import datetime

from exstream_push.ledger import Ledger
from exstream_push.ledger.ingress import PendingEvent
from exstream_push.ledger.store import utcnow
from exstream_push.prefect_events import enqueue
from exstream_push.status import UseCase

LOOP_DUE_EVENT = "exstream-push.loop.due"

# The flows that close a loop, each started by its own announcement.
LOOPS = (UseCase.LIFECYCLE_TRACKING.value, UseCase.PREFERENCE_SYNC.value, UseCase.DELIVERY_EXCEPTIONS.value)


def loop_resource(use_case: str) -> str:
    """The resource a loop's announcements are about, which its deployment's trigger matches."""
    return f"exstream-push.loop.{use_case}"


class LoopAnnouncer:
    """Which loops are owed an announcement since when, in this ingress process; announced from its tick."""

    def __init__(self, ledger: Ledger, quiet: float) -> None:
        self.ledger = ledger
        self.quiet = quiet
        self._owed: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def owe(self, use_case: str) -> None:
        """Input for ``use_case``'s loop was just stored."""
        with self._lock:
            self._owed[use_case] = utcnow()

    def owed(self) -> bool:
        with self._lock:
            return bool(self._owed)

    def announce_due(self, now: datetime | None = None) -> list[str]:
        """Put in the outbox the announcements whose quiet time has passed; the loops announced."""
        now = now or utcnow()
        with self._lock:
            owed = dict(self._owed)
        announced = []
        for use_case, arrived in owed.items():
            pending = PendingEvent(LOOP_DUE_EVENT, loop_resource(use_case), {"use_case": use_case})
            outcome = self.ledger.ingress.announce_loop(
                f"loop-announced:{use_case}", arrived, now, self.quiet, pending, enqueue
            )
            if outcome == "quiet":
                continue
            if outcome == "announced":
                announced.append(use_case)
            with self._lock:  # what arrived while this was announced stays owed
                if self._owed.get(use_case) == arrived:
                    del self._owed[use_case]
        return announced
