"""How far the poll for failed jobs has read, kept as a ledger watermark per Exstream domain."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from exstream_push.usecases.delivery_exceptions.config import USE_CASE


@dataclass
class JobWatermark:
    """How far the poll for failed jobs has read: the latest end date checked, and every job checked whose end
    falls within the grace window behind it, so jobs ending in the same second (or listed late) are neither
    skipped nor checked twice."""

    ended_at: datetime
    seen: dict[str, datetime]

    @classmethod
    def parse(cls, value: str | None, start: datetime) -> JobWatermark:
        if not value:
            return cls(ended_at=start, seen={})
        raw = json.loads(value)
        return cls(
            ended_at=datetime.fromisoformat(raw["ended_at"]),
            seen={job_id: datetime.fromisoformat(moment) for job_id, moment in raw["seen"].items()},
        )

    def dump(self) -> str:
        seen = {job_id: moment.isoformat() for job_id, moment in sorted(self.seen.items())}
        return json.dumps({"ended_at": self.ended_at.isoformat(), "seen": seen})

    def admits(self, job_id: str, ended_at: datetime, grace: timedelta) -> bool:
        return ended_at >= self.ended_at - grace and job_id not in self.seen

    def advance(self, job_id: str, ended_at: datetime, grace: timedelta) -> None:
        self.seen[job_id] = ended_at
        self.ended_at = max(self.ended_at, ended_at)
        floor = self.ended_at - grace
        self.seen = {seen_id: moment for seen_id, moment in self.seen.items() if moment >= floor}


def watermark_name(domain: str) -> str:
    return f"{USE_CASE}:error-jobs:{domain}"
