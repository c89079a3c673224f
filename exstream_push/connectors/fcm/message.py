"""FCM messages: built and validated by firebase-admin's model, encoded by its own encoder, within FCM's limits."""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from datetime import timedelta
from typing import Literal

import orjson
from firebase_admin import messaging

from exstream_push.connectors.collapse import apns_collapse_id, webpush_topic
from exstream_push.status import QuarantineReason

MAX_PAYLOAD_BYTES = 4096
"""FCM's limit for a message to one device (a registration token or an installation id)."""
MAX_TOPIC_PAYLOAD_BYTES = 2048
"""FCM's limit for a message to a topic or a condition (operations alerts go to a topic)."""
MAX_TTL = timedelta(days=28)

# `fid` is not a new name for the token: it is the Firebase Installation ID, sent as its own "fid" field, which
# an app reports only once it opts in to FID registration (onRegistered instead of onNewToken). Our devices
# register FCM registration tokens, so they must travel as "token"; 7.7 warns on every such message, which says
# nothing new here. One process-wide filter, because `catch_warnings` per message is neither thread-safe (render
# tasks run in threads) nor cheap (a sixth of building a message).
warnings.filterwarnings("ignore", r"Message\.token is deprecated", DeprecationWarning)

Priority = Literal["normal", "high"]
_APNS_PRIORITY = {"normal": "5", "high": "10"}


def build_message(
    *,
    title: str,
    body: str,
    data: Mapping[str, str],
    collapse_key: str,
    token: str | None = None,
    fid: str | None = None,
    topic: str | None = None,
    priority: Priority = "normal",
    ttl: timedelta | None = None,
) -> messaging.Message:
    """One notification for exactly one target: a device's registration ``token``, its installation ``fid``,
    or a ``topic`` (operations alerts).

    The collapse key goes into all three platforms, so a newer notice about the same document replaces an
    older one still waiting on Android, iOS and the web alike. ``ttl`` (≤ 28 days) likewise applies to all
    three; for APNs it becomes an absolute expiry counted from now, so build messages just before sending.
    """
    if sum(target is not None for target in (token, fid, topic)) != 1:
        raise ValueError("exactly one of token, fid or topic must be given")
    if not collapse_key:
        raise ValueError("collapse_key must not be empty")
    if priority not in _APNS_PRIORITY:
        raise ValueError(f"priority is {priority!r}: it must be 'normal' or 'high'")
    if ttl is not None and not timedelta(0) <= ttl <= MAX_TTL:
        raise ValueError(f"ttl is {ttl}: FCM accepts 0 to {MAX_TTL.days} days")

    apns_headers = {
        "apns-collapse-id": apns_collapse_id(collapse_key),
        "apns-priority": _APNS_PRIORITY[priority],
    }
    webpush_headers = {"Topic": webpush_topic(collapse_key), "Urgency": priority}
    if ttl is not None:
        seconds = int(ttl.total_seconds())
        # APNs reads 0 as "deliver now or never"; anything else is an absolute UNIX time.
        apns_headers["apns-expiration"] = str(int(time.time()) + seconds) if seconds else "0"
        webpush_headers["TTL"] = str(seconds)
    content = {
        "notification": messaging.Notification(title=title, body=body),
        "data": dict(data),
        "android": messaging.AndroidConfig(collapse_key=collapse_key, priority=priority, ttl=ttl),
        "apns": messaging.APNSConfig(headers=apns_headers),
        "webpush": messaging.WebpushConfig(headers=webpush_headers),
    }
    if token is None:
        return messaging.Message(fid=fid, topic=topic, **content)
    return messaging.Message(token=token, **content)


class PayloadTooLargeError(ValueError):
    """The encoded message exceeds FCM's limit for its target; its text starts with ``payload_too_large``."""


def payload_limit(message: messaging.Message) -> int:
    """FCM's size limit for this message: 2,048 bytes to a topic or a condition, 4,096 to one device."""
    return MAX_TOPIC_PAYLOAD_BYTES if message.topic or message.condition else MAX_PAYLOAD_BYTES


def encode(message: messaging.Message) -> bytes:
    """The message as FCM receives it (the ``message`` object of the request), validated by firebase-admin and
    within FCM's size limit for its target (``payload_limit``), else ``PayloadTooLargeError``.

    Its length, target and platform options included, is at least what FCM counts against its limit, so a message
    encoded here is within it there."""
    # _MessagingService.encode_message is the SDK's own validate-and-encode step (a classmethod, no app
    # needed); the public API only reaches it from inside its send functions.
    encoded = orjson.dumps(messaging._MessagingService.encode_message(message))
    limit = payload_limit(message)
    if len(encoded) > limit:
        target = "topic or condition" if limit == MAX_TOPIC_PAYLOAD_BYTES else "device"
        raise PayloadTooLargeError(
            f"{QuarantineReason.PAYLOAD_TOO_LARGE}: {len(encoded)} bytes, over FCM's {limit}-byte limit for a "
            f"{target} message"
        )
    # orjson's result keeps its 4 KB write buffer; an exact copy keeps a batch's payloads at their real size.
    return memoryview(encoded).tobytes()
