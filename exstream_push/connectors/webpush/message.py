"""One Web Push message (RFC 8030) and its RFC 8291 ``aes128gcm`` encryption, done by pywebpush.

A subscription is what the browser's ``PushSubscription.toJSON()`` gives: an https endpoint on the browser
vendor's push service and two keys, ``p256dh`` (the browser's P-256 public key) and ``auth`` (a 16-byte secret).
The push service only relays the ciphertext; the service worker decrypts it.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Literal, get_args
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec

Urgency = Literal["very-low", "low", "normal", "high"]
URGENCIES: frozenset[str] = frozenset(get_args(Urgency))
TOPIC_MAX_CHARS = 32
"""RFC 8030 §5.4: a ``Topic`` is at most 32 characters of the URL-safe base64 alphabet."""
_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")
MAX_TTL_SECONDS = 2_419_200
"""28 days: what FCM's and Mozilla's push services keep a message at most (a larger TTL is cut to it)."""

RECORD_SIZE = 4096
"""The one ``aes128gcm`` record a push service must accept (RFC 8291 §4: 4096 bytes of body at least)."""
_HEADER_BYTES = 16 + 4 + 1 + 65  # salt, record size, key id length, the sender's ephemeral P-256 public key
_TAG_BYTES = 16
_DELIMITER_BYTES = 1
MAX_PLAINTEXT_BYTES = RECORD_SIZE - _HEADER_BYTES - _TAG_BYTES - _DELIMITER_BYTES
"""3993: the largest plaintext that fits that one record, so every push service takes it."""

P256DH_BYTES = 65
AUTH_BYTES = 16


@dataclass(frozen=True, slots=True)
class WebPushNotification:
    endpoint: str
    """The subscription's endpoint URL (https)."""
    p256dh: str
    """base64url, as ``PushSubscription.toJSON()`` gives."""
    auth: str
    """base64url."""
    payload: bytes
    """The plaintext JSON the service worker receives."""
    topic: str
    """RFC 8030 ``Topic``: a later message with the same topic replaces one not yet delivered
    (``exstream_push.connectors.fcm.webpush_topic(key)`` makes one from an idempotency key)."""
    urgency: str = "normal"
    """RFC 8030 ``Urgency``: very-low, low, normal or high."""
    ttl: int = MAX_TTL_SECONDS
    """Seconds the push service keeps the message for a browser that is offline."""


class PayloadTooLargeError(ValueError):
    """The plaintext does not fit one ``aes128gcm`` record of 4096 bytes."""


class InvalidSubscriptionError(ValueError):
    """The endpoint or keys are not a usable subscription (no push service would take the message)."""


def _b64url(value: str) -> bytes:
    """base64url with or without padding, as browsers give it; ``binascii.Error`` when it is not."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", value):
        raise binascii.Error("not base64url")
    stripped = value.rstrip("=")
    return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))


def validate_subscription(endpoint: str, p256dh: str, auth: str) -> str | None:
    """What is wrong with a subscription, in words that quote none of it, or None when it is usable."""
    parts = urlsplit(endpoint)
    if parts.scheme != "https" or not parts.hostname:
        return "endpoint is not an https URL"
    try:
        public_key = _b64url(p256dh)
    except (binascii.Error, ValueError):
        return "p256dh is not base64url"
    if len(public_key) != P256DH_BYTES or public_key[0] != 0x04:
        return f"p256dh is not an uncompressed P-256 point ({P256DH_BYTES} bytes starting 0x04)"
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_key)
    except ValueError:
        return "p256dh is not a point on P-256"
    try:
        secret = _b64url(auth)
    except (binascii.Error, ValueError):
        return "auth is not base64url"
    if len(secret) != AUTH_BYTES:
        return f"auth is not {AUTH_BYTES} bytes"
    return None


def header_problem(notification: WebPushNotification) -> str | None:
    """What RFC 8030 forbids in the headers this notification would carry, or None."""
    if notification.urgency not in URGENCIES:
        return "urgency is not one of very-low, low, normal, high"
    if not _TOPIC.fullmatch(notification.topic):
        return f"topic is not 1-{TOPIC_MAX_CHARS} characters of the URL-safe base64 alphabet"
    if notification.ttl < 0:
        return "ttl is negative"
    return None


def encrypt(notification: WebPushNotification) -> bytes:
    """The RFC 8291 ``aes128gcm`` body for ``notification`` (a fresh ephemeral key and salt each time).

    ``PayloadTooLargeError`` over ``MAX_PLAINTEXT_BYTES``, ``InvalidSubscriptionError`` for a subscription no
    push service could deliver to, ``ValueError`` for headers RFC 8030 forbids: all refused before any request.
    """
    if len(notification.payload) > MAX_PLAINTEXT_BYTES:
        raise PayloadTooLargeError(f"{len(notification.payload)} bytes of payload, at most {MAX_PLAINTEXT_BYTES}")
    problem = validate_subscription(notification.endpoint, notification.p256dh, notification.auth)
    if problem is not None:
        raise InvalidSubscriptionError(problem)
    problem = header_problem(notification)
    if problem is not None:
        raise ValueError(problem)
    subscription = {
        "endpoint": notification.endpoint,
        "keys": {"p256dh": notification.p256dh, "auth": notification.auth},
    }
    # pywebpush imports aiohttp and requests: loaded by the task that encrypts, not by every command's start.
    from pywebpush import WebPusher, WebPushException

    try:
        return WebPusher(subscription).encode(notification.payload, "aes128gcm")["body"]
    except WebPushException as error:  # validated above; kept as a value error should pywebpush differ
        raise InvalidSubscriptionError("pywebpush refused the subscription keys") from error


def headers(notification: WebPushNotification) -> dict[str, str]:
    """The RFC 8030 headers of the message (``Authorization`` is added per push service by the sender)."""
    return {
        "TTL": str(min(notification.ttl, MAX_TTL_SECONDS)),
        "Urgency": notification.urgency,
        "Topic": notification.topic,
        "Content-Encoding": "aes128gcm",
        "Content-Type": "application/octet-stream",
    }


def origin(endpoint: str) -> str:
    """The push service's origin (scheme, host, port): the VAPID token's ``aud``."""
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}"
