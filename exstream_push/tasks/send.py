"""Send: claim each idempotency key in the ledger, push what is still owed through its device's provider, record
outcomes as they complete."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from exstream_push.blocks.push import PushConnections
from exstream_push.connectors.apns import ApnsNotification
from exstream_push.connectors.collapse import apns_collapse_id, webpush_topic
from exstream_push.connectors.fcm import MAX_TTL
from exstream_push.connectors.push import OnResults, PushRequest, PushResult, PushSender, event_loop_factory
from exstream_push.connectors.push_errors import PushConfigurationError
from exstream_push.connectors.webpush import WebPushNotification
from exstream_push.ledger.store import notification_rows, notification_subjects
from exstream_push.retrying import retry_if_it_can_succeed
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push.status import PushProvider, Status

_APNS_PRIORITY = {"normal": 5, "high": 10}
"""As FCM maps our priorities for iOS: 5 lets the device choose a moment that spares its battery."""
TTL = MAX_TTL
"""How long APNs and push services keep a message for an offline device: what FCM keeps one by default."""


SEND_COUNTS = ("sent", "failed", "retry_exhausted", "configuration_error", "already_done", "devices_deactivated")
"""What ``send_push`` counts, every one always present (zero when nothing happened), so every run's result has
the same shape: the messages accepted, failed for good, left pending by retries or configuration, found already
done by an earlier run, and the devices deactivated as dead."""


def _classify(result: PushResult) -> tuple[Status, str | None, str]:
    """(ledger status, reason, outcome counted) for one send: only permanent failures are final besides success;
    retry-exhausted and configuration errors stay pending, so a later run sends them."""
    if result.error is None:
        return Status.SENT, None, "sent"
    if result.error_class is not None and result.error_class.retryable:
        return Status.PENDING, f"retry_exhausted:{result.error_code}", "retry_exhausted"
    if result.error_class is not None and result.error_class.alert_operator:
        return Status.PENDING, f"configuration:{result.error_code}", "configuration_error"
    return Status.FAILED, result.reason, "failed"


def push_requests(provider: PushProvider, rows: pd.DataFrame, now: float) -> list[PushRequest]:
    """What ``provider``'s sender posts for each row: the payload render encoded, with the headers that come from
    the row's idempotency key (collapse id, Topic) and priority, and an expiry counted from ``now``."""
    keys, payloads = rows["key"].tolist(), rows["payload"].tolist()
    if provider == PushProvider.FCM:  # collapse key and priority are inside the encoded message
        return [PushRequest(key=key, message=payload) for key, payload in zip(keys, payloads, strict=True)]
    priorities = rows["priority"].tolist() if "priority" in rows else ["normal"] * len(rows)
    tokens = rows["token"].tolist()
    if provider == PushProvider.APNS:
        expiration = int(now + TTL.total_seconds())
        return [
            PushRequest(
                key=key,
                message=ApnsNotification(
                    device_token=token,
                    payload=payload,
                    collapse_id=apns_collapse_id(key),
                    priority=_APNS_PRIORITY[priority],
                    expiration=expiration,
                ),
            )
            for key, token, payload, priority in zip(keys, tokens, payloads, priorities, strict=True)
        ]
    subscriptions = zip(keys, tokens, rows["webpush_p256dh"], rows["webpush_auth"], payloads, priorities, strict=True)
    return [
        PushRequest(
            key=key,
            message=WebPushNotification(
                endpoint=endpoint,
                p256dh=p256dh,
                auth=auth,
                payload=payload,
                topic=webpush_topic(key),
                urgency=priority,
                ttl=int(TTL.total_seconds()),
            ),
        )
        for key, endpoint, p256dh, auth, payload, priority in subscriptions
    ]


@task(
    name="send-push",
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=retry_if_it_can_succeed,
    cache_policy=NO_CACHE,
)
def send_push(
    messages: pd.DataFrame, use_case: str, push: PushConnections, as_of: datetime | None = None
) -> dict[str, float]:
    """Returns counts by outcome, and the seconds spent writing outcomes to the ledger.

    ``messages`` has a ``provider`` and a ``payload`` per row: what render-messages encoded, or a firebase-admin
    ``Message`` (the operations alerts build their own). Re-running a batch sends only keys still ``pending`` in
    the ledger. Every provider's group is sent at once, on one event loop, each through its own sender (its own
    concurrency and quota); a provider with no configuration leaves its messages pending, and once the others
    are sent the task fails for an operator.

    Outcomes are written in small groups while the rest are in flight, so a crash can repeat only the messages
    that were on the wire at that moment; each carries a collapse key derived from its idempotency key so the
    device still shows one.
    """
    ledger = ledger_for(get_settings())
    claims = notification_rows(messages, use_case, Status.PENDING, as_of=as_of)
    owed = ledger.claim(claims)
    subjects = notification_subjects(claims, messages["provider"])
    to_send = messages[messages["key"].isin(owed)]
    counts: Counter[str] = Counter(dict.fromkeys(SEND_COUNTS, 0))
    counts["already_done"] = len(messages) - len(to_send)
    seconds_recording = 0.0
    configuration_errors: Counter[str] = Counter()

    def record(results: Sequence[PushResult]) -> None:
        """The one way an outcome reaches the ledger, whichever provider sent it (all on the loop's thread)."""
        nonlocal seconds_recording
        started = time.perf_counter()
        outcomes, dead_devices = [], defaultdict(list)
        for result in results:
            status, reason, outcome = _classify(result)
            outcomes.append(
                {
                    "key": result.key,
                    "status": status,
                    "reason": reason,
                    "provider_message_id": result.message_id,
                    "attempts": result.attempts,
                }
            )
            counts[outcome] += 1
            if outcome == "configuration_error":
                configuration_errors[f"{result.provider}:{result.error_code}"] += 1
            if result.error_class is not None and result.error_class.deactivate_device:
                dead_devices[f"{result.provider}:{result.error_code}"].append(subjects[result.key].device_id)
        ledger.record_outcomes(outcomes, subjects)
        for reason, devices in dead_devices.items():
            counts["devices_deactivated"] += ledger.deactivate_devices(devices, reason)
        seconds_recording += time.perf_counter() - started

    groups: list[tuple[PushSender[Any], list[PushRequest]]] = []
    now = time.time()
    for provider, rows in to_send.groupby("provider", sort=True):
        provider = PushProvider(provider)
        connection = push.connection(provider)
        if connection is None:
            reason = f"configuration:{provider}_not_configured"
            ledger.record_outcomes(
                [{"key": key, "status": Status.PENDING, "reason": reason, "attempts": 0} for key in rows["key"]]
            )
            counts["configuration_error"] += len(rows)
            configuration_errors[f"{provider}_not_configured"] += len(rows)
            continue
        groups.append((connection.get_sender(), push_requests(provider, rows, now)))
    if groups:
        _send_all(groups, record)
    get_run_logger().info("send: %s", dict(counts))
    if configuration_errors:
        raise PushConfigurationError(
            f"{configuration_errors.total()} message(s) not sent for configuration reasons "
            f"({', '.join(sorted(configuration_errors))}); they stay pending until an operator fixes it"
        )
    return {**counts, "seconds_recording": round(seconds_recording, 3)}


def _send_all(groups: Sequence[tuple[PushSender[Any], list[PushRequest]]], record: OnResults) -> None:
    """Every provider's group at once on one event loop (uvloop where installed), through one ``record``.

    Recording every ``max_concurrency`` completions of a sender (or every 0.2 s) bounds what a crash can repeat to
    twice the most messages in flight, per provider."""

    async def send_every_group() -> None:
        await asyncio.gather(
            *(
                sender.send_async(requests, on_results=record, flush_size=sender.max_concurrency)
                for sender, requests in groups
            )
        )

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(send_every_group())
