"""Closed-loop latency with ``exstream-push up`` running: seconds from a signed ``opened`` event at the ingress to
the document's row in Exstream's ``document-status`` channel, and from a signed preference change to the
customer's row in ``channel-preferences``, each measured alone and again just after a burst of engagement events.

    .venv/bin/python benchmarks/loop_latency.py [--burst 10000]

It brings the stack up on a fresh home, waits for the demo statement run (the watcher starts it), then posts
through the ingress as an app or the portal would, and polls the Exstream emulator's inbox. Prints the figures,
the lifecycle runs the burst started, and the command; stops the stack.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from exstream_push.ingress.signing import SIGNATURE_HEADER, sign
from exstream_push_dev.emulators.exstream import job_uuid
from exstream_push_dev.emulators.server import free_port
from exstream_push_dev.screenshots import (
    DEMO_JOB,
    SERVER_STAGE,
    UP_BANNER,
    PrefectApi,
    UpProcess,
    demo_job_run,
    import_devices,
)

TIMEOUT = 300.0


class Stack:
    def __init__(self, up: UpProcess) -> None:
        exports = dict(re.findall(r"^\s+export (\w+)=(\S+)$", up.output, re.MULTILINE))
        self.secret = exports["EXSTREAM_PUSH_INGRESS_SECRET"].encode()
        self.database_url = exports["EXSTREAM_PUSH_DATABASE_URL"]
        self.ingress = up.url("ingress API")
        self.inbox = up.url("Exstream emulator").removesuffix("/orchestration") + "/_emulator/inbox"
        self.api = PrefectApi(up.url("Prefect API"))

    def post(self, path: str, payload: Any) -> dict[str, Any]:
        body = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(self.secret, int(time.time()), body)}
        answer = httpx.post(f"{self.ingress}{path}", content=body, headers=headers, timeout=120)
        answer.raise_for_status()
        return answer.json()

    def posted_rows(self, channel: str) -> list[dict[str, str]]:
        rows: list[dict[str, str]] = []
        for post in httpx.get(self.inbox, timeout=30).json():
            if post["method"] == "POST" and post["path"].endswith(f"/{channel}"):
                rows.extend(csv.DictReader(io.StringIO(post["body"])))
        return rows

    def seconds_until_row(self, channel: str, matches: Any) -> float:
        started = time.monotonic()
        while not any(matches(row) for row in self.posted_rows(channel)):
            if time.monotonic() - started > TIMEOUT:
                raise SystemExit(f"no {channel} row within {TIMEOUT:.0f} s")
            time.sleep(0.25)
        return time.monotonic() - started


def notified_documents(database_url: str, job_id: str) -> list[tuple[str, str]]:
    from sqlalchemy import select

    from exstream_push.ledger import Ledger, Notification

    ledger = Ledger(database_url)
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            select(Notification.document_id, Notification.customer_id)
            .where(Notification.job_id == job_id, Notification.status == "sent")
            .distinct()
        ).all()
    ledger.dispose()
    return sorted((document, customer) for document, customer in rows)


def measure(burst: int) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="exstream-push-loops-")) / "home"
    home.mkdir()
    up = UpProcess(home, free_port())
    try:
        up.wait_for_line(SERVER_STAGE)
        devices_in = import_devices(up)
        up.wait_for_line(UP_BANNER)
        stack = Stack(up)
        job_id = job_uuid(DEMO_JOB)
        demo_job_run(stack.api, devices_in, job_id)
        documents = notified_documents(stack.database_url, job_id)
        occurred = datetime.now(UTC).isoformat()
        figures: dict[str, Any] = {"burst_events": burst}

        def opened(number: int, document: tuple[str, str], kind: str = "opened") -> dict[str, Any]:
            return {"event_id": f"bench-{number}", "type": kind, "document_id": document[0],
                    "customer_id": document[1], "occurred_at": occurred}  # fmt: skip

        def one_opened(number: int, document: tuple[str, str]) -> float:
            stack.post("/v1/engagement-events", opened(number, document))
            return stack.seconds_until_row(
                "document-status", lambda row: (row["document_id"], row["status"]) == (document[0], "opened")
            )

        def one_preference(customer: str) -> float:
            stack.post("/v1/preferences", {"customer_id": customer, "push_opt_in": False})
            return stack.seconds_until_row(
                "channel-preferences", lambda row: (row["customer_id"], row["push_enabled"]) == (customer, "false")
            )

        figures["opened_to_document_status_seconds"] = round(one_opened(0, documents[0]), 1)
        figures["preference_to_channel_preferences_seconds"] = round(one_preference(documents[1][1]), 1)

        lifecycle = stack.api.deployment_id("lifecycle-tracking")
        runs_before = len(stack.api.runs_of(lifecycle))
        kinds = ("delivered", "opened", "document_accessed")
        events = [opened(10 + n, documents[2 + n % (len(documents) - 4)], kinds[n % 3]) for n in range(burst)]
        started = time.monotonic()
        for start in range(0, burst, 1_000):
            stack.post("/v1/engagement-events", events[start : start + 1_000])
        figures["burst_post_seconds"] = round(time.monotonic() - started, 1)
        # Right after the burst: a lone opened and a preference change wait at most the quiet time more.
        figures["opened_after_burst_seconds"] = round(one_opened(burst + 10, documents[-1]), 1)
        figures["preference_after_burst_seconds"] = round(one_preference(documents[-2][1]), 1)
        time.sleep(30)
        figures["lifecycle_runs_for_the_burst"] = len(stack.api.runs_of(lifecycle)) - runs_before
        return figures
    finally:
        up.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=10_000, help="engagement events in the burst (default 10,000)")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    figures = measure(args.burst)
    print(json.dumps(figures, indent=2))
    print(f"command: {sys.executable} benchmarks/loop_latency.py --burst {args.burst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
