"""What one APNs notification is: the device, the JSON body and the ``apns-*`` headers Apple reads.

Render encodes the body once (``apns_payload``); the sender only checks its size and sends the bytes as they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

MAX_PAYLOAD_BYTES = 4096
"""Apple's limit for every push type but VoIP (5,120), which this product does not send."""
MIN_TOKEN_HEX_CHARS = 64
MAX_TOKEN_HEX_CHARS = 200
"""Apple issues 32-byte tokens today but documents them as of variable length: do not hard-code one size."""
PRIORITIES = frozenset({1, 5, 10})
"""10 delivers at once, 5 when the device's power allows it, 1 bundled with other notifications."""
RESERVED_KEY = "aps"

_HEX = re.compile(r"[0-9A-Fa-f]+")


class ApnsPayloadTooLarge(ValueError):
    """The encoded body is over ``MAX_PAYLOAD_BYTES``: APNs would answer 413, so nothing is sent."""


class InvalidDeviceToken(ValueError):
    """The address is no APNs device token at all (see ``validate_device_token``): it can never be reached."""


@dataclass(frozen=True, slots=True)
class ApnsNotification:
    device_token: str
    """Hex, as the app read it from ``didRegisterForRemoteNotificationsWithDeviceToken``."""
    payload: bytes
    """The JSON body (``{"aps": {...}, custom keys...}``), encoded once by render."""
    collapse_id: str
    """``apns-collapse-id``: repeats of one message replace each other on the device (at most 64 bytes,
    ``exstream_push.connectors.fcm.apns_collapse_id(key)`` gives one)."""
    priority: int = 10
    """``apns-priority``: 10 immediate, 5 power-considerate (our normal priority), 1 lowest."""
    push_type: str = "alert"
    expiration: int = 0
    """``apns-expiration`` in UNIX seconds; 0: deliver at once or never, no storing for an offline device."""


def apns_payload(title: str, body: str, data: Mapping[str, str]) -> bytes:
    """The body of an alert: ``aps.alert`` with title and body, the custom keys beside ``aps`` (as FCM's data
    travels to iOS). A custom key named ``aps`` would replace Apple's dictionary, so it is refused."""
    if RESERVED_KEY in data:
        raise ValueError(f"custom data may not use the key {RESERVED_KEY!r}: APNs reserves it")
    return orjson.dumps({RESERVED_KEY: {"alert": {"title": title, "body": body}}, **data})


def validate_device_token(token: str) -> str | None:
    """Why ``token`` cannot be an APNs device token (not hex, odd or impossible length), or None when it can."""
    if not _HEX.fullmatch(token):
        return "not hexadecimal"
    if len(token) % 2 or not MIN_TOKEN_HEX_CHARS <= len(token) <= MAX_TOKEN_HEX_CHARS:
        return (
            f"{len(token)} hex characters, expected an even number from {MIN_TOKEN_HEX_CHARS} to {MAX_TOKEN_HEX_CHARS}"
        )
    return None
