"""Shared runs: several processes started on the same run (same use case and job) split its batches between them.

One process extracts (the first to join; a dead or stalled extractor is taken over when its lease ends), queues
the spooled batches in the ledger, and every process then claims batches one at a time until none is left. A
claim is a lease, renewed by a heartbeat thread while its holder lives; a worker that dies (SIGKILL, lost host)
stops renewing, and its batch becomes claimable again — at once when the holder was a process of this host that
no longer exists. The outcomes are posted back by exactly one process, after the last batch is done.
A worker's id carries its Prefect flow run id: a process that finds an earlier worker of its run dead marks that
flow run Crashed, which a SIGKILLed process could not report itself (the heartbeat automation in ``prefect.yaml``
covers the workers nobody comes after, and hosts this one cannot look into).
Workers must share the database and the spool folder (``EXSTREAM_PUSH_HOME``, or a shared volume under it).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.states import Crashed

from exstream_push.keys import run_key
from exstream_push.ledger import Ledger
from exstream_push.ledger.store import utcnow
from exstream_push.memory import return_freed_memory
from exstream_push.runtime import ledger_for, run_logger
from exstream_push.settings import get_settings
from exstream_push.status import BatchState, RunState
from exstream_push.tasks.extract import ExtractedManifest
from exstream_push.tasks.summary import artifact_key

# A lease outlives several missed heartbeats; a holder on another host that dies is replaced after this long.
LEASE = timedelta(seconds=60)
HEARTBEAT_SECONDS = 10.0
POLL_SECONDS = 0.5

_HOST = socket.gethostname()
_active: dict[str, Ledger] = {}  # worker id → ledger, for the claims this process holds
_active_lock = threading.Lock()
_heartbeat: threading.Thread | None = None
_reported_dead: set[str] = set()  # workers whose flow runs this process has already looked at


@dataclass(frozen=True)
class SharedRun:
    """This process's place in a shared run."""

    run_id: int
    run_key: str
    use_case: str
    worker: str
    extracts: bool
    up_to_date: bool = False
    """Joined a finished run that nothing has changed since: there is nothing to do."""


def worker_id() -> str:
    """host:pid:token[:flow run id] — the pid lets a process of the same host tell a dead holder at once, the token
    one run, the flow run id (inside a flow run) which Prefect run to mark Crashed when the holder is found dead."""
    worker = f"{_HOST}:{os.getpid()}:{secrets.token_hex(4)}"
    return f"{worker}:{flow_run.id}" if flow_run.id else worker


def flow_run_of(worker: str) -> UUID | None:
    """The Prefect flow run a worker id names, if it names one."""
    parts = worker.split(":")
    if len(parts) < 4:
        return None
    try:
        return UUID(parts[3])
    except ValueError:
        return None


def holder_is_dead(worker: str) -> bool:
    """True only when sure: a holder on this host whose process is gone, or a run of this process that ended."""
    host, _, rest = worker.partition(":")
    pid_text, _, _token = rest.partition(":")
    if host != _HOST or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        with _active_lock:
            return worker not in _active
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def crash_dead_workers(run: SharedRun, candidates: Collection[str] = ()) -> int:
    """Mark Crashed the flow runs of this run's earlier workers whose process is gone and that Prefect still thinks
    are running; returns how many. ``candidates`` adds holders the ledger replaced (a dead extractor taken over).

    Only holders ``holder_is_dead`` is sure of count, never this flow run itself (a flow run started again keeps
    its id); a Prefect API failure is logged and the run goes on, since this only corrects what the UI shows.
    """
    ledger = ledger_for(get_settings())
    workers = (ledger.run_workers(run.run_id) | set(candidates)) - _reported_dead
    dead = {worker for worker in workers if holder_is_dead(worker)}
    _reported_dead.update(dead)
    flow_runs = {flow_run_of(worker) for worker in dead} - {None, flow_run_of(run.worker)}
    if not flow_runs:
        return 0
    message = f"its process died; a later worker of run {run.run_key} took over its unfinished work"
    crashed = 0
    try:
        with get_client(sync_client=True) as client:
            for flow_run_id in flow_runs:
                state = client.read_flow_run(flow_run_id).state
                if state is None or not state.is_final():
                    client.set_flow_run_state(flow_run_id, Crashed(message=message), force=True)
                    crashed += 1
    except Exception:  # an unknown flow run, or the API away: the ledger's takeover goes on regardless
        run_logger().warning("run %s: could not mark dead workers' flow runs Crashed", run.run_key, exc_info=True)
    if crashed:
        run_logger().warning("run %s: %d dead worker flow run(s) marked Crashed", run.run_key, crashed)
    return crashed


def _renew_forever() -> None:
    while True:
        time.sleep(HEARTBEAT_SECONDS)
        with _active_lock:
            by_ledger: dict[int, tuple[Ledger, list[str]]] = {}
            for worker, ledger in _active.items():
                by_ledger.setdefault(id(ledger), (ledger, []))[1].append(worker)
        for ledger, workers in by_ledger.values():
            try:
                ledger.renew_leases(workers, utcnow() + LEASE)
            except Exception:  # a database hiccup must not kill the heartbeat; the next beat tries again
                run_logger().warning("could not renew leases; retrying in %.0f s", HEARTBEAT_SECONDS, exc_info=True)


def _register(worker: str, ledger: Ledger) -> None:
    global _heartbeat
    with _active_lock:
        _active[worker] = ledger
        if _heartbeat is None:
            _heartbeat = threading.Thread(target=_renew_forever, name="exstream-push-leases", daemon=True)
            _heartbeat.start()


def _unregister(worker: str) -> None:
    with _active_lock:
        _active.pop(worker, None)


@task(name="join-run", cache_policy=NO_CACHE)
def join_run(use_case: str, job_id: str, content: str | None = None) -> SharedRun:
    """Join the run of this job: extract it if nobody is, else wait until it is extracted (or its extractor dies).

    ``content`` identifies what the run is made of (a manifest's digest): a finished run of the same content with
    nothing pending and no device changed since is joined as it is, done, instead of starting it again.
    """
    ledger = ledger_for(get_settings())
    key = run_key(use_case, job_id)
    worker = worker_id()
    _register(worker, ledger)
    holders: set[str] = set()  # every holder the ledger asked about, so a replaced extractor is not forgotten

    def is_dead(holder: str) -> bool:
        holders.add(holder)
        return holder_is_dead(holder)

    while (joined := ledger.join_run(key, worker, utcnow() + LEASE, is_dead, content)) is None:
        time.sleep(POLL_SECONDS)
    run_id, extracts = joined
    up_to_date = not extracts and ledger.run_state(run_id)[0] == RunState.DONE
    role = "extractor" if extracts else "up to date" if up_to_date else "worker"
    run_logger().info("run %s #%d: joined as %s (%s)", key, run_id, worker, role)
    run = SharedRun(
        run_id=run_id, run_key=key, use_case=use_case, worker=worker, extracts=extracts, up_to_date=up_to_date
    )
    crash_dead_workers(run, holders)
    return run


@contextmanager
def shared_run(use_case: str, job_id: str, content: str | None = None) -> Iterator[SharedRun]:
    """Join a run for the length of the block; whatever is left unfinished is handed back on the way out."""
    run = join_run(use_case, job_id, content)
    ledger = ledger_for(get_settings())
    try:
        yield run
    finally:
        _unregister(run.worker)
        ledger.release_claims(run.worker)


@task(name="enqueue-batches", cache_policy=NO_CACHE)
def enqueue_batches(run: SharedRun, extracted: list[ExtractedManifest]) -> None:
    """Queue every spooled batch of the run at once, so nobody reads a spool a takeover could still rewrite."""
    totals: Counter[str] = Counter()
    for each in extracted:
        totals.update(each.counts())
    paths = [str(path) for e in extracted for path in e.batches]
    ledger_for(get_settings()).enqueue_batches(run.run_id, run.worker, paths, json.dumps(totals))
    run_logger().info("run %s #%d: %d batch(es) queued", run.run_key, run.run_id, len(paths))


def run_totals(run: SharedRun) -> dict[str, int]:
    """The extraction counts of the whole run, whichever process extracted it."""
    _state, totals, _batches = ledger_for(get_settings()).run_state(run.run_id)
    return json.loads(totals) if totals else {}


class RunProgress:
    """The run's progress as a Prefect progress artifact on this flow run (one key per use case, so the UI keeps
    the history), and a log line per batch with its counts and this worker's rate."""

    def __init__(self, run: SharedRun) -> None:
        self.run = run
        self.started = time.monotonic()
        self.sent = 0
        self.artifact_id = create_progress_artifact(
            progress=self._percent(),
            key=artifact_key(run.use_case, "progress"),
            description=f"batches of run {run.run_key}",
        )

    def _percent(self) -> float:
        _state, _totals, batches = ledger_for(get_settings()).run_state(self.run.run_id)
        total = sum(batches.values())
        return 100.0 * batches.get(BatchState.DONE, 0) / total if total else 100.0

    def batch_done(self, number: int, counts: dict[str, Any]) -> None:
        self.sent += int(counts.get("sent", 0))
        percent = self._percent()
        update_progress_artifact(self.artifact_id, percent)
        rate = self.sent / max(time.monotonic() - self.started, 1e-9)
        run_logger().info(
            "run %s: batch %d done (%.0f%% of the run): %d sent, %d failed, %d already done; %.0f sent/s here",
            self.run.run_key,
            number,
            percent,
            counts.get("sent", 0),
            counts.get("failed", 0),
            counts.get("already_done", 0),
            rate,
        )


def drain_batches(
    run: SharedRun, process: Callable[[Path, int], PrefectFuture[Any]], in_flight: int = 2
) -> Iterator[PrefectFuture[Any]]:
    """Claim batches and submit them (at most ``in_flight`` at a time) until every batch of the run is done.

    ``process`` gets each batch's spool file and number. Yields each batch's future once it has completed, so the
    flow reads its counts and makes the post-back wait on every send. With nothing left to claim it keeps waiting
    while other workers hold batches, to take over the batch of one that dies; it returns when all are done.
    """
    ledger = ledger_for(get_settings())
    progress = RunProgress(run)
    submitted: deque[tuple[int, int, PrefectFuture[Any]]] = deque()
    processed = 0
    try:
        while True:
            while len(submitted) < in_flight:
                claimed = ledger.claim_batch(run.run_id, run.worker, utcnow() + LEASE)
                if claimed is None:
                    break
                batch_id, number, path = claimed
                submitted.append((batch_id, number, process(Path(path), number)))
            if submitted:
                batch_id, number, future = submitted[0]
                counts = future.result()
                submitted.popleft()
                if not ledger.complete_batch(batch_id, run.worker):
                    run_logger().warning("run %s: batch %d was taken over while held here", run.run_key, number)
                processed += 1
                progress.batch_done(number, counts)
                return_freed_memory()  # the batch's frames are gone: its pages need not outlive it
                yield future
                continue
            _state, _totals, batches = ledger.run_state(run.run_id)
            if set(batches) <= {BatchState.DONE}:
                run_logger().info("run %s #%d: this worker processed %d batch(es)", run.run_key, run.run_id, processed)
                return
            if ledger.expire_claims(run.run_id, holder_is_dead):
                crash_dead_workers(run)
            time.sleep(POLL_SECONDS)
    finally:
        # A batch handed back while its tasks still run could be sent twice: let them end first.
        for _batch_id, _number, future in submitted:
            future.wait()


def claim_post_back(run: SharedRun) -> bool:
    """True for the one worker that should post the run's outcomes; the others wait until it has (or died)."""
    ledger = ledger_for(get_settings())
    while True:
        if ledger.claim_post_back(run.run_id, run.worker, utcnow() + LEASE):
            return True
        state, _totals, _batches = ledger.run_state(run.run_id)
        if state == RunState.DONE:
            return False
        if ledger.expire_claims(run.run_id, holder_is_dead):
            crash_dead_workers(run)
        time.sleep(POLL_SECONDS)


def finish_run(run: SharedRun) -> None:
    ledger_for(get_settings()).finish_run(run.run_id, run.worker)
