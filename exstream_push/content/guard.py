"""The content guard: a push says *that* a document is ready, never what is in it.

Templates only ever see the document type, so a leak means a template or a code change went wrong; the guard
catches it before the message leaves, and the record is quarantined instead of sent.

Its input is bounded before any pattern runs: a message whose texts exceed FCM's payload limit could never be sent,
so it is rejected as too large unread. Each pattern is linear in its input: possessive quantifiers and
look-behinds start a match only where a run of candidate characters begins, so no run is scanned twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache

from exstream_push.connectors.fcm import MAX_PAYLOAD_BYTES
from exstream_push.status import QuarantineReason

# Values shorter than this are not checked as substrings: "en" or "Y" would match ordinary words.
MIN_CHECKED_LENGTH = 4

# local@domain.tld: one local character before the "@" is enough to tell, and "[\w-]" stops at the ".".
_EMAIL = re.compile(r"(?<=[\w.+-])@[\w-]++\.[\w.-]")
# Two digits at least five apart within one run of digits, spaces and dashes; tried from the run's start only.
_ACCOUNT_LIKE = re.compile(r"(?<![\d -])[ -]*+\d[\d -]{4,}\d")
# A currency sign before a digit, or a run of digits, commas and dots (read once, from its start) before one.
_AMOUNT = re.compile(r"[$€£¥]\s?\d|(?<![\d,.])[,.]*+\d[\d,.]*+\s?(?:[$€£¥]|USD|EUR|GBP)\b")

# The same e-mail addresses and long numbers, matched whole so ``redact`` can blank them out of text kept for
# operations; each matches in the same texts as its detecting pattern above. Unlike those, these may rescan a run
# of candidate characters from each start: they are for texts of a line's length, never a whole file.
EMAIL_ADDRESS = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
LONG_NUMBER = re.compile(r"\d[\d -]{4,}\d")


@lru_cache(maxsize=4096)
def pattern_leak(title: str, body: str) -> str | None:
    """What the visible text gives away whoever it is for; cached, since recipients share their texts.

    Callers bound the texts first (``find_leak``), so the cache never holds more than payload-sized keys."""
    visible = f"{title}\n{body}"
    for pattern, what in ((_EMAIL, "an e-mail address"), (_ACCOUNT_LIKE, "a number"), (_AMOUNT, "an amount")):
        if pattern.search(visible):
            return f"title or body contains {what}"
    return None


def oversized(texts: Iterable[str]) -> bool:
    """Whether the texts, UTF-8 encoded, exceed what one message to a device may carry (FCM refuses any larger
    message); ``encode`` holds every message to its target's limit, the smaller one for topics included."""
    total = 0
    for text in texts:
        total += len(text) if len(text) > MAX_PAYLOAD_BYTES else len(text.encode())
        if total > MAX_PAYLOAD_BYTES:
            return True
    return False


def find_leak(title: str, body: str, data: Mapping[str, str], manifest_values: Iterable[object]) -> str | None:
    """The first reason this message may not be sent, or None when it is clean."""
    haystacks = (title, body, *data.values())
    if oversized(haystacks):
        return f"{QuarantineReason.PAYLOAD_TOO_LARGE}: title, body and data exceed FCM's {MAX_PAYLOAD_BYTES} bytes"
    leak = pattern_leak(title, body)
    if leak is not None:
        return leak
    for value in manifest_values:
        # A value longer than every text together cannot be in one of them.
        checked = isinstance(value, str) and MIN_CHECKED_LENGTH <= len(value) <= MAX_PAYLOAD_BYTES
        if checked and any(value in hay for hay in haystacks):
            return "message contains a manifest value"
    return None


# The longest e-mail address there is (RFC 5321: 64 for the local part, 255 for the domain, and the "@").
_LONGEST_ADDRESS = 320


def redact(text: str, limit: int) -> str:
    """Text that may quote data (engine messages), with e-mail addresses and long numbers blanked, cut to ``limit``.

    Only what can reach the first ``limit`` characters is read, so the patterns never see a long line whole: an
    address that starts inside the kept part ends within ``_LONGEST_ADDRESS`` after it."""
    bounded = text[: limit + _LONGEST_ADDRESS]
    return LONG_NUMBER.sub("[number]", EMAIL_ADDRESS.sub("[e-mail]", bounded))[:limit]
