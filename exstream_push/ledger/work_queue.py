"""Shared runs: a work queue of spooled batches, claimed under leases by the workers of several processes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select, update
from sqlalchemy.exc import IntegrityError

from exstream_push.keys import run_key_parts
from exstream_push.ledger import store
from exstream_push.ledger.base import LedgerBase
from exstream_push.ledger.models import Device, Notification, WorkBatch, WorkRun
from exstream_push.status import BatchState, RunState, Status


class WorkQueueMixin(LedgerBase):
    """Runs (generations, extraction, post-back) and their batches, each claim guarded by its state and holder."""

    def join_run(
        self,
        run_key: str,
        worker: str,
        lease_until: datetime,
        is_dead: Callable[[str], bool],
        content: str | None = None,
    ) -> tuple[int, bool] | None:
        """One attempt to join the current generation of a run: (run id, whether this worker extracts it).

        The first to insert a generation extracts it; a dead or expired extractor's generation is taken over; a
        finished one is followed by a new generation, unless it is up to date (``_up_to_date``), when it is
        joined as it is. None: someone else is extracting, or a race was lost.
        """
        table = WorkRun.__table__
        now = store.utcnow()
        try:
            with self.engine.begin() as conn:
                current = conn.execute(
                    select(table)
                    .where(table.c.run_key == run_key)
                    .order_by(table.c.generation.desc())
                    .limit(1)
                    .with_for_update()
                ).first()
                if (
                    current is not None
                    and current.state == RunState.DONE.value
                    and self._up_to_date(conn, current, content)
                ):
                    return current.id, False
                if current is None or current.state == RunState.DONE.value:
                    generation = 1 if current is None else current.generation + 1
                    inserted = conn.execute(
                        table.insert().values(
                            run_key=run_key,
                            generation=generation,
                            state=RunState.EXTRACTING.value,
                            content=content,
                            claimed_by=worker,
                            lease_expires=lease_until,
                            created_at=now,
                            updated_at=now,
                        )
                    )
                    return inserted.inserted_primary_key[0], True
                if current.state != RunState.EXTRACTING.value:
                    return current.id, False
                if store._naive_utc(current.lease_expires) > store._naive_utc(now) and not is_dead(current.claimed_by):
                    return None
                taken = conn.execute(
                    update(table)
                    .where(
                        table.c.id == current.id,
                        table.c.state == RunState.EXTRACTING.value,
                        table.c.claimed_by == current.claimed_by,
                    )
                    .values(claimed_by=worker, lease_expires=lease_until, updated_at=now)
                )
                return (current.id, True) if taken.rowcount == 1 else None
        except IntegrityError:
            return None

    @staticmethod
    def _up_to_date(conn: Connection, finished: Any, content: str | None) -> bool:
        """A finished run started again would send nothing: same content, none of its notifications left pending
        (retries exhausted, configuration errors), no device registered, changed or deactivated since it ended."""
        if content is None or finished.content != content:
            return False
        use_case, job_id = run_key_parts(finished.run_key)
        notification = Notification.__table__
        pending = conn.execute(
            select(notification.c.key)
            .where(
                notification.c.job_id == job_id,
                notification.c.use_case == use_case,
                notification.c.status == Status.PENDING.value,
            )
            .limit(1)
        ).first()
        if pending is not None:
            return False
        latest_device = conn.scalar(select(func.max(Device.__table__.c.updated_at)))
        return latest_device is None or store._naive_utc(latest_device) <= store._naive_utc(finished.updated_at)

    def enqueue_batches(self, run_id: int, worker: str, paths: Sequence[str], totals: str) -> None:
        """Queue a run's batches and mark it extracted, in one transaction, if this worker still holds it."""
        now = store.utcnow()
        with self.engine.begin() as conn:
            held = conn.execute(
                update(WorkRun.__table__)
                .where(
                    WorkRun.__table__.c.id == run_id,
                    WorkRun.__table__.c.state == RunState.EXTRACTING.value,
                    WorkRun.__table__.c.claimed_by == worker,
                )
                .values(
                    state=RunState.EXTRACTED.value,
                    batches=len(paths),
                    totals=totals,
                    claimed_by=None,
                    lease_expires=None,
                    updated_at=now,
                )
            )
            if held.rowcount != 1:
                raise RuntimeError(f"run {run_id}: the extraction lease was lost to another worker")
            for chunk in store._chunks(list(enumerate(paths, start=1))):
                conn.execute(
                    WorkBatch.__table__.insert(),
                    [
                        {"run_id": run_id, "number": n, "path": p, "state": BatchState.QUEUED.value, "updated_at": now}
                        for n, p in chunk
                    ],
                )

    def claim_batch(self, run_id: int, worker: str, lease_until: datetime) -> tuple[int, int, str] | None:
        """Claim the lowest queued (or lease-expired) batch: (id, number, path), or None when none is free.

        PostgreSQL: ``FOR UPDATE SKIP LOCKED`` lets concurrent claimers pass each other's rows. SQLite has one
        writer and ignores the lock; the state guard on the UPDATE makes a lost race claim nothing, and we retry.
        """
        table = WorkBatch.__table__
        while True:
            now = store.utcnow()
            claimable = (table.c.run_id == run_id) & (
                (table.c.state == BatchState.QUEUED.value)
                | ((table.c.state == BatchState.CLAIMED.value) & (table.c.lease_expires < now))
            )
            with self.engine.begin() as conn:
                row = conn.execute(
                    select(table.c.id, table.c.number, table.c.path)
                    .where(claimable)
                    .order_by(table.c.number)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                ).first()
                if row is None:
                    return None
                taken = conn.execute(
                    update(table)
                    .where(table.c.id == row.id, claimable)
                    .values(
                        state=BatchState.CLAIMED.value, claimed_by=worker, lease_expires=lease_until, updated_at=now
                    )
                )
                if taken.rowcount == 1:
                    return row.id, row.number, row.path

    def complete_batch(self, batch_id: int, worker: str) -> bool:
        """Mark a batch done; False when its lease had passed to another worker meanwhile (the work still counts)."""
        table = WorkBatch.__table__
        with self.engine.begin() as conn:
            ours = conn.execute(
                update(table)
                .where(table.c.id == batch_id, table.c.claimed_by == worker)
                .values(state=BatchState.DONE.value, lease_expires=None, updated_at=store.utcnow())
            ).rowcount
            if not ours:
                conn.execute(
                    update(table)
                    .where(table.c.id == batch_id, table.c.state != BatchState.DONE.value)
                    .values(
                        state=BatchState.DONE.value, claimed_by=worker, lease_expires=None, updated_at=store.utcnow()
                    )
                )
        return bool(ours)

    def release_claims(self, worker: str) -> None:
        """Give back what a worker holds unfinished (it is stopping), so others need not wait for its lease."""
        now = store.utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                update(WorkBatch.__table__)
                .where(
                    WorkBatch.__table__.c.claimed_by == worker, WorkBatch.__table__.c.state == BatchState.CLAIMED.value
                )
                .values(state=BatchState.QUEUED.value, claimed_by=None, lease_expires=None, updated_at=now)
            )
            conn.execute(
                update(WorkRun.__table__)
                .where(WorkRun.__table__.c.claimed_by == worker, WorkRun.__table__.c.state != RunState.DONE.value)
                .values(lease_expires=now)
            )

    def renew_leases(self, workers: Sequence[str], lease_until: datetime) -> None:
        if not workers:
            return
        with self.engine.begin() as conn:
            conn.execute(
                update(WorkBatch.__table__)
                .where(
                    WorkBatch.__table__.c.claimed_by.in_(workers),
                    WorkBatch.__table__.c.state == BatchState.CLAIMED.value,
                )
                .values(lease_expires=lease_until)
            )
            conn.execute(
                update(WorkRun.__table__)
                .where(
                    WorkRun.__table__.c.claimed_by.in_(workers),
                    WorkRun.__table__.c.state.in_([RunState.EXTRACTING.value, RunState.POSTING.value]),
                )
                .values(lease_expires=lease_until)
            )

    def expire_claims(self, run_id: int, is_dead: Callable[[str], bool]) -> int:
        """End the leases of a run's claims held by workers known to be dead, so they are claimable at once."""
        expired = store.utcnow()
        batches, runs = WorkBatch.__table__, WorkRun.__table__
        with self.engine.begin() as conn:
            holders = set(
                conn.scalars(
                    select(batches.c.claimed_by).where(
                        batches.c.run_id == run_id, batches.c.state == BatchState.CLAIMED.value
                    )
                )
            )
            holders |= set(
                conn.scalars(select(runs.c.claimed_by).where(runs.c.id == run_id, runs.c.state != RunState.DONE.value))
            )
            dead = [holder for holder in holders if holder and is_dead(holder)]
            if not dead:
                return 0
            conn.execute(
                update(batches)
                .where(
                    batches.c.run_id == run_id,
                    batches.c.claimed_by.in_(dead),
                    batches.c.state == BatchState.CLAIMED.value,
                )
                .values(lease_expires=expired)
            )
            conn.execute(
                update(runs).where(runs.c.id == run_id, runs.c.claimed_by.in_(dead)).values(lease_expires=expired)
            )
        return len(dead)

    def run_workers(self, run_id: int) -> set[str]:
        """Every worker the ledger has seen working on a run: its extractor or poster, and each batch's holder."""
        batches, runs = WorkBatch.__table__, WorkRun.__table__
        with self.engine.connect() as conn:
            workers = set(conn.scalars(select(batches.c.claimed_by).where(batches.c.run_id == run_id).distinct()))
            workers.add(conn.scalar(select(runs.c.claimed_by).where(runs.c.id == run_id)))
        workers.discard(None)
        return workers

    def run_state(self, run_id: int) -> tuple[str, str | None, dict[str, int]]:
        """A run's state, its extraction totals (JSON) and its batches counted by state."""
        batches = WorkBatch.__table__
        with self.engine.connect() as conn:
            state, totals = conn.execute(
                select(WorkRun.__table__.c.state, WorkRun.__table__.c.totals).where(WorkRun.__table__.c.id == run_id)
            ).one()
            counts = dict(
                conn.execute(
                    select(batches.c.state, func.count()).where(batches.c.run_id == run_id).group_by(batches.c.state)
                ).all()
            )
        return state, totals, counts

    def claim_post_back(self, run_id: int, worker: str, lease_until: datetime) -> bool:
        """The one worker to post a run's outcomes: all its batches done, and nobody (alive) posting already."""
        runs, batches = WorkRun.__table__, WorkBatch.__table__
        now = store.utcnow()
        unfinished = (
            select(batches.c.id).where(batches.c.run_id == run_id, batches.c.state != BatchState.DONE.value).exists()
        )
        with self.engine.begin() as conn:
            taken = conn.execute(
                update(runs)
                .where(
                    runs.c.id == run_id,
                    ~unfinished,
                    (runs.c.state == RunState.EXTRACTED.value)
                    | ((runs.c.state == RunState.POSTING.value) & (runs.c.lease_expires < now)),
                )
                .values(state=RunState.POSTING.value, claimed_by=worker, lease_expires=lease_until, updated_at=now)
            )
        return taken.rowcount == 1

    def finish_run(self, run_id: int, worker: str) -> None:
        table = WorkRun.__table__
        with self.engine.begin() as conn:
            conn.execute(
                update(table)
                .where(table.c.id == run_id, table.c.claimed_by == worker)
                .values(state=RunState.DONE.value, lease_expires=None, updated_at=store.utcnow())
            )

    def batch_workers(self, run_id: int) -> dict[int, str | None]:
        """Which worker finished (or holds) each batch of a run, by batch number."""
        table = WorkBatch.__table__
        with self.engine.connect() as conn:
            return dict(conn.execute(select(table.c.number, table.c.claimed_by).where(table.c.run_id == run_id)).all())
