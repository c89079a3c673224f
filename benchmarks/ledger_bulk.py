"""How fast the ledger writes many rows: PostgreSQL's COPY paths against its multi-row INSERT / executemany paths,
and the send path's writes and reads on the embedded SQLite ledger.

Each path gets a fresh database and the same rows. Run from the repository root:

    .venv/bin/python benchmarks/ledger_bulk.py --rows 100000 [--url postgresql+psycopg://postgres@127.0.0.1:5432/test]

``--backends sqlite`` skips PostgreSQL. To time another version of the ledger with the same script, put its
package first on the path: ``git archive HEAD | tar -x -C /tmp/xp-head`` then ``PYTHONPATH=/tmp/xp-head …``; the
cost of the evidence log is this script run on the version before it (``git archive 2c30436``) and on this one.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pandas as pd
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from exstream_push.ledger import Ledger, store
from exstream_push.ledger.store import notification_rows


def document_rows(numbers: range, use_case: str, first_seen_at: datetime) -> list[dict]:
    """Ledger documents ``D<n>`` of customers ``C<n>``, one per number, as a statement job's manifest gives them."""
    return [
        {
            "use_case": use_case,
            "document_id": f"D{n:09d}",
            "job_id": "BENCH",
            "step_id": "manifest",
            "position": n,
            "customer_id": f"C{n:09d}",
            "document_type": "STATEMENT",
            "locale": "en",
            "ref": f"ref{n:012d}",
            "attributes": None,
            "first_seen_at": first_seen_at,
        }
        for n in numbers
    ]


def _rows(count: int) -> dict[str, list[dict]]:
    now = datetime.now(UTC)
    documents = document_rows(range(count), "bench", now)
    devices = [
        {
            "device_id": f"dev-{n:09d}",
            "customer_id": f"C{n:09d}",
            "platform": "android",
            "token": f"tok-{n:09d}",
            "active": True,
            "push_opt_in": True,
            "locale": "en",
            "timezone": "UTC",
            "categories": "",
            "deactivated_reason": None,
            "updated_at": now,
        }
        for n in range(count)
    ]
    frame = pd.DataFrame(
        {
            "document_id": [d["document_id"] for d in documents],
            "job_id": "BENCH",
            "customer_id": [d["customer_id"] for d in documents],
            "device_id": [d["device_id"] for d in devices],
        }
    )
    claims = notification_rows(frame, "bench", "pending")
    outcomes = [{"key": c["key"], "status": "sent", "provider_message_id": f"m{n}"} for n, c in enumerate(claims)]
    finals = notification_rows(frame, "bench-final", "skipped", reason="opted_out")
    return {"documents": documents, "devices": devices, "claims": claims, "outcomes": outcomes, "finals": finals}


def _outcome_recorder(ledger: Ledger, claims: list[dict]) -> Callable[[list], object]:
    """``record_outcomes`` as the sender calls it: with what it holds about each key, where the ledger version
    being timed takes that (``notification_subjects``), so their evidence needs no read-back."""
    subjects_of = getattr(store, "notification_subjects", None)
    if subjects_of is None:
        return ledger.record_outcomes
    subjects = subjects_of(claims, ["fcm"] * len(claims))
    return lambda outcomes: ledger.record_outcomes(outcomes, subjects)


def _in_groups(call: Callable[[list], object], rows: list, size: int) -> None:
    for start in range(0, len(rows), size):
        call(rows[start : start + size])


def _timed(steps: dict[str, Callable[[], object]], clock: Callable[[], float]) -> dict[str, float]:
    """Seconds per step, in order, on ``clock`` (CPU or wall time)."""
    seconds = {}
    for step, run in steps.items():
        started = clock()
        run()
        seconds[step] = clock() - started
    return seconds


def _measure_sqlite(rows: dict[str, list[dict]], group: int, outcome_group: int, repeat: int) -> dict[str, float]:
    """The send path on a SQLite file, as a run makes its calls: per batch, and outcomes per ``outcome_group``.

    CPU seconds, not wall time: SQLite runs in this process, and other load on the machine then matters less. The
    best of ``repeat`` fresh files per step, as any noise only ever adds.
    """
    best: dict[str, float] = {}
    for _ in range(repeat):
        for step, seconds in _measure_sqlite_once(rows, group, outcome_group).items():
            best[step] = min(seconds, best.get(step, seconds))
    return best


def _measure_sqlite_once(rows: dict[str, list[dict]], group: int, outcome_group: int) -> dict[str, float]:
    customers = [d["customer_id"] for d in rows["devices"]]
    with tempfile.TemporaryDirectory() as folder:
        ledger = Ledger(f"sqlite:///{folder}/ledger.db")
        ledger.upsert_devices(rows["devices"])
        steps: dict[str, Callable[[], object]] = {
            "record_documents": lambda: _in_groups(ledger.record_documents, rows["documents"], group),
            "devices_for": lambda: _in_groups(ledger.devices_for, customers, group),
            "record_final": lambda: _in_groups(ledger.record_final, rows["finals"], group),
            "claim": lambda: _in_groups(ledger.claim, rows["claims"], group),
            "record_outcomes": lambda: _in_groups(
                _outcome_recorder(ledger, rows["claims"]), rows["outcomes"], outcome_group
            ),
        }
        seconds = _timed(steps, time.process_time)
        ledger.dispose()
    return seconds


def _measure(admin_url: str, use_copy: bool, rows: dict[str, list[dict]], group: int) -> dict[str, float]:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"xp_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        ledger = Ledger(make_url(admin_url).set(database=name).render_as_string(hide_password=False))
        ledger.use_copy = use_copy
        steps: dict[str, Callable[[], object]] = {
            "record_documents": lambda: ledger.record_documents(rows["documents"]),
            "upsert_devices": lambda: ledger.upsert_devices(rows["devices"]),
            "claim": lambda: _in_groups(ledger.claim, rows["claims"], group),
            "record_outcomes": lambda: _in_groups(_outcome_recorder(ledger, rows["claims"]), rows["outcomes"], group),
        }
        seconds = _timed(steps, time.perf_counter)
        ledger.dispose()
        return seconds
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument(
        "--group", type=int, default=10_000, help="rows per call (a batch); on SQLite, outcomes take --outcome-group"
    )
    parser.add_argument(
        "--outcome-group", type=int, default=64, help="outcomes per record_outcomes call on SQLite (fcm_concurrency)"
    )
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--repeat", type=int, default=3, help="SQLite: fresh runs per step, the best one reported")
    args = parser.parse_args()
    backends = args.backends.split(",")
    rows = _rows(args.rows)
    pythonpath = os.environ.get("PYTHONPATH")
    print("$", *([f"PYTHONPATH={pythonpath}"] if pythonpath else []), shlex.join([sys.executable, *sys.argv]))
    print(f"ledger code: {store.__file__}")
    if "sqlite" in backends:
        sqlite_seconds = _measure_sqlite(rows, args.group, args.outcome_group, args.repeat)
        print(
            f"{args.rows:,} rows, SQLite file; devices, finals and claims {args.group:,} per call, "
            f"outcomes {args.outcome_group:,} per call; CPU seconds of this process, best of {args.repeat}"
        )
        print(f"{'step':<18}{'CPU s':>10}{'rows/s':>14}")
        for step, seconds in sqlite_seconds.items():
            print(f"{step:<18}{seconds:>10.2f}{args.rows / seconds:>14,.0f}")
    if "postgresql" not in backends:
        return
    multi_row = _measure(args.url, False, rows, args.group)
    copied = _measure(args.url, True, rows, args.group)
    print(f"{args.rows:,} rows, claims and outcomes {args.group:,} per call, PostgreSQL")
    print(f"{'step':<18}{'multi-row s':>12}{'COPY s':>10}{'rows/s COPY':>14}{'speed-up':>10}")
    for step in multi_row:
        print(
            f"{step:<18}{multi_row[step]:>12.2f}{copied[step]:>10.2f}"
            f"{args.rows / copied[step]:>14,.0f}{multi_row[step] / copied[step]:>9.1f}x"
        )


if __name__ == "__main__":
    main()
