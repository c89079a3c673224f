"""Request signatures: ``X-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">``.

The timestamp is inside the signed text, so a captured request cannot be re-dated; the tolerance bounds how long
a captured request stays usable, and the replay table (``SeenRequest``) refuses it a second time within that span.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta

SIGNATURE_HEADER = "X-Signature"
TOLERANCE = timedelta(minutes=5)
# A request dated up to TOLERANCE ahead stays valid until TOLERANCE after that date: keep what was seen that long.
REPLAY_MEMORY = 2 * TOLERANCE


class SignatureError(ValueError):
    """Why a request is not authenticated; the message is safe to return to the caller."""


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The header value a caller sends; the ingress's callers and tests sign with it."""
    return f"t={timestamp},v1={_digest(secret, timestamp, body)}"


def _digest(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: bytes, header: str | None, body: bytes, now: datetime) -> str:
    """The matching ``v1`` signature, the request's identity for replay checks; raises SignatureError.

    Several ``v1`` values are allowed so a caller can sign with an old and a new secret while they rotate.
    """
    if not header:
        raise SignatureError(f"the {SIGNATURE_HEADER} header is missing")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1" and value:
            candidates.append(value.lower())
    if timestamp is None or not candidates:
        raise SignatureError(f"the {SIGNATURE_HEADER} header must be t=<unix seconds>,v1=<hex HMAC-SHA256>")
    if abs(now.timestamp() - timestamp) > TOLERANCE.total_seconds():
        raise SignatureError("the signature's timestamp is more than 5 minutes away from the server's clock")
    expected = _digest(secret, timestamp, body)
    for candidate in candidates:
        if hmac.compare_digest(expected, candidate):
            return expected
    raise SignatureError("the signature does not match the body")
