"""Opaque document references and signed, expiring portal links.

A push never names the document's content; it carries a reference only our ledger can resolve and a link the
portal can check without a database: ``{portal}/{ref}?exp={unix seconds}&sig={HMAC-SHA256(everything before
&sig)}``. The signature covers the whole link (scheme, host, path prefix, reference and expiry), so a link moved to
another host or path, or given another parameter, no longer verifies; and since every link we issue expires at
most one link lifetime after it was signed, an expiry further ahead than that is refused even when signed with our
key. (Links signed before the whole link was covered, over ``ref.exp`` only, no longer verify.)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

# The clocks of the signing run and of the verifier may disagree by this much.
CLOCK_SKEW = timedelta(minutes=5)
# What follows the portal URL: the reference, a Unix time of at most 12 digits (year 33658) and the signature.
_SHAPE = "{portal}/{ref}?exp={Unix time, up to 12 digits}&sig={signature}"
_SIGNED_PART = re.compile(r"(?P<ref>[A-Za-z0-9_-]{1,64})\?exp=(?P<exp>[0-9]{1,12})&sig=(?P<sig>[A-Za-z0-9_-]{43})")


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def document_ref(key: bytes, use_case: str, document_id: str) -> str:
    """Deterministic, so a re-run gives the same reference; keyed, so it reveals nothing of the id."""
    digest = hmac.new(key, f"ref\x1f{use_case}\x1f{document_id}".encode(), hashlib.sha256).digest()
    return _b64(digest[:15])


def customer_ref(key: bytes, customer_id: str) -> str:
    """What a Prefect event says instead of the customer id: stable per customer, keyed, unlike any document ref."""
    digest = hmac.new(key, f"customer\x1f{customer_id}".encode(), hashlib.sha256).digest()
    return _b64(digest[:15])


def _unsigned(portal_url: str, ref: str, expires: int) -> str:
    return f"{portal_url.rstrip('/')}/{ref}?exp={expires}"


def _signature(key: bytes, unsigned: str) -> str:
    return _b64(hmac.new(key, f"link\x1f{unsigned}".encode(), hashlib.sha256).digest())


def signed_link(key: bytes, portal_url: str, ref: str, expires_at: datetime) -> str:
    unsigned = _unsigned(portal_url, ref, int(expires_at.timestamp()))
    return f"{unsigned}&sig={_signature(key, unsigned)}"


@dataclass(frozen=True)
class LinkCheck:
    valid: bool
    reason: str
    ref: str | None = None
    expires_at: int | None = None


def verify_link(key: bytes, url: str, now: datetime, *, portal_url: str, lifetime: timedelta) -> LinkCheck:
    """Whether ``url`` is a link we issued for ``portal_url``, unexpired; never raises, whatever ``url`` holds."""
    prefix = f"{portal_url.rstrip('/')}/"
    if not url.startswith(prefix):
        return LinkCheck(False, "not a link into this portal (another scheme, host or path)")
    match = _SIGNED_PART.fullmatch(url, len(prefix))
    if match is None:
        return LinkCheck(False, f"not a signed document link: expected {_SHAPE}, nothing more")
    ref, expires = match["ref"], int(match["exp"])
    if not hmac.compare_digest(_signature(key, _unsigned(portal_url, ref, expires)), match["sig"]):
        return LinkCheck(False, "signature does not match (tampered, or signed with another key)", ref, expires)
    if now.timestamp() >= expires:
        return LinkCheck(False, "link has expired", ref, expires)
    if expires > (now + lifetime + CLOCK_SKEW).timestamp():
        return LinkCheck(False, "link expires later than the link lifetime allows", ref, expires)
    return LinkCheck(True, "valid", ref, expires)
