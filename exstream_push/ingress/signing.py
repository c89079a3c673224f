"""Request signatures: ``X-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">``.

The timestamp is inside the signed text, so a captured request cannot be re-dated; the tolerance bounds how long
a captured request stays usable, and the replay table (``SeenRequest``) refuses it a second time within that span.

Checking is split in two so that a request can be refused before its body is read: ``parse_header`` judges the
header alone (shape, bounds, timestamp), ``check`` then compares the digest of the body, once it has been read.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

SIGNATURE_HEADER = "X-Signature"
TOLERANCE = timedelta(minutes=5)
# A request dated up to TOLERANCE ahead stays valid until TOLERANCE after that date: keep what was seen that long.
REPLAY_MEMORY = 2 * TOLERANCE
# Room for a timestamp and a few signatures; anything longer is not a header we issue and is not parsed.
MAX_HEADER_LENGTH = 512
# Several v1 values let a caller sign with an old and a new secret while they rotate; a handful is plenty.
MAX_SIGNATURES = 4
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # unix seconds, ASCII digits only; 12 digits reach past year 30000
_DIGEST = re.compile(r"[0-9a-fA-F]{64}")  # hex HMAC-SHA256
_FORMAT = f"the {SIGNATURE_HEADER} header must be t=<unix seconds>,v1=<hex HMAC-SHA256>"


class SignatureError(ValueError):
    """Why a request is not authenticated; the message is safe to return to the caller."""


@dataclass(frozen=True)
class SignatureClaim:
    """What a well-formed, timely header claims; only the body's digest can prove it."""

    timestamp: int
    candidates: tuple[str, ...]


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The header value a caller sends; the ingress's callers and tests sign with it."""
    return f"t={timestamp},v1={_digest(secret, timestamp, body)}"


def _digest(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def parse_header(header: str | None, now: datetime) -> SignatureClaim:
    """The header's claim, judged without the body so a bad one is refused before any of the body is read.

    Raises SignatureError naming what is wrong: missing, too long, a malformed part, too many signatures, or a
    timestamp outside the tolerance.
    """
    if not header:
        raise SignatureError(f"the {SIGNATURE_HEADER} header is missing")
    if len(header) > MAX_HEADER_LENGTH:
        raise SignatureError(f"the {SIGNATURE_HEADER} header is longer than {MAX_HEADER_LENGTH} characters")
    timestamps: list[str] = []
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            if not _TIMESTAMP.fullmatch(value):
                raise SignatureError(f"{SIGNATURE_HEADER} t= must be unix seconds, at most 12 digits")
            timestamps.append(value)
        elif name == "v1":
            if not _DIGEST.fullmatch(value):
                raise SignatureError(f"{SIGNATURE_HEADER} v1= must be 64 hex digits (HMAC-SHA256)")
            candidates.append(value.lower())
    if len(timestamps) != 1 or not candidates:
        raise SignatureError(_FORMAT)
    if len(candidates) > MAX_SIGNATURES:
        raise SignatureError(f"{SIGNATURE_HEADER} carries more than {MAX_SIGNATURES} v1= signatures")
    timestamp = int(timestamps[0])
    if abs(now.timestamp() - timestamp) > TOLERANCE.total_seconds():
        raise SignatureError("the signature's timestamp is more than 5 minutes away from the server's clock")
    return SignatureClaim(timestamp, tuple(candidates))


def check(secret: bytes, claim: SignatureClaim, body: bytes) -> str:
    """The matching ``v1`` signature, the request's identity for replay checks; raises SignatureError."""
    expected = _digest(secret, claim.timestamp, body)
    for candidate in claim.candidates:
        if hmac.compare_digest(expected, candidate):
            return expected
    raise SignatureError("the signature does not match the body")
