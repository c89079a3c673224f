"""The evidence log: every fact about a document appended to one table, chained per shard so tampering shows.

A fact goes in inside the transaction of the write that caused it (an outcome, a registration, an event, a
hand-back, an expiry), in bulk: one lock of the shard heads involved, one multi-row insert, one update of the
heads. Each record's ``hash`` is SHA-256 over its predecessor's hash and its canonical content (every column but
``id`` and the hashes, shard and sequence number included), so an edited, deleted or reordered record no longer
matches. A document always falls in the same shard (a hash of its id modulo ``SHARDS``), so its history is one
chain; writers to different shards never wait for each other, and on PostgreSQL writers to the same shard queue
on its head row (``SELECT … FOR UPDATE``, in shard order, so two of them never deadlock). SQLite serialises
writers anyway. The digest over every shard's head (``head_digest``) is what a run publishes.
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Engine, case, distinct, func, select

from exstream_push.ledger import bulk, store
from exstream_push.ledger.models import Evidence, EvidenceHead
from exstream_push.status import EvidenceFact

SHARDS = 64
"""Chains in the log. Fixed for the life of a ledger: a document's shard must never move."""
GENESIS = "0" * 64
"""The predecessor hash of each shard's first record."""

# A fact as the ledger's writes hand it over; ``append`` adds shard, seq, recorded_at and the hashes.
FACT_COLUMNS = (
    "fact",
    "use_case",
    "document_id",
    "customer_id",
    "job_id",
    "device_id",
    "provider",
    "provider_message_id",
    "stage",
    "detail",
    "occurred_at",
)
# What a record's hash covers, in this order.
CONTENT_COLUMNS = ("shard", "seq", *FACT_COLUMNS, "recorded_at")
STORED_COLUMNS = (*CONTENT_COLUMNS, "prev_hash", "hash")


def shard_of(document_id: str) -> int:
    return int.from_bytes(hashlib.sha256(document_id.encode()).digest()[:4], "big") % SHARDS


def moment(value: datetime) -> datetime:
    """A timestamp as the log stores and hashes it: aware UTC, microseconds (what both databases keep)."""
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime(warn=False)
    if value.tzinfo is UTC:
        return value  # the same object, so the facts of one write share its text (``append``)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _text(value: Any) -> Any:
    if isinstance(value, datetime):
        return store._naive_utc(value).isoformat(timespec="microseconds")
    return value


# One encoder for every record: ``json.dumps`` with options builds a new one per call.
_CANONICAL = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def record_hash(prev_hash: str, content: Sequence[Any]) -> str:
    """SHA-256 over the predecessor's hash and the record's content (CONTENT_COLUMNS, timestamps as ISO text) as
    a JSON array."""
    return hashlib.sha256(f"{prev_hash}\n{_CANONICAL.encode(content)}".encode()).hexdigest()


def marks(conn: Connection, count: int) -> str:
    """``count`` positional parameters in the driver's own style, for statements sent past SQLAlchemy."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    return ", ".join([mark] * count)


def fact(
    kind: EvidenceFact,
    document_id: str,
    occurred_at: datetime,
    *,
    use_case: str | None = None,
    customer_id: str | None = None,
    job_id: str | None = None,
    device_id: str | None = None,
    provider: str | None = None,
    provider_message_id: str | None = None,
    stage: str | None = None,
    detail: str | None = None,
) -> dict[str, Any]:
    """One fact for ``append``: the one place its shape is spelled out."""
    return {
        "fact": kind.value,
        "use_case": use_case,
        "document_id": document_id,
        "customer_id": customer_id,
        "job_id": job_id,
        "device_id": device_id,
        "provider": provider,
        "provider_message_id": provider_message_id,
        "stage": stage or None,
        "detail": detail,
        "occurred_at": moment(occurred_at),
    }


_FACT_VALUES = operator.itemgetter(*FACT_COLUMNS)
_DOCUMENT = FACT_COLUMNS.index("document_id")


@dataclass(frozen=True)
class Prepared:
    """Facts made ready to chain outside the write's transaction: all that is left under its lock is one SHA-256
    per record. Each record's ``shards``, ``values`` (FACT_COLUMNS) and ``bodies`` (its canonical content after
    shard and seq) are in append order: by shard, and in the order given within one."""

    recorded_at: datetime
    shards: list[int]
    values: list[tuple[Any, ...]]
    bodies: list[str]


def prepare(facts: Sequence[Mapping[str, Any]]) -> Prepared:
    """Shards, order and canonical text of ``facts``, to ``append`` later, inside the transaction."""
    recorded_at = moment(store.utcnow())
    recorded_text = _text(recorded_at)
    given = [_FACT_VALUES(f) for f in facts]
    shard_by_fact = [shard_of(values[_DOCUMENT]) for values in given]
    order = sorted(range(len(given)), key=shard_by_fact.__getitem__)  # stable: a shard's facts keep their order
    moments: dict[int, str] = {}  # one text per timestamp object: a write's facts mostly share theirs
    values, bodies = [], []
    for n in order:
        fact_values = given[n]
        occurred = fact_values[-1]
        occurred_text = moments.get(id(occurred)) or moments.setdefault(id(occurred), _text(occurred))
        values.append(fact_values)
        bodies.append(_CANONICAL.encode([*fact_values[:-1], occurred_text, recorded_text]))
    return Prepared(recorded_at, [shard_by_fact[n] for n in order], values, bodies)


def append(conn: Connection, facts: Sequence[Mapping[str, Any]] | Prepared) -> None:
    """Append ``facts`` in the caller's transaction, after the write that caused them: at most once per
    transaction, so its shard locks are taken in one ascending sweep.

    Sent past SQLAlchemy as plain tuples (``_insert``): an outcome group of 64 costs one read of the heads, one
    executemany of the records (COPY on PostgreSQL for many) and one of the heads."""
    prepared = facts if isinstance(facts, Prepared) else prepare(facts)
    if not prepared.shards:
        return
    tips = _lock_heads(conn, sorted(set(prepared.shards)))
    _insert(conn, _chained(prepared, tips, _stored_moment(conn)))
    _store_heads(conn, tips)


def append_all(conn: Connection, pages: Iterable[Sequence[Mapping[str, Any]]]) -> int:
    """Append every page of facts in the caller's transaction, however many: for a write too large to hold its
    facts at once (an alert's follow-up to a segment of millions). Every shard's head is locked first, in one
    sweep, so pages may fall in any shard; returns how many records went in."""
    tips = _lock_heads(conn, list(range(SHARDS)))
    before = dict(tips)
    appended = 0
    stored_moment = _stored_moment(conn)
    for page in pages:
        prepared = prepare(page)
        _insert(conn, _chained(prepared, tips, stored_moment))
        appended += len(prepared.shards)
    _store_heads(conn, {shard: tip for shard, tip in tips.items() if tip != before[shard]})
    return appended


def _lock_heads(conn: Connection, shards: Sequence[int]) -> dict[int, tuple[int, str]]:
    """The (seq, hash) heads of ``shards`` (ascending), locked on PostgreSQL until the transaction ends."""
    locking = f"SELECT shard, seq, hash FROM evidencehead WHERE shard IN ({marks(conn, len(shards))}) ORDER BY shard"
    if conn.dialect.name == "postgresql":
        locking += " FOR UPDATE"
    tips = {shard: (seq, digest) for shard, seq, digest in conn.exec_driver_sql(locking, tuple(shards))}
    if len(tips) != len(shards):
        raise RuntimeError("the evidence heads are missing: the ledger was not made by its migrations")
    return tips


def _stored_moment(conn: Connection) -> Callable[[datetime], Any]:
    """What the connection's driver is given for a timestamp of the log: what SQLAlchemy would bind for it."""
    column_type = Evidence.__table__.c.occurred_at.type
    return column_type.dialect_impl(conn.dialect).bind_processor(conn.dialect) or (lambda value: value)


def _chained(
    prepared: Prepared, tips: dict[int, tuple[int, str]], stored_moment: Callable[[datetime], Any]
) -> list[tuple[Any, ...]]:
    """The stored records of ``prepared`` (STORED_COLUMNS, as the driver binds them), each hashed onto its shard's
    tip; ``tips`` moves along with them."""
    recorded_at = stored_moment(prepared.recorded_at)
    moments: dict[int, Any] = {}  # one conversion per timestamp object, as ``prepare`` makes one text
    rows = []
    for shard, values, body in zip(prepared.shards, prepared.values, prepared.bodies, strict=True):
        seq, prev_hash = tips[shard]
        # The JSON array of CONTENT_COLUMNS, as ``record_hash`` writes it: shard and seq, then the body's items.
        digest = hashlib.sha256(f"{prev_hash}\n[{shard},{seq + 1},{body[1:]}".encode()).hexdigest()
        tips[shard] = (seq + 1, digest)
        occurred = values[-1]
        occurred_at = moments.get(id(occurred)) or moments.setdefault(id(occurred), stored_moment(occurred))
        rows.append((shard, seq + 1, *values[:-1], occurred_at, recorded_at, prev_hash, digest))
    return rows


def _insert(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Stored records, sent past SQLAlchemy: COPY on PostgreSQL for many, else one driver-level executemany."""
    if not rows:
        return
    table = Evidence.__table__
    if conn.dialect.name == "postgresql" and len(rows) >= bulk.COPY_THRESHOLD:
        bulk.copy_rows(conn, table, rows, STORED_COLUMNS)
        return
    quoted = ", ".join(f'"{name}"' for name in STORED_COLUMNS)
    conn.exec_driver_sql(f'INSERT INTO "{table.name}" ({quoted}) VALUES ({marks(conn, len(STORED_COLUMNS))})', rows)


def _store_heads(conn: Connection, tips: Mapping[int, tuple[int, str]]) -> None:
    if not tips:
        return
    conn.exec_driver_sql(
        f"UPDATE evidencehead SET seq = {marks(conn, 1)}, hash = {marks(conn, 1)} WHERE shard = {marks(conn, 1)}",
        [(seq, digest, shard) for shard, (seq, digest) in tips.items()],
    )


def head_digest(engine: Engine) -> str:
    """SHA-256 over every shard's newest (seq, hash): one value that changes with any append."""
    heads = EvidenceHead.__table__
    with engine.connect() as conn:
        tips = conn.execute(select(heads.c.shard, heads.c.seq, heads.c.hash).order_by(heads.c.shard)).all()
    return hashlib.sha256("".join(f"{shard}:{seq}:{digest}\n" for shard, seq, digest in tips).encode()).hexdigest()


def record_count(engine: Engine) -> int:
    """Records appended so far: the sum of the shards' sequence numbers, read from the heads, not the log."""
    heads = EvidenceHead.__table__
    with engine.connect() as conn:
        return int(conn.scalar(select(func.coalesce(func.sum(heads.c.seq), 0))))


@dataclass(frozen=True)
class Break:
    """The first record where the chain no longer holds (``id`` None: the record the shard's head names is gone)."""

    id: int | None
    shard: int
    seq: int
    why: str


@dataclass(frozen=True)
class Verdict:
    records: int
    shards: int
    broken: Break | None


def verify(engine: Engine, since: datetime | None = None) -> Verdict:
    """Walk the chains, recomputing each record's hash and its link to the shard's record before it; stop at the
    first break. Records are read in (seq, shard) order, the unique index appends keep compact, with the last
    record of each shard held: memory stays flat whatever the log's size.

    With ``since``, only records appended from then on are recomputed; the first of each shard must still follow
    the stored hash of the record before it. Each chain must end at its shard's head, so a record removed from the
    end shows too."""
    table, heads = Evidence.__table__, EvidenceHead.__table__
    last: dict[int, tuple[int, str]] = {}
    with engine.connect() as conn:
        tips = {shard: (seq, digest) for shard, seq, digest in conn.execute(select(heads))}
        if since is not None:
            before = (
                select(table.c.shard, func.max(table.c.seq).label("seq"))
                .where(table.c.recorded_at < since)
                .group_by(table.c.shard)
                .subquery()
            )
            anchored = select(table.c.shard, table.c.seq, table.c.hash).join(
                before, (before.c.shard == table.c.shard) & (before.c.seq == table.c.seq)
            )
            last = {shard: (seq, digest) for shard, seq, digest in conn.execute(anchored)}
    statement = select(table.c.id, *(table.c[name] for name in STORED_COLUMNS)).order_by(table.c.seq, table.c.shard)
    if since is not None:
        statement = statement.where(table.c.recorded_at >= since)
    records, checked = 0, set()
    with engine.connect().execution_options(stream_results=True, yield_per=10_000) as conn:
        for row in conn.execute(statement):
            records += 1
            checked.add(row.shard)
            seq, digest = last.get(row.shard, (0, GENESIS))
            why = None
            if record_hash(row.prev_hash, [_text(row._mapping[name]) for name in CONTENT_COLUMNS]) != row.hash:
                why = "its content does not match its hash"
            elif row.seq != seq + 1:
                why = f"sequence gap: expected seq {seq + 1}"
            elif row.prev_hash != digest:
                why = "it does not follow its predecessor's hash"
            if why is not None:
                return Verdict(records, len(checked), Break(row.id, row.shard, row.seq, why))
            last[row.shard] = (row.seq, row.hash)
    for shard, (seq, digest) in sorted(tips.items()):
        reached = last.get(shard, (0, GENESIS))
        if reached != (seq, digest):
            why = f"the chain ends at seq {reached[0]}, not at the shard's head"
            return Verdict(records, len(checked), Break(None, shard, seq, why))
    return Verdict(records, len(checked), None)


TRAIL_COLUMNS = ("occurred_at", "fact", "use_case", "provider", "provider_message_id", "stage", "detail")


def trail(engine: Engine, document_id: str) -> list[tuple[Any, ...]]:
    """One document's facts (TRAIL_COLUMNS) in the order they happened, then the order they were appended."""
    table = Evidence.__table__
    statement = (
        select(*(table.c[name] for name in TRAIL_COLUMNS))
        .where(table.c.document_id == document_id)
        .order_by(table.c.occurred_at, table.c.seq)
    )
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(statement)]


EXPORT_COLUMNS = [
    "use_case",
    "document_id",
    "customer_id",
    "job_id",
    "generated_at",
    "first_notified_at",
    "devices_notified",
    "pushes_sent",
    "reminders_sent",
    "failures",
    "delivered_at",
    "opened_at",
    "accessed_at",
    "acknowledged_at",
    "completed_at",
    "handed_back_at",
    "expired_at",
    "evidence_records",
    "last_recorded_at",
]


def document_pages(
    engine: Engine, use_case: str | None, since: datetime | None, until: datetime | None, batch_size: int
) -> Iterator[pd.DataFrame]:
    """One row per (use case, document) of the log (EXPORT_COLUMNS), folded by the database and streamed.

    ``use_case`` None: every use case. ``since``/``until``: documents whose first record was appended in
    [since, until)."""
    table = Evidence.__table__
    kind = table.c.fact

    def first(*facts: EvidenceFact) -> Any:
        return func.min(case((kind.in_([f.value for f in facts]), table.c.occurred_at)))

    pushed = (EvidenceFact.NOTIFIED.value, EvidenceFact.REMINDED.value)
    statement = (
        select(
            table.c.use_case,
            table.c.document_id,
            func.min(table.c.customer_id),
            func.min(table.c.job_id),
            first(EvidenceFact.GENERATED),
            first(EvidenceFact.NOTIFIED, EvidenceFact.REMINDED),
            func.count(distinct(case((kind.in_(pushed), table.c.device_id)))),
            func.count(case((kind.in_(pushed), 1))),
            func.count(case((kind == EvidenceFact.REMINDED.value, 1))),
            func.count(case((kind == EvidenceFact.FAILED.value, 1))),
            first(EvidenceFact.DELIVERED),
            first(EvidenceFact.OPENED),
            first(EvidenceFact.ACCESSED),
            first(EvidenceFact.ACKNOWLEDGED),
            first(EvidenceFact.COMPLETED),
            first(EvidenceFact.HANDED_BACK),
            first(EvidenceFact.EXPIRED),
            func.count(),
            func.max(table.c.recorded_at),
        )
        .group_by(table.c.use_case, table.c.document_id)
        .order_by(table.c.use_case, table.c.document_id)
    )
    if use_case is not None:
        statement = statement.where(table.c.use_case == use_case)
    if since is not None:
        statement = statement.having(func.min(table.c.recorded_at) >= since)
    if until is not None:
        statement = statement.having(func.min(table.c.recorded_at) < until)
    with engine.connect().execution_options(stream_results=True, yield_per=batch_size) as conn:
        for partition in conn.execute(statement).partitions(batch_size):
            yield pd.DataFrame(partition, columns=EXPORT_COLUMNS)
