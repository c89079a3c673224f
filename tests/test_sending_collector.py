"""The garbage collector while batches are on the wire: tuned once per process, restored by the last batch to end.

Asserted on the collector's own state (threshold, frozen count), never on a stopwatch.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from exstream_push.connectors.push import SENDING_GC_THRESHOLD, collector_tuned_for_sending, run_sending


@pytest.fixture(autouse=True)
def _default_collector() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)
    gc.unfreeze()


def test_a_send_freezes_the_long_lived_heap_and_restores_the_collector_afterwards() -> None:
    before = gc.get_threshold()
    long_lived = [object() for _ in range(1_000)]

    async def sending() -> tuple[tuple[int, int, int], int]:
        return gc.get_threshold(), gc.get_freeze_count()

    threshold, frozen = run_sending(sending())
    assert threshold == (SENDING_GC_THRESHOLD, *before[1:])
    assert frozen >= len(long_lived)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_the_collector_is_restored_when_a_send_raises() -> None:
    before = gc.get_threshold()

    async def failing() -> None:
        raise RuntimeError("the provider refused us")

    with pytest.raises(RuntimeError):
        run_sending(failing())
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_batches_sent_side_by_side_in_threads_share_one_tuning_the_last_one_restores() -> None:
    before = gc.get_threshold()
    first_in, second_done = threading.Event(), threading.Event()
    seen: dict[str, tuple[int, int, int]] = {}

    def first_batch() -> None:
        with collector_tuned_for_sending():
            first_in.set()
            second_done.wait(5)
            seen["first, after the second ended"] = gc.get_threshold()

    thread = threading.Thread(target=first_batch)
    thread.start()
    assert first_in.wait(5)
    with collector_tuned_for_sending():
        seen["second, inside"] = gc.get_threshold()
    second_done.set()
    thread.join(5)

    tuned = (SENDING_GC_THRESHOLD, *before[1:])
    assert seen == {"second, inside": tuned, "first, after the second ended": tuned}
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
