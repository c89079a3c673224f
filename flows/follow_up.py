"""The order of a follow-up run, shared by use cases 3 and 5: notify, remind at offsets until a closing event,
then hand the document back to Exstream. Each use case's flow calls this with its own rules."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from exstream_push.blocks import ApnsConnection, ExstreamConnection, FcmConnection, WebPushConnection, connections
from exstream_push.notify.pipeline import notify, release_deferred
from exstream_push.tasks.completeness import ensure_complete
from exstream_push.tasks.extract import extract_manifest
from exstream_push.tasks.summary import post_back_line, publish_summary
from exstream_push.usecases.follow_up.config import load_rules
from exstream_push.usecases.follow_up.tasks import (
    claim_hand_backs,
    discard_snapshot,
    import_engagement_events,
    plan_follow_ups,
    post_hand_backs,
    screen_documents,
    settle_documents,
    snapshot_active_documents,
)
from exstream_push.usecases.intake import discard_manifest_spools, manifest_sources
from exstream_push.zones import run_moment


def run_follow_up(
    use_case: str,
    manifest: str | None,
    job_id: str | None,
    events: str | None,
    as_of: datetime | None,
    exstream_block: ExstreamConnection | None,
    fcm_block: FcmConnection | None,
    apns_block: ApnsConnection | None,
    webpush_block: WebPushConnection | None,
) -> dict[str, Any]:
    """Register new documents, take in closing events, then notify, remind or hand back every open document.

    The first notice goes out at once; a reminder passes the use case's frequency cap and quiet hours, if its
    configuration sets them; what quiet hours held back goes on the first run after they end.
    """
    as_of = run_moment(as_of)
    rules = load_rules(use_case)
    exstream, push = connections(exstream_block, fcm_block, apns_block, webpush_block)
    totals: Counter[str] = Counter()

    sources = manifest_sources(manifest, job_id, exstream, use_case)
    for source in sources:
        extracted = extract_manifest(source, use_case, extra_keys=rules.extra_keys)
        totals.update(extracted.counts())
        for batch in extracted.batches:
            totals.update(screen_documents(batch, source, rules))
    discard_manifest_spools(use_case, sources)
    if events is not None:
        totals.update(import_engagement_events(events))
    if rules.quiet_hours is not None:
        totals.update(released=release_deferred(use_case, as_of))

    snapshot = snapshot_active_documents(rules, as_of)
    for batch in snapshot.batches:
        plan = plan_follow_ups(batch, rules, as_of)
        totals.update(plan.stage_counts())
        totals.update(settle_documents(plan, rules, as_of))
        if len(plan.immediate):
            totals.update(notify(plan.immediate, use_case, rules.category, push, as_of, extra_keys=rules.extra_keys))
        if len(plan.reminders):
            reminded = notify(
                plan.reminders,
                use_case,
                rules.category,
                push,
                as_of,
                extra_keys=rules.extra_keys,
                frequency_cap=rules.frequency_cap,
                quiet_hours=rules.quiet_hours,
            )
            totals.update(reminded)
        totals.update(claim_hand_backs(plan.hand_back, rules, as_of))
    discard_snapshot(snapshot)
    hand_backs, hand_back_post = post_hand_backs(rules, exstream, as_of)
    totals.update(hand_backs)

    publish_summary(
        use_case,
        f"{use_case} · {job_id or 'documents registered so far'} · as of {as_of.isoformat(timespec='minutes')}",
        totals,
        lines=[post_back_line(f"Hand-back ({rules.hand_back.stage})", hand_back_post)],
    )
    result = {"use_case": use_case, "as_of": as_of.isoformat(), "job_id": job_id, **totals}
    ensure_complete(use_case, job_id, result)
    return result
