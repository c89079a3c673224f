"""The follow-up use cases' tasks: each reads what it needs through ``ledger.follow_ups``, decides by the pure
rules of ``exstream_push.usecases.follow_up.rules`` and writes back in bulk."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from exstream_push.blocks.exstream import ExstreamConnection
from exstream_push.events import import_events
from exstream_push.ledger.notices import EXSTREAM_DEVICE_PREFIX
from exstream_push.ledger.store import notification_rows
from exstream_push.retrying import retry_if_it_can_succeed
from exstream_push.runtime import ledger_for, typed_name_or
from exstream_push.settings import get_settings
from exstream_push.status import DocumentState, SkipReason, Status
from exstream_push.tasks.extract import ManifestSource, rejected_rows
from exstream_push.tasks.post_back import post_driver_file
from exstream_push.tasks.summary import artifact_key
from exstream_push.usecases.follow_up.config import REMINDER, FollowUpRules
from exstream_push.usecases.follow_up.rules import (
    FollowUpPlan,
    Standing,
    completion_table,
    hand_back_header,
    hand_back_lines,
    in_scope,
    plan,
    screen,
)


def follow_up_run_name(use_case: str) -> Callable[[], str]:
    """``policy-change-{job or manifest or 'ledger'}-{as_of}``: a run says what it took in and when it acted."""

    def name_for(parameters: dict[str, Any]) -> str:
        label = parameters.get("job_id") or (
            Path(parameters["manifest"]).name if parameters.get("manifest") else "ledger"
        )
        as_of = parameters.get("as_of")
        if isinstance(as_of, str):  # a deployment's parameters arrive as JSON
            as_of = datetime.fromisoformat(as_of)
        moment = as_of.astimezone(UTC).strftime("%Y%m%dT%H%MZ") if isinstance(as_of, datetime) else "now"
        return f"{use_case}-{label}-{moment}"

    return typed_name_or(name_for)


def available_templates(use_case: str) -> set[str]:
    folder = get_settings().templates_dir / use_case
    return {path.name.split(".")[0] for path in folder.glob("*.j2")}


@task(name="screen-documents", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def screen_documents(batch: Path, source: ManifestSource, rules: FollowUpRules) -> dict[str, int]:
    """Keep out of the follow-up, with the reason, the documents that lack its keys or do not need it."""
    records = pd.read_parquet(batch)
    verdict = screen(records, rules)
    out = records[verdict["status"].notna()]
    if len(out):
        ledger_for(get_settings()).record_rejected(
            rejected_rows(
                out,
                rules.use_case,
                source,
                verdict.loc[out.index, "status"].tolist(),
                verdict.loc[out.index, "reason"].tolist(),
            )
        )
    counts = Counter(verdict["status"].dropna())
    return {
        "in_scope": int(verdict["status"].isna().sum()),
        "quarantined": counts[Status.QUARANTINED.value],
        SkipReason.NOT_REQUIRED.value: counts[Status.SKIPPED.value],
    }


@task(name="import-engagement-events", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def import_engagement_events(path: str) -> dict[str, int]:
    """Store the events file once per event id, before the run decides anything from them."""
    report = import_events(ledger_for(get_settings()), Path(path))
    if report.errors:
        logger = get_run_logger()
        logger.warning("%s: %d line(s) skipped", path, len(report.errors))
        for line, reason in report.errors[:20]:
            logger.warning("%s:%d: %s", Path(path).name, line, reason)
    return {"events_stored": report.stored, "events_repeated": report.repeated, "events_rejected": len(report.errors)}


@dataclass
class Snapshot:
    """A run's working set, spooled: the documents still followed up when the run began, in batches."""

    folder: Path
    batches: list[Path]


def _snapshot_folder(use_case: str, as_of: datetime) -> Path:
    return get_settings().spool_dir(use_case, f"follow-ups-{as_of:%Y%m%dT%H%M%S%fZ}")


@task(name="snapshot-active-documents", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def snapshot_active_documents(rules: FollowUpRules, as_of: datetime) -> Snapshot:
    """Spool the documents still followed up as Parquet batches, so each is decided once per run, in bulk."""
    settings = get_settings()
    folder = _snapshot_folder(rules.use_case, as_of)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    frames = ledger_for(settings).follow_ups.active_documents(rules.use_case, rules.active_states, settings.batch_size)
    batches = []
    for number, frame in enumerate(frames, 1):
        path = folder / f"batch-{number:06d}.parquet"
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
        batches.append(path)
    get_run_logger().info("%s: %d batch(es) of active documents", rules.use_case, len(batches))
    return Snapshot(folder=folder, batches=batches)


def discard_snapshot(snapshot: Snapshot) -> None:
    shutil.rmtree(snapshot.folder, ignore_errors=True)


@task(name="plan-follow-ups", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def plan_follow_ups(batch: Path, rules: FollowUpRules, as_of: datetime) -> FollowUpPlan:
    """Decide, for a batch at once: which documents close, expire, go back to Exstream, or are owed which push."""
    repository = ledger_for(get_settings()).follow_ups
    documents = in_scope(pd.read_parquet(batch), rules)
    ids = documents.index.tolist()
    closed_at = repository.closing_times(rules.use_case, rules.closing_event.value, ids, as_of)
    history = repository.stage_history(rules.use_case, ids)
    templates = available_templates(rules.use_case) if rules.template_attribute is not None else set()
    return plan(documents, rules, as_of, closed_at, history, templates)


@task(name="settle-documents", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def settle_documents(plan: FollowUpPlan, rules: FollowUpRules, as_of: datetime) -> dict[str, int]:
    """Close the documents whose event came, expire those past their deadline; cancel whatever they were owed."""
    repository = ledger_for(get_settings()).follow_ups
    use_case, active = rules.use_case, rules.active_states
    closed = repository.set_state(use_case, plan.closing, rules.closed_state, active, as_of)
    expired = repository.set_state(use_case, plan.expiring, DocumentState.EXPIRED, active, as_of)
    cancelled = repository.cancel_unsent(use_case, [*plan.closing, *plan.expiring])
    counts = {rules.closed_state.value: closed, "cancelled": cancelled}
    if rules.expires:
        counts[DocumentState.EXPIRED.value] = expired
    return counts


@task(name="claim-hand-backs", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def claim_hand_backs(documents: pd.DataFrame, rules: FollowUpRules, as_of: datetime) -> dict[str, int]:
    """Queue the batch's documents for the hand-back in the ledger, as notifications of the hand-back stage with
    the channel in place of a device; ``post_hand_backs`` sends the whole run's queue as one file."""
    hand_back = rules.hand_back
    claims = documents.assign(stage=hand_back.stage, device_id=f"{EXSTREAM_DEVICE_PREFIX}{hand_back.channel}")
    owed = ledger_for(get_settings()).claim(notification_rows(claims, rules.use_case, Status.PENDING, as_of=as_of))
    return {f"{hand_back.stage}_due": len(owed)}


@task(
    name="post-hand-backs-to-exstream",
    retries=3,
    retry_delay_seconds=10,
    retry_condition_fn=retry_if_it_can_succeed,
    cache_policy=NO_CACHE,
)
def post_hand_backs(
    rules: FollowUpRules, exstream: ExstreamConnection, as_of: datetime
) -> tuple[dict[str, int], dict[str, Any]]:
    """One CSV per run to the hand-back channel with every claimed document, then their state moves; returns the
    counts and what ``post_driver_file`` says of the post (for the run's summary).

    A claim is marked sent only after Exstream accepted the file, and the state moves only after that, so a failed
    post is simply tried again (by the task's retry or the next run) and a closing event that comes first cancels
    the claim; an identical file is never posted twice (``post_driver_file``'s digest).
    """
    hand_back, use_case = rules.hand_back, rules.use_case
    settings = get_settings()
    repository = ledger_for(settings).follow_ups
    requested_at = as_of.isoformat(timespec="seconds").replace("+00:00", "Z")
    posted: list[str] = []

    def lines() -> Iterator[list[Any]]:
        for frame in repository.pending_hand_backs(use_case, hand_back.stage, settings.batch_size):
            ids = frame["document_id"].tolist()
            evidence = repository.evidence(use_case, hand_back.stage, REMINDER, ids)
            yield from hand_back_lines(frame, evidence, rules, requested_at)
            posted.extend(ids)

    run_label = f"{use_case}-{hand_back.stage}-{as_of:%Y%m%dT%H%M%SZ}"
    post = post_driver_file(exstream, hand_back.channel, run_label, hand_back_header(rules), lines())
    repository.mark_hand_backs_sent(use_case, hand_back.stage, posted)
    moving = repository.handed_back_but_open(use_case, hand_back.stage)
    moved = repository.set_state(use_case, moving, hand_back.state, (DocumentState.OPEN.value,), as_of)
    if hand_back.closes:
        repository.cancel_unsent(use_case, moving)
    counts = {hand_back.state.value: moved, f"{hand_back.stage}_rows_posted": post["rows"] if post["posted"] else 0}
    return counts, post


@task(name="publish-completion-rates", cache_policy=NO_CACHE)
def publish_completion_rates(rules: FollowUpRules, as_of: datetime) -> list[dict[str, Any]]:
    """Completion rate by action type, over every document of the use case so far, as a table artifact.

    Streamed, so the whole use case is never in memory."""
    if rules.template_attribute is None:
        raise ValueError(f"{rules.use_case} has no attribute to break completion down by")
    settings = get_settings()
    standing = Standing(Counter(), Counter())
    pages = ledger_for(settings).follow_ups.standing(rules.use_case, rules.hand_back.stage, settings.batch_size)
    for page in pages:
        standing.add(page, rules.template_attribute.key)
    table = completion_table(rules, standing)
    create_table_artifact(
        key=artifact_key(rules.use_case, "completion-rate"),
        table=table,
        description=f"{rules.use_case}: completion by {rules.template_attribute.name} as of {as_of.isoformat()}",
    )
    return table
