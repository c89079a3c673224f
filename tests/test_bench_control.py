"""The bench's control run: worker processes started with ``without_evidence`` first on their path write the same
notifications and documents, and no evidence, so the first run's time over theirs is the log's cost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from exstream_push.ledger import Ledger
from exstream_push.status import Status
from exstream_push_dev.bench import WITHOUT_EVIDENCE

WRITES = """
import sys
import pandas as pd
from exstream_push.ledger import Ledger
from exstream_push.ledger.store import notification_rows, notification_subjects

ledger = Ledger(sys.argv[1])
now = pd.Timestamp.now(tz="UTC")
ledger.record_documents([{"use_case": "statement-ready", "document_id": "D1", "job_id": "J1", "step_id": "s",
    "position": 1, "customer_id": "C1", "document_type": "STATEMENT", "ref": "r1", "first_seen_at": now}])
frame = pd.DataFrame({"document_id": ["D1", "D1"], "job_id": "J1", "customer_id": "C1", "device_id": ["d1", "d2"]})
claims = notification_rows(frame, "statement-ready", "pending")
ledger.claim(claims)
outcomes = [{"key": claim["key"], "status": "sent", "provider_message_id": "m"} for claim in claims]
ledger.record_outcomes(outcomes[:1], notification_subjects(claims, ["fcm", "fcm"]))
ledger.record_outcomes(outcomes[1:])
"""


def writes_in_a_process(url: str, control: bool) -> Ledger:
    path = os.pathsep.join(filter(None, [str(WITHOUT_EVIDENCE) if control else None, os.environ.get("PYTHONPATH")]))
    subprocess.run([sys.executable, "-c", WRITES, url], env={**os.environ, "PYTHONPATH": path}, check=True)
    return Ledger(url)


def test_the_control_run_writes_everything_but_the_evidence(tmp_path: Path) -> None:
    measured = writes_in_a_process(f"sqlite:///{tmp_path}/measured.db", control=False)
    control = writes_in_a_process(f"sqlite:///{tmp_path}/control.db", control=True)
    for ledger in (measured, control):
        assert ledger.status_counts()["statement-ready"] == {Status.SENT.value: 2}
    assert measured.evidence_records() == 3  # generated, and notified for each device
    assert control.evidence_records() == 0
    assert control.verify_evidence().broken is None
