"""RFC 8292 VAPID: who we are to a push service, as an ES256 JWT signed by py-vapid.

A token names one push service (``aud`` = its origin) and expires within 24 hours; push services check it on
every message, so it is signed once per origin and reused until an hour before it expires, never per message.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from py_vapid import Vapid, VapidException

from exstream_push.errors import ExstreamPushError

TOKEN_LIFETIME_SECONDS = 12 * 3600
"""Half of RFC 8292's 24-hour limit, as pywebpush signs: a push service whose clock runs ahead still accepts it."""
RENEW_AHEAD_SECONDS = 3600
"""A token is renewed this long before it expires, so none is sent in its last minutes."""
KEY_FILE_SETTING = "EXSTREAM_PUSH_WEBPUSH_VAPID_PRIVATE_KEY_FILE"
_HOST = r"(localhost|[\w-]+(\.[\w-]+)+)"
_SUBJECT = re.compile(rf"mailto:[^@\s/]+@{_HOST}|https://{_HOST}", re.IGNORECASE)
"""What py-vapid signs: an address at localhost or a dotted domain, or an https origin without a path."""


class VapidKeyMissing(ExstreamPushError):
    """No usable VAPID private key: Web Push cannot send, and retrying will not change that."""

    exit_code = 78  # sysexits' EX_CONFIG

    def __init__(self, problem: str) -> None:
        super().__init__(f"no usable VAPID private key ({problem}): set {KEY_FILE_SETTING} to its PEM file")


def load_vapid_key(text: str) -> Vapid:
    """A private key as py-vapid reads one: PEM (PKCS#8 or SEC 1), DER or the raw 32-byte key in base64url
    (what ``vapid --gen`` and the web-push tools print). The error never quotes the key."""
    try:
        if "-----BEGIN" in text:
            return Vapid.from_pem(text.strip().encode())
        return Vapid.from_string(text.strip())
    except (VapidException, ValueError, TypeError) as error:
        raise VapidKeyMissing("the key is neither PEM nor a base64url P-256 private key") from error


def load_vapid_key_file(path: Path) -> Vapid:
    """Only an existing file: py-vapid's own ``from_file`` would generate (and save) a new key for a missing one,
    which would silently change who we are to every push service."""
    try:
        text = path.expanduser().read_text()
    except OSError as error:
        raise VapidKeyMissing(f"cannot read {path}: {error.strerror}") from error
    return load_vapid_key(text)


def check_subject(subject: str) -> str:
    """RFC 8292 §2.1: a ``mailto:`` or ``https:`` URI the push service's operators can reach us at; checked when
    the sender is built, so a bad one is a configuration error at once, not a failure per message."""
    if not _SUBJECT.fullmatch(subject):
        raise ValueError("the VAPID subject must be a mailto: address or an https: URL")
    return subject


class VapidTokens:
    """The ``Authorization`` header for each push service origin, signed once and reused until renewal is due.

    Thread-safe: senders of several event loops (one per ``send``) may share it.
    """

    def __init__(self, key: Vapid, subject: str, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._subject = check_subject(subject)
        self._clock = clock
        self._lock = threading.Lock()
        self._by_origin: dict[str, tuple[str, float]] = {}
        self.signatures = 0
        """How many tokens were signed: once per origin per ``TOKEN_LIFETIME_SECONDS - RENEW_AHEAD_SECONDS``."""

    def authorization(self, origin: str) -> str:
        """``vapid t=<JWT>,k=<public key>`` for ``origin`` (RFC 8292 §3)."""
        now = self._clock()
        cached = self._by_origin.get(origin)
        if cached is not None and cached[1] - now > RENEW_AHEAD_SECONDS:
            return cached[0]
        with self._lock:
            cached = self._by_origin.get(origin)
            if cached is not None and cached[1] - now > RENEW_AHEAD_SECONDS:
                return cached[0]
            expires = int(now) + TOKEN_LIFETIME_SECONDS
            header = self._key.sign({"aud": origin, "exp": expires, "sub": self._subject})["Authorization"]
            self.signatures += 1
            self._by_origin[origin] = (header, expires)
            return header
