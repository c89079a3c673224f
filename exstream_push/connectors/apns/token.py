"""The APNs provider token: an ES256 JWT signed with the team's ``.p8`` key, shared and reused.

Apple refuses a token older than an hour (``ExpiredProviderToken``) and one re-signed more often than every 20
minutes (``TooManyProviderTokenUpdates``), so a token is signed once and reused for ``RENEW_AFTER_SECONDS``, by
every sender of the process that signs with the same key: the send task builds a sender per batch, and a token per
batch would be re-signed every few seconds.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from exstream_push.errors import ExstreamPushError

MIN_REUSE_SECONDS = 20 * 60
"""Apple's floor between two tokens of one key: re-signing sooner earns ``TooManyProviderTokenUpdates``."""
RENEW_AFTER_SECONDS = 45 * 60
"""Renewed this old, well inside Apple's 60-minute ceiling, so a token never expires mid-batch."""


class ApnsKeyInvalid(ExstreamPushError):
    """The APNs signing key is not a P-256 private key in PEM: nothing can be sent until an operator fixes it."""

    exit_code = 78  # sysexits' EX_CONFIG


class ApnsNotConfigured(ExstreamPushError):
    """APNs devices to reach but no team, key or bundle id to reach them with."""

    exit_code = 78

    def __init__(self, missing: list[str]) -> None:
        super().__init__(f"APNs is not configured: set {', '.join(missing)} (the team's .p8 key from Apple)")


def load_signing_key(pem: str | bytes) -> ec.EllipticCurvePrivateKey:
    """The ``.p8`` file's contents (PKCS#8 PEM, as Apple's developer site downloads it) as a P-256 key."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise ApnsKeyInvalid(
            f"the APNs signing key is not a readable PEM private key ({type(error).__name__})"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ApnsKeyInvalid("the APNs signing key must be an elliptic-curve P-256 key (ES256), as Apple issues")
    return key


@dataclass(slots=True)
class SignedToken:
    value: str
    issued_at: float


class ProviderToken:
    """One key's current token; ``signatures`` counts how often it was signed (what Apple rate-limits)."""

    def __init__(self, team_id: str, key_id: str, key: ec.EllipticCurvePrivateKey) -> None:
        self.team_id = team_id
        self.key_id = key_id
        self._key = key
        self._current: SignedToken | None = None
        self._lock = threading.Lock()
        self.signatures = 0

    def current(self, now: float) -> SignedToken:
        """The token to send at ``now``: the one held while younger than ``RENEW_AFTER_SECONDS``, else a new one.
        Senders in several threads share it; the lock makes one of them sign."""
        token = self._current
        if token is not None and 0 <= now - token.issued_at < RENEW_AFTER_SECONDS:
            return token
        with self._lock:
            token = self._current
            if token is None or not 0 <= now - token.issued_at < RENEW_AFTER_SECONDS:
                token = self._sign(now)
            return token

    def renewable(self, value: str, now: float) -> bool:
        """Whether APNs calling ``value`` expired is cured by signing anew: it was renewed already, or it is at
        least ``MIN_REUSE_SECONDS`` old (Apple's own floor). A younger one means the clocks disagree or the key is
        wrong: an operator's problem, which re-signing would only hide behind ``TooManyProviderTokenUpdates``."""
        token = self._current
        return token is None or token.value != value or now - token.issued_at >= MIN_REUSE_SECONDS

    def renew(self, value: str, now: float) -> None:
        """Sign anew if ``value`` is still the current token (once, whoever noticed first)."""
        with self._lock:
            if self._current is not None and self._current.value == value:
                self._sign(now)

    def _sign(self, now: float) -> SignedToken:
        issued_at = int(now)
        value = jwt.encode(
            {"iss": self.team_id, "iat": issued_at}, self._key, algorithm="ES256", headers={"kid": self.key_id}
        )
        self._current = SignedToken(value, issued_at)
        self.signatures += 1
        return self._current


_TOKENS: dict[tuple[str, str, bytes], ProviderToken] = {}
_TOKENS_LOCK = threading.Lock()


def provider_token(team_id: str, key_id: str, signing_key: str | bytes) -> ProviderToken:
    """The process's token for this team, key id and key: one per key, whichever sender asks."""
    key = load_signing_key(signing_key)
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    identity = (team_id, key_id, hashlib.sha256(public).digest())
    with _TOKENS_LOCK:
        token = _TOKENS.get(identity)
        if token is None:
            token = _TOKENS[identity] = ProviderToken(team_id, key_id, key)
        return token
