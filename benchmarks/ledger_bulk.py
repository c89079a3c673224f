"""How fast the ledger writes many rows on PostgreSQL: COPY paths against the multi-row INSERT / executemany paths.

Each path gets a fresh database and the same rows. Run from the repository root:

    .venv/bin/python benchmarks/ledger_bulk.py --rows 100000 [--url postgresql+psycopg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pandas as pd
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from exstream_push.ledger import Ledger
from exstream_push.ledger.store import notification_rows


def _rows(count: int) -> dict[str, list[dict]]:
    now = datetime.now(UTC)
    documents = [
        {
            "use_case": "bench",
            "document_id": f"D{n:09d}",
            "job_id": "BENCH",
            "step_id": "manifest",
            "position": n,
            "customer_id": f"C{n:09d}",
            "document_type": "STATEMENT",
            "locale": "en",
            "ref": f"ref{n:012d}",
            "attributes": None,
            "first_seen_at": now,
        }
        for n in range(count)
    ]
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
    return {"documents": documents, "devices": devices, "claims": claims, "outcomes": outcomes}


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
            "claim": lambda: [
                ledger.claim(rows["claims"][i : i + group]) for i in range(0, len(rows["claims"]), group)
            ],
            "record_outcomes": lambda: [
                ledger.record_outcomes(rows["outcomes"][i : i + group]) for i in range(0, len(rows["outcomes"]), group)
            ],
        }
        seconds = {}
        for step, run in steps.items():
            started = time.perf_counter()
            run()
            seconds[step] = time.perf_counter() - started
        ledger.dispose()
        return seconds
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--group", type=int, default=10_000, help="rows per claim / outcome call (a batch)")
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    rows = _rows(args.rows)
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
