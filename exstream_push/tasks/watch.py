"""Watch: Exstream jobs that ended since the watermark → the Prefect events that start the flow each job needs.

Exstream documents no completion webhook, so a poller turns job ends into events. The hand-off is one transaction:
the watermark row (how far the job list was read), the events in the ledger's outbox and the failed job ends
delivery-exceptions consumes are stored together, so a crash keeps all or none — a restart neither misses a job
nor makes a second event for it. The one outbox emitter (``prefect_events.drain_outbox``) posts the events until
the Prefect API accepts them; a re-post carries the same event id, which the Prefect server drops when it has seen
it (and every triggered flow is idempotent besides).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.events import Event
from pydantic import BaseModel, ConfigDict, Field

from exstream_push.blocks.exstream import ExstreamConnection
from exstream_push.connectors.exstream import ExstreamJob
from exstream_push.ledger import Ledger
from exstream_push.ledger.outbox import CursorMoved
from exstream_push.prefect_events import configured_api_url, drain_outbox, emitting_run, outbox_rows
from exstream_push.retrying import retry_if_it_can_succeed
from exstream_push.runtime import ledger_for
from exstream_push.settings import Settings, get_settings
from exstream_push.status import JobStatus, UseCase

WATERMARK_NAME = "exstream-watcher"
ROUTING_FILE = "job-routing.yaml"
JOB_EVENTS = {JobStatus.COMPLETE: "exstream.job.completed", JobStatus.ERROR: "exstream.job.failed"}
RESOURCE_PREFIX = "exstream.job."
USE_CASE_LABEL = "exstream-push.use-case"
CHANNEL_LABEL = "exstream.channel"
_EVENT_NAMESPACE = uuid.UUID("0b6f3c1e-7d2a-4e58-9c41-5a8e2f7d1b63")


class JobRouting(BaseModel):
    """``config/job-routing.yaml``: the use case an ended job starts, and how far back the watcher reads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    completed: dict[str, UseCase] = Field(default_factory=dict)
    failed: UseCase | None = UseCase.DELIVERY_EXCEPTIONS
    first_run_lookback_hours: float = Field(24, gt=0)
    settle_seconds: float = Field(300, ge=0)

    def use_case_for(self, job: ExstreamJob) -> str | None:
        """None when nothing is configured for the job: its event is still emitted, and starts no flow."""
        use_case = self.failed if job.status == JobStatus.ERROR else self.completed.get(job.channel or "")
        return use_case.value if use_case else None


def watch_run_name(parameters: dict[str, Any]) -> str:
    """``watch-<moment>``: the moment a watcher run reads Exstream at (``as_of``, or now), to the minute in UTC, so
    its runs are told apart in the UI."""
    as_of = parameters.get("as_of")
    moment = datetime.fromisoformat(as_of) if isinstance(as_of, str) else as_of or datetime.now(UTC)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return f"watch-{moment:%Y-%m-%d %H:%M}"


def load_routing(settings: Settings) -> JobRouting:
    path = settings.config_dir / ROUTING_FILE
    if not path.is_file():
        raise FileNotFoundError(f"the job routing configuration is missing: {path}")
    return JobRouting.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})


def _iso(moment: datetime) -> str:
    return _utc(moment).isoformat(timespec="microseconds")


def _utc(moment: datetime) -> datetime:
    """Exstream and SQLite may hand back naive date-times; both mean UTC here."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def end_key(job: ExstreamJob) -> str:
    """Identifies one end of one job: a job reprocessed and ended again is a new end, with a new key."""
    if job.end_date is None:
        raise ValueError(f"job {job.id} has not ended")
    return f"{_iso(job.end_date)}|{job.status}|{job.id}"


def _key_ended_at(key: str) -> datetime:
    return datetime.fromisoformat(key.split("|", 1)[0])


@dataclass(frozen=True)
class JobCursor:
    """The watermark's value: the latest end date read and the ends already taken within the settle window before
    it (several jobs can end in the same second, and late ones can surface there).

    ``carried_events`` are the unsent events a watermark written before the one outbox held: the next save moves
    them into the outbox, in the same transaction."""

    ended_at: datetime | None = None
    recent_ends: frozenset[str] = frozenset()
    carried_events: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    @classmethod
    def from_value(cls, value: str | None) -> JobCursor:
        if value is None:
            return cls()
        data = json.loads(value)
        ended_at = data.get("ended_at")
        return cls(
            ended_at=datetime.fromisoformat(ended_at) if ended_at else None,
            recent_ends=frozenset(data.get("recent_ends", ())),
            carried_events=tuple(data.get("unsent_events", ())),
        )

    def to_value(self) -> str:
        return json.dumps(
            {
                "ended_at": _iso(self.ended_at) if self.ended_at else None,
                "recent_ends": sorted(self.recent_ends),
            },
            sort_keys=True,
        )

    def read_from(self, as_of: datetime, routing: JobRouting) -> datetime:
        """The earliest end date this poll has to look at."""
        if self.ended_at is None:
            return _utc(as_of) - timedelta(hours=routing.first_run_lookback_hours)
        return self.ended_at - timedelta(seconds=routing.settle_seconds)

    def new_ends(self, jobs: Iterable[ExstreamJob], since: datetime, until: datetime) -> list[ExstreamJob]:
        """Jobs that ended at or after ``since``, by ``until``, and were not taken before, oldest first.

        An end after ``until`` (a run replaying an earlier moment, or Exstream's clock ahead) waits for a later
        poll, so the watermark never passes the moment the run stands for.
        """
        fresh = [
            job
            for job in jobs
            if job.status in JOB_EVENTS
            and job.end_date is not None
            and since <= _utc(job.end_date) <= _utc(until)
            and end_key(job) not in self.recent_ends
        ]
        return sorted(fresh, key=end_key)

    def advanced(self, taken: Sequence[ExstreamJob], since: datetime, settle: timedelta) -> JobCursor:
        """The cursor after ``taken``; ends older than the settle window are forgotten.

        A first poll that finds nothing still stores where it started, so the watch does not slide with the clock.
        """
        ended_at = max([_utc(job.end_date) for job in taken if job.end_date], default=self.ended_at or since)
        if self.ended_at:
            ended_at = max(ended_at, self.ended_at)
        keys = self.recent_ends | {end_key(job) for job in taken}
        recent = frozenset(key for key in keys if _key_ended_at(key) >= ended_at - settle)
        return JobCursor(ended_at, recent, self.carried_events)


def job_event(job: ExstreamJob, use_case: str | None, observed_at: datetime) -> dict[str, Any]:
    """The Prefect event for one job end, as JSON; its id is derived from the end, so a re-post is recognised.

    ``occurred`` is when the watcher saw the end (the end date travels in the payload): the server's triggers
    look at event time, and the moment of observation only moves forward. Its related resources name the watcher
    run that saw it.
    """
    name = JOB_EVENTS[job.status]
    key = end_key(job)
    resource = {"prefect.resource.id": f"{RESOURCE_PREFIX}{job.id}", "prefect.resource.name": job.id}
    if job.channel:
        resource[CHANNEL_LABEL] = job.channel
    if use_case:
        resource[USE_CASE_LABEL] = use_case
    event = Event(
        id=uuid.uuid5(_EVENT_NAMESPACE, f"{name}/{key}"),
        occurred=_utc(observed_at),
        event=name,
        resource=resource,
        related=emitting_run(),
        payload={
            "job_id": job.id,
            "channel": job.channel,
            "flow_model": job.flow_model_type,
            "status": job.status,
            "ended_at": _iso(job.end_date),
            "use_case": use_case,
        },
    )
    return event.model_dump(mode="json")


def read_cursor(ledger: Ledger, name: str = WATERMARK_NAME) -> tuple[str | None, JobCursor]:
    """The stored value as read (for the compare-and-set) and the cursor it holds."""
    value = ledger.outbox.read_cursor(name)
    return value, JobCursor.from_value(value)


def failed_ends(taken: Sequence[ExstreamJob], observed_at: datetime) -> list[dict[str, Any]]:
    """The rows delivery-exceptions consumes: the taken jobs that ended in error."""
    return [
        {"end_key": end_key(job), "job_id": job.id, "ended_at": _utc(job.end_date), "observed_at": _utc(observed_at)}
        for job in taken
        if job.status == JobStatus.ERROR and job.end_date is not None
    ]


def save_cursor(
    ledger: Ledger,
    previous: str | None,
    cursor: JobCursor,
    events: Sequence[dict[str, Any]] = (),
    failed: Sequence[dict[str, Any]] = (),
    name: str = WATERMARK_NAME,
) -> str:
    """Compare-and-set the watermark with the events (a watermark written before the one outbox carries its unsent
    ones over) and failed ends it advanced over, in one transaction: two overlapping runs cannot both store them."""
    value = cursor.to_value()
    ledger.outbox.save_cursor(name, previous, value, outbox_rows([*cursor.carried_events, *events]), failed)
    return value


@task(
    name="record-job-ends",
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=retry_if_it_can_succeed,
    cache_policy=NO_CACHE,
)
def record_job_ends(exstream: ExstreamConnection, as_of: datetime) -> dict[str, Any]:
    """List the jobs that ended since the watermark and store their events with the advanced watermark."""
    logger = get_run_logger()
    settings = get_settings()
    routing = load_routing(settings)
    ledger = ledger_for(settings)
    previous, cursor = read_cursor(ledger)
    since = cursor.read_from(as_of, routing)
    with exstream.get_client() as client:
        # The API filters by day, in a time zone it does not state: a day earlier is safe, the cursor does the rest.
        jobs = client.list_jobs(statuses=sorted(JOB_EVENTS), ended_since=(since - timedelta(days=1)).date())
    taken = cursor.new_ends(jobs, since, as_of)
    routes = [routing.use_case_for(job) for job in taken]
    events = [job_event(job, use_case, as_of) for job, use_case in zip(taken, routes, strict=True)]
    advanced = cursor.advanced(taken, since, timedelta(seconds=routing.settle_seconds))
    try:
        save_cursor(ledger, previous, advanced, events, failed_ends(taken, as_of))
    except CursorMoved as exc:
        logger.warning("%s; that run covers these jobs, this one stops here", exc)
        return {"jobs_listed": len(jobs), "completed": 0, "failed": 0, "unrouted": 0, "watermark": None}
    unrouted = sorted(job.id for job, use_case in zip(taken, routes, strict=True) if use_case is None)
    if unrouted:
        logger.warning("no use case configured in %s for ended jobs %s", ROUTING_FILE, ", ".join(unrouted))
    counts = {
        "jobs_listed": len(jobs),
        "completed": sum(job.status == JobStatus.COMPLETE for job in taken),
        "failed": sum(job.status == JobStatus.ERROR for job in taken),
        "unrouted": len(unrouted),
        "watermark": _iso(advanced.ended_at) if advanced.ended_at else None,
    }
    # A poll that found nothing new says nothing at INFO: one a minute would bury the runs that did something.
    level = logging.INFO if taken else logging.DEBUG
    logger.log(level, "read Exstream jobs ended since %s: %s", _iso(since), counts)
    return counts


@task(
    name="emit-job-events",
    retries=3,
    retry_delay_seconds=10,
    retry_condition_fn=retry_if_it_can_succeed,
    cache_policy=NO_CACHE,
)
def emit_unsent_events() -> int:
    """Post what the outbox holds until Prefect has accepted it all; returns how many were posted."""
    api_url = configured_api_url()
    if api_url is None:
        get_run_logger().warning("no PREFECT_API_URL: the job events stay in the outbox until a server is configured")
    return drain_outbox(ledger_for(get_settings()), api_url, raise_errors=True)
