"""What went back to a channel: post-backs by digest (not posted twice) and each document's reported outcome."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite

from exstream_push.ledger import store
from exstream_push.ledger.base import LedgerBase
from exstream_push.ledger.models import PostBack, ReportedOutcome


class PostBackMixin(LedgerBase):
    """Post-backs and reported outcomes per channel."""

    def record_post_back(self, channel: str, job_id: str, digest: str, rows: int, response: str) -> None:
        self._insert_ignoring_conflicts(
            PostBack,
            [
                {
                    "channel": channel,
                    "job_id": job_id,
                    "digest": digest,
                    "rows": rows,
                    "response": response,
                    "posted_at": store.utcnow(),
                }
            ],
        )

    def already_posted(self, channel: str, job_id: str, digest: str) -> bool:
        with self.engine.connect() as conn:
            found = conn.scalar(
                select(func.count())
                .select_from(PostBack)
                .where(PostBack.channel == channel, PostBack.job_id == job_id, PostBack.digest == digest)
            )
        return bool(found)

    def reported_outcomes(
        self, channel: str, use_case: str, job_id: str, document_ids: Sequence[str]
    ) -> dict[str, tuple[str, str]]:
        """What a channel was last told about these documents of a job: document id → (push status, reason)."""
        table = ReportedOutcome.__table__
        reported: dict[str, tuple[str, str]] = {}
        with self.engine.connect() as conn:
            for chunk in store._chunks(sorted(set(document_ids))):
                rows = conn.execute(
                    select(table.c.document_id, table.c.push_status, table.c.reason).where(
                        table.c.channel == channel,
                        table.c.use_case == use_case,
                        table.c.job_id == job_id,
                        table.c.document_id.in_(chunk),
                    )
                )
                reported.update((document_id, (status, reason)) for document_id, status, reason in rows)
        return reported

    def record_reported(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Upsert what a channel was told (channel, use_case, document_id, job_id, push_status, reason, reported_at)."""
        if not rows:
            return
        table = ReportedOutcome.__table__
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(table)
        statement = statement.on_conflict_do_update(
            index_elements=["channel", "use_case", "job_id", "document_id"],
            set_={name: statement.excluded[name] for name in ("push_status", "reason", "reported_at")},
        )
        with self.engine.begin() as conn:
            for chunk in store._chunks(rows):
                conn.execute(statement, list(chunk))
