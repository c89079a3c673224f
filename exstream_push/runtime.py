"""Per-process handles that tasks share: one ledger engine per database URL."""

from __future__ import annotations

from functools import lru_cache

from exstream_push.ledger import Ledger
from exstream_push.settings import Settings


@lru_cache(maxsize=8)
def _ledger(url: str) -> Ledger:
    return Ledger(url)


def ledger_for(settings: Settings) -> Ledger:
    return _ledger(settings.resolved_database_url)
