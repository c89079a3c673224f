"""Firebase Cloud Messaging: firebase-admin's message model, encoder and errors on a fast transport of ours.

firebase-admin 7.7 models and validates messages well, but its ``send_each_async`` manages a few hundred
messages/s here (benchmarks/fcm_transport.py), retries neither 429 nor connection errors, ignores
``Retry-After`` and cannot be pointed at an emulator. So messages are built and encoded by the SDK and posted
by aiohttp (10-25x faster), and failures come back as the very exception classes the SDK would raise. Every
reach into SDK internals lives in this package, each with the reason it is there: ``message`` (model and
encoder), ``auth`` (endpoint, credentials, a firebase-admin app pointed at it), ``errors`` (failures as the SDK's
exceptions) and ``sender`` (the aiohttp transport).
"""

from exstream_push.connectors.collapse import (
    APNS_COLLAPSE_ID_MAX_BYTES,
    WEBPUSH_TOPIC_MAX_CHARS,
    apns_collapse_id,
    webpush_topic,
)
from exstream_push.connectors.fcm.auth import (
    FCM_SCOPE,
    FcmCredentialsMissing,
    fcm_send_url,
    firebase_app_at,
    resolve_credentials,
)
from exstream_push.connectors.fcm.message import (
    MAX_PAYLOAD_BYTES,
    MAX_TOPIC_PAYLOAD_BYTES,
    MAX_TTL,
    PayloadTooLargeError,
    Priority,
    build_message,
    encode,
    payload_limit,
)
from exstream_push.connectors.push import (
    BACKOFF_BASE_SECONDS,
    BACKOFF_CAP_SECONDS,
    FLUSH_INTERVAL_SECONDS,
    MAX_RETRY_WAIT_SECONDS,
    PushRequest,
    PushResult,
    event_loop_factory,
    parse_retry_after,
)

# The transport and its failures import aiohttp (a quarter of a second of every command's start): they load when
# first asked for, by the task that sends, not with the message model that every task module imports.
_ON_FIRST_USE = {
    "FcmSender": "sender",
    "QUOTA_RETRY_FLOOR_SECONDS": "sender",
    "REFRESH_RETRY_SECONDS": "sender",
}


def __getattr__(name: str) -> object:
    from importlib import import_module

    if name in _ON_FIRST_USE:
        return getattr(import_module(f"{__name__}.{_ON_FIRST_USE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "APNS_COLLAPSE_ID_MAX_BYTES",
    "BACKOFF_BASE_SECONDS",
    "BACKOFF_CAP_SECONDS",
    "FCM_SCOPE",
    "FLUSH_INTERVAL_SECONDS",
    "MAX_PAYLOAD_BYTES",
    "MAX_RETRY_WAIT_SECONDS",
    "MAX_TOPIC_PAYLOAD_BYTES",
    "MAX_TTL",
    "QUOTA_RETRY_FLOOR_SECONDS",
    "REFRESH_RETRY_SECONDS",
    "WEBPUSH_TOPIC_MAX_CHARS",
    "FcmCredentialsMissing",
    "FcmSender",
    "PayloadTooLargeError",
    "Priority",
    "PushRequest",
    "PushResult",
    "apns_collapse_id",
    "build_message",
    "encode",
    "event_loop_factory",
    "fcm_send_url",
    "firebase_app_at",
    "parse_retry_after",
    "payload_limit",
    "resolve_credentials",
    "webpush_topic",
]
