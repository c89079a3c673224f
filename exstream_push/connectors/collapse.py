"""Collapse identifiers from an idempotency key, in the form each provider's header allows: a message sent twice
(a crash between the send and its record) carries the same one both times, so the device shows it once."""

from __future__ import annotations

import base64
import hashlib
import re

APNS_COLLAPSE_ID_MAX_BYTES = 64
WEBPUSH_TOPIC_MAX_CHARS = 32
_URL_SAFE_BASE64 = re.compile(r"[A-Za-z0-9_-]+")


def _digest(text: str, length: int) -> str:
    """A deterministic, URL-safe stand-in for a value that is too long or has characters a header forbids."""
    return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).decode().rstrip("=")[:length]


def apns_collapse_id(collapse_key: str) -> str:
    """``apns-collapse-id`` allows 64 bytes; longer keys become a 43-character SHA-256 digest."""
    if len(collapse_key.encode()) <= APNS_COLLAPSE_ID_MAX_BYTES:
        return collapse_key
    return _digest(collapse_key, 43)


def webpush_topic(collapse_key: str) -> str:
    """RFC 8030 ``Topic``: at most 32 characters of the URL-safe base64 alphabet, else a 32-char digest."""
    if len(collapse_key) <= WEBPUSH_TOPIC_MAX_CHARS and _URL_SAFE_BASE64.fullmatch(collapse_key):
        return collapse_key
    return _digest(collapse_key, WEBPUSH_TOPIC_MAX_CHARS)
