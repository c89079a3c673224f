"""Use case 7 — an operational event: a high-priority push at once, then the formal follow-up letter from Exstream."""

from __future__ import annotations

import shutil
from collections import Counter
from datetime import datetime
from typing import Any

from prefect import flow

from exstream_push.blocks import ApnsConnection, ExstreamConnection, FcmConnection, WebPushConnection, connections
from exstream_push.notify.pipeline import notify
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push.status import Category, OpsAlertState
from exstream_push.tasks.summary import post_back_line, publish_summary
from exstream_push.usecases.operational_alert.config import USE_CASE
from exstream_push.usecases.operational_alert.rules import report_rows
from exstream_push.usecases.operational_alert.tasks import (
    alert_report,
    alert_spool,
    mark_alert,
    read_alert,
    request_follow_up,
    spool_alert_audience,
)
from exstream_push.zones import run_moment

CATEGORY = Category.ALERTS.value


@flow(name=USE_CASE, flow_run_name=f"{USE_CASE}-{{alert_id}}", persist_result=False)
def operational_alert(
    alert_id: str,
    as_of: datetime | None = None,
    exstream_block: ExstreamConnection | None = None,
    fcm_block: FcmConnection | None = None,
    apns_block: ApnsConnection | None = None,
    webpush_block: WebPushConnection | None = None,
) -> dict[str, Any]:
    """Push the alert to the affected customers' devices, then ask Exstream for the letter; once per alert.

    Args:
        alert_id: The operational alert received by the ingress (``POST /v1/ops/alerts``) to act on.
        as_of: The moment decisions are taken at, with its zone; empty: now.
        exstream_block: A saved Exstream connection; empty: the worker's EXSTREAM_PUSH_EXSTREAM_* settings.
        fcm_block: A saved FCM connection; empty: the worker's EXSTREAM_PUSH_FCM_* settings.
        apns_block: A saved APNs connection; empty: the worker's APNs settings, if any.
        webpush_block: A saved Web Push connection; empty: the worker's VAPID settings, if any.
    """
    as_of = run_moment(as_of)
    settings = get_settings()
    ledger = ledger_for(settings)
    alert = read_alert(ledger, alert_id)
    if alert.state == OpsAlertState.FOLLOW_UP_REQUESTED:
        report = alert_report(ledger, alert_id)
        publish_summary(
            USE_CASE, f"{USE_CASE} · alert {alert_id} · already done", {}, tables={"Alert report": report_rows(report)}
        )
        return {"alert_id": alert_id, "already_done": True, "report": report}

    exstream, push = connections(exstream_block, fcm_block, apns_block, webpush_block)
    totals: Counter[str] = Counter()
    if alert.state == OpsAlertState.RECEIVED:
        for batch in spool_alert_audience(alert):
            totals.update(notify(batch, USE_CASE, CATEGORY, push, as_of, priority="high"))
        mark_alert(ledger, alert_id, OpsAlertState.PUSHED, pushed_at=as_of)
        shutil.rmtree(alert_spool(settings, alert_id), ignore_errors=True)
    follow_up = request_follow_up(alert, exstream, as_of)
    report = alert_report(ledger, alert_id)
    publish_summary(
        USE_CASE,
        f"{USE_CASE} · alert {alert_id}",
        totals,
        lines=[post_back_line("Formal follow-up", follow_up)],
        tables={"Alert report": report_rows(report)},
    )
    return {"alert_id": alert_id, **totals, "follow_up": follow_up, "report": report}
