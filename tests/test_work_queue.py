"""The ledger's work queue: one extractor per run, each batch to one claimer, expired and dead claims reclaimed."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest

from exstream_push.ledger import Ledger
from exstream_push.ledger.store import utcnow
from exstream_push.tasks.work_queue import flow_run_of, holder_is_dead, worker_id

LEASE = timedelta(seconds=60)


def never_dead(_worker: str) -> bool:
    return False


@pytest.fixture
def ledger(database_url: str) -> Iterator[Ledger]:
    ledger = Ledger(database_url)
    yield ledger
    ledger.dispose()


def test_first_joiner_extracts_others_wait_then_work(ledger: Ledger) -> None:
    run_id, extracts = ledger.join_run("uc/J2", "a", utcnow() + LEASE, never_dead)
    assert extracts
    assert ledger.join_run("uc/J2", "b", utcnow() + LEASE, never_dead) is None  # a is extracting
    ledger.enqueue_batches(run_id, "a", ["b1", "b2", "b3"], "{}")
    assert ledger.join_run("uc/J2", "b", utcnow() + LEASE, never_dead) == (run_id, False)

    claims = [ledger.claim_batch(run_id, worker, utcnow() + LEASE) for worker in ("a", "b", "a", "b")]
    assert [claim[2] for claim in claims[:3]] == ["b1", "b2", "b3"]
    assert claims[3] is None
    assert not ledger.claim_post_back(run_id, "a", utcnow() + LEASE)  # batches still open
    for claim, worker in zip(claims[:3], ("a", "b", "a"), strict=True):
        assert ledger.complete_batch(claim[0], worker)
    assert ledger.batch_workers(run_id) == {1: "a", 2: "b", 3: "a"}
    assert ledger.claim_post_back(run_id, "b", utcnow() + LEASE)
    assert not ledger.claim_post_back(run_id, "a", utcnow() + LEASE)
    ledger.finish_run(run_id, "b")
    assert ledger.run_state(run_id)[0] == "done"

    # A finished run started again is a new generation, extracted afresh.
    again, extracts = ledger.join_run("uc/J2", "c", utcnow() + LEASE, never_dead)
    assert extracts and again != run_id


def test_an_expired_lease_makes_a_batch_claimable_again(ledger: Ledger) -> None:
    run_id, _ = ledger.join_run("uc/J", "a", utcnow() + LEASE, never_dead)
    ledger.enqueue_batches(run_id, "a", ["b1"], "{}")
    first = ledger.claim_batch(run_id, "a", utcnow() - timedelta(seconds=1))  # a lease already over
    again = ledger.claim_batch(run_id, "b", utcnow() + LEASE)
    assert again is not None and again[0] == first[0]
    assert not ledger.complete_batch(first[0], "a")  # a finished late: the batch is done, b holds it no more
    assert ledger.run_state(run_id)[2] == {"done": 1}


def test_a_dead_extractor_is_taken_over_and_released_claims_are_free(ledger: Ledger) -> None:
    run_id, _ = ledger.join_run("uc/J", "dead", utcnow() + LEASE, never_dead)
    assert ledger.join_run("uc/J", "b", utcnow() + LEASE, lambda worker: worker == "dead") == (run_id, True)
    with pytest.raises(RuntimeError, match="lease was lost"):
        ledger.enqueue_batches(run_id, "dead", ["b1"], "{}")
    ledger.enqueue_batches(run_id, "b", ["b1", "b2"], "{}")

    held = ledger.claim_batch(run_id, "b", utcnow() + LEASE)
    ledger.release_claims("b")
    assert ledger.claim_batch(run_id, "c", utcnow() + LEASE)[0] == held[0]

    ledger.claim_batch(run_id, "dead", utcnow() + LEASE)
    assert ledger.claim_batch(run_id, "c", utcnow() + LEASE) is None
    assert ledger.expire_claims(run_id, lambda worker: worker == "dead") == 1
    assert ledger.claim_batch(run_id, "c", utcnow() + LEASE) is not None


def test_a_holder_is_dead_only_when_its_process_is_gone() -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = worker_id().split(":")[0]
    assert holder_is_dead(f"{host}:{finished.stdout.strip()}:abcd")
    assert not holder_is_dead(f"other-host:{finished.stdout.strip()}:abcd")  # another host: only its lease tells
    assert holder_is_dead(worker_id())  # this process, but no run of it holds that id


def test_the_ledger_names_every_worker_of_a_run(ledger: Ledger) -> None:
    run_id, _ = ledger.join_run("uc/J", "extractor", utcnow() + LEASE, never_dead)
    ledger.enqueue_batches(run_id, "extractor", ["b1", "b2"], "{}")
    first = ledger.claim_batch(run_id, "a", utcnow() + LEASE)
    ledger.claim_batch(run_id, "b", utcnow() + LEASE)
    ledger.complete_batch(first[0], "a")
    assert ledger.run_workers(run_id) == {"a", "b"}  # the extractor handed the run back when it queued it
    assert ledger.claim_post_back(run_id, "c", utcnow() + LEASE) is False  # b still holds a batch
    other, _ = ledger.join_run("uc/K", "d", utcnow() + LEASE, never_dead)
    assert ledger.run_workers(other) == {"d"}


def test_a_worker_id_names_its_flow_run_only_inside_one() -> None:
    assert flow_run_of(worker_id()) is None
    flow_run_id = uuid.uuid4()
    host_and_pid = worker_id().rsplit(":", 1)[0]
    assert flow_run_of(f"{host_and_pid}:abcd:{flow_run_id}") == flow_run_id
    assert flow_run_of(f"{host_and_pid}:abcd:not-a-uuid") is None
    assert holder_is_dead(f"{host_and_pid}:abcd:{flow_run_id}")  # this process, no run of it holds that id
