"""Send: claim each idempotency key in the ledger, push what is still owed, record outcomes as they complete."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from exstream_push.blocks.fcm import FcmConnection
from exstream_push.connectors.fcm import PushRequest, PushResult
from exstream_push.connectors.push_errors import PushConfigurationError
from exstream_push.ledger.store import notification_rows
from exstream_push.retrying import retry_if_it_can_succeed
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push.status import Status


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


@task(
    name="send-push",
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=retry_if_it_can_succeed,
    cache_policy=NO_CACHE,
)
def send_push(
    messages: pd.DataFrame, use_case: str, fcm: FcmConnection, as_of: datetime | None = None
) -> dict[str, float]:
    """Returns counts by outcome, and the seconds spent writing outcomes to the ledger.

    ``messages`` has a ``payload`` per row: what render-messages encoded, or a firebase-admin ``Message`` (the
    operations alerts build their own). Re-running a batch sends only keys still ``pending`` in the ledger.

    Outcomes are written in small groups while the rest are in flight, so a crash can repeat only the messages
    that were on the wire at that moment; each carries a collapse key derived from its idempotency key so the
    device still shows one.
    """
    ledger = ledger_for(get_settings())
    owed = ledger.claim(notification_rows(messages, use_case, Status.PENDING, as_of=as_of))
    to_send = messages[messages["key"].isin(owed)]
    device_of = dict(zip(to_send["key"], to_send["device_id"], strict=True))
    counts: Counter[str] = Counter(already_done=len(messages) - len(to_send))
    seconds_recording = 0.0
    configuration_errors: list[str] = []

    def record(results: Sequence[PushResult]) -> None:
        nonlocal seconds_recording
        started = time.perf_counter()
        outcomes, dead_devices = [], []
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
                configuration_errors.append(str(result.error_code))
            if result.error_class is not None and result.error_class.deactivate_device:
                dead_devices.append(device_of[result.key])
        ledger.record_outcomes(outcomes)
        if dead_devices:
            counts["devices_deactivated"] += ledger.deactivate_devices(dead_devices, "fcm:UNREGISTERED")
        seconds_recording += time.perf_counter() - started

    requests = [
        PushRequest(key=key, message=payload) for key, payload in zip(to_send["key"], to_send["payload"], strict=True)
    ]
    if requests:
        sender = fcm.get_sender()
        # Recording every `max_concurrency` completions (or every 0.2 s) bounds what a crash can repeat to twice the
        # most messages in flight.
        sender.send(requests, on_results=record, flush_size=sender.max_concurrency)
    get_run_logger().info("send: %s", dict(counts))
    if configuration_errors:
        raise PushConfigurationError(
            f"FCM refused {len(configuration_errors)} message(s) for configuration reasons "
            f"({', '.join(sorted(set(configuration_errors)))}); they stay pending until an operator fixes it"
        )
    return {**counts, "seconds_recording": round(seconds_recording, 3)}
