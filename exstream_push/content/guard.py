"""The content guard: a push says *that* a document is ready, never what is in it.

Templates only ever see the document type, so a leak means a template or a code change went wrong; the guard
catches it before the message leaves, and the record is quarantined instead of sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache

# Values shorter than this are not checked as substrings: "en" or "Y" would match ordinary words.
MIN_CHECKED_LENGTH = 4

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
_ACCOUNT_LIKE = re.compile(r"\d[\d -]{4,}\d")
_AMOUNT = re.compile(r"[$€£¥]\s?\d|\d[\d,.]*\s?(?:[$€£¥]|USD|EUR|GBP)\b")


@lru_cache(maxsize=4096)
def pattern_leak(title: str, body: str) -> str | None:
    """What the visible text gives away whoever it is for; cached, since recipients share their texts."""
    visible = f"{title}\n{body}"
    for pattern, what in ((_EMAIL, "an e-mail address"), (_ACCOUNT_LIKE, "a number"), (_AMOUNT, "an amount")):
        if pattern.search(visible):
            return f"title or body contains {what}"
    return None


def find_leak(title: str, body: str, data: Mapping[str, str], manifest_values: Iterable[object]) -> str | None:
    """The first reason this message may not be sent, or None when it is clean."""
    leak = pattern_leak(title, body)
    if leak is not None:
        return leak
    haystacks = (title, body, *data.values())
    for value in manifest_values:
        if isinstance(value, str) and len(value) >= MIN_CHECKED_LENGTH and any(value in hay for hay in haystacks):
            return "message contains a manifest value"
    return None
