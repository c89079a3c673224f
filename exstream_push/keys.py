"""Stable keys: the one recipe for every idempotency and de-duplication key, and a shared run's key."""

from __future__ import annotations

import hashlib

_SEPARATOR = "\x1f"  # the unit separator: no id, channel or stage contains it


def stable_key(*parts: str) -> str:
    """The same parts give the same key on every run, process and machine; 128 bits, as hex."""
    return hashlib.sha256(_SEPARATOR.join(parts).encode()).hexdigest()[:32]


def run_key(use_case: str, job_id: str) -> str:
    """The key of a shared run (``workrun.run_key``): one per use case and job."""
    return f"{use_case}/{job_id}"


def run_key_parts(key: str) -> tuple[str, str]:
    """``run_key``'s use case and job id back (use-case slugs hold no ``/``; a job id may)."""
    use_case, _, job_id = key.partition("/")
    return use_case, job_id
