"""Opaque document references and signed, expiring portal links.

A push never names the document's content; it carries a reference only our ledger can resolve and a link the
portal can check without a database: ``{portal}/{ref}?exp={unix seconds}&sig={HMAC-SHA256(ref.exp)}``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qs, urlsplit


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


def _signature(key: bytes, ref: str, expires: int) -> str:
    return _b64(hmac.new(key, f"{ref}.{expires}".encode(), hashlib.sha256).digest())


def signed_link(key: bytes, portal_url: str, ref: str, expires_at: datetime) -> str:
    expires = int(expires_at.timestamp())
    return f"{portal_url.rstrip('/')}/{ref}?exp={expires}&sig={_signature(key, ref, expires)}"


@dataclass(frozen=True)
class LinkCheck:
    valid: bool
    reason: str
    ref: str | None = None
    expires_at: int | None = None


def verify_link(key: bytes, url: str, now: datetime) -> LinkCheck:
    parts = urlsplit(url)
    ref = parts.path.rstrip("/").rsplit("/", 1)[-1] if parts.path else ""
    query = parse_qs(parts.query)
    exp_values, sig_values = query.get("exp", []), query.get("sig", [])
    if not ref or len(exp_values) != 1 or len(sig_values) != 1 or not exp_values[0].isdigit():
        return LinkCheck(False, "not a signed document link")
    expires = int(exp_values[0])
    if not hmac.compare_digest(_signature(key, ref, expires), sig_values[0]):
        return LinkCheck(False, "signature does not match (tampered, or signed with another key)", ref, expires)
    if now.timestamp() >= expires:
        return LinkCheck(False, "link has expired", ref, expires)
    return LinkCheck(True, "valid", ref, expires)
