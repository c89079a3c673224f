"""Standards Web Push: RFC 8030 delivery, RFC 8291 ``aes128gcm`` encryption (pywebpush) and RFC 8292 VAPID
(py-vapid), to whichever push service a browser's subscription names. ``message`` is one notification and its
encryption, ``vapid`` who we are to a push service, ``sender`` the aiohttp transport on the shared batch driver."""

from exstream_push.connectors.webpush.message import (
    MAX_PLAINTEXT_BYTES,
    MAX_TTL_SECONDS,
    URGENCIES,
    InvalidSubscriptionError,
    PayloadTooLargeError,
    WebPushNotification,
    validate_subscription,
)
from exstream_push.connectors.webpush.vapid import VapidKeyMissing, VapidTokens, load_vapid_key, load_vapid_key_file

# The transport imports aiohttp: it loads when a task first asks for a sender (as ``connectors.fcm``'s does).
_ON_FIRST_USE = {"WebPushError": "sender", "WebPushSender": "sender"}


def __getattr__(name: str) -> object:
    from importlib import import_module

    if name in _ON_FIRST_USE:
        return getattr(import_module(f"{__name__}.{_ON_FIRST_USE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MAX_PLAINTEXT_BYTES",
    "MAX_TTL_SECONDS",
    "URGENCIES",
    "InvalidSubscriptionError",
    "PayloadTooLargeError",
    "VapidKeyMissing",
    "VapidTokens",
    "WebPushError",
    "WebPushNotification",
    "WebPushSender",
    "load_vapid_key",
    "load_vapid_key_file",
    "validate_subscription",
]
