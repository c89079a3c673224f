"""Use case 5 — the customer must act: prompt, remind before the deadline, fall back to print, then expire."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from prefect import flow

from blocks import connections
from exstream_push.status import UseCase
from exstream_push.tasks.extract import extract_manifest
from exstream_push.tasks.followups import (
    claim_hand_backs,
    discard_manifest_spools,
    discard_snapshot,
    follow_up_run_name,
    import_engagement_events,
    load_rules,
    manifest_sources,
    plan_follow_ups,
    post_hand_backs,
    publish_completion_rates,
    publish_follow_up_summary,
    run_moment,
    screen_documents,
    settle_documents,
    snapshot_active_documents,
)
from exstream_push.tasks.render import render_messages
from exstream_push.tasks.segment import segment_recipients
from exstream_push.tasks.send import send_push

USE_CASE = UseCase.ACTION_REQUIRED.value


def _run_name() -> str:
    return follow_up_run_name(USE_CASE)


@flow(name=USE_CASE, flow_run_name=_run_name, persist_result=False)
def action_required(
    manifest: str | None = None,
    job_id: str | None = None,
    events: str | None = None,
    as_of: datetime | None = None,
    exstream_block: str | None = None,
    fcm_block: str | None = None,
) -> dict[str, Any]:
    """Register new documents, take in completions, then prompt, remind, print or expire every open document."""
    as_of = run_moment(as_of)
    rules = load_rules(USE_CASE)
    exstream, fcm = connections(exstream_block, fcm_block)
    totals: Counter[str] = Counter()

    sources = manifest_sources(manifest, job_id, exstream, USE_CASE)
    for source in sources:
        extracted = extract_manifest(source, USE_CASE, extra_keys=rules.extra_keys)
        totals.update(customers=extracted.customers, duplicates=extracted.duplicates, quarantined=extracted.quarantined)
        for batch in extracted.batches:
            totals.update(screen_documents(batch, source, rules))
    discard_manifest_spools(USE_CASE, sources)
    if events is not None:
        totals.update(import_engagement_events(events))

    snapshot = snapshot_active_documents(rules, as_of)
    for batch in snapshot.batches:
        plan = plan_follow_ups(batch, rules, as_of)
        totals.update(plan.stage_counts())
        totals.update(settle_documents(plan, rules, as_of))
        if len(plan.due):
            recipients = segment_recipients(plan.due, USE_CASE, rules.category, as_of)
            messages = render_messages(recipients, USE_CASE, rules.category, as_of, extra_keys=rules.extra_keys)
            totals.update(send_push(messages, USE_CASE, fcm, as_of))
        totals.update(claim_hand_backs(plan.hand_back, rules, as_of))
    discard_snapshot(snapshot)
    totals.update(post_hand_backs(rules, exstream, as_of))

    publish_follow_up_summary(rules, as_of, dict(totals))
    completion = publish_completion_rates(rules, as_of)
    return {"use_case": USE_CASE, "as_of": as_of.isoformat(), "job_id": job_id, **totals, "completion": completion}
