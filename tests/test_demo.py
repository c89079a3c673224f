"""`exstream-push demo` — the README's first command — runs end to end and prints its counts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

DATA_KEYS = {"use_case", "category", "document_type", "document_ref", "deep_link"}


def test_demo_runs_end_to_end_and_prints_counts(tmp_path: Path) -> None:
    env = {**os.environ, "EXSTREAM_PUSH_HOME": str(tmp_path / "home")}
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "exstream_push.cli", "demo"], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("outcomes by status:"))
    counts = json.loads(line.split(":", 1)[1])
    assert counts["sent"] > 1000 and counts["skipped"] and counts["quarantined"] and counts["failed"]
    assert "push-status CSV posted back to Exstream" in done.stdout
    assert "CustomerName" not in done.stdout and "@example.com" not in done.stdout

    # One message per provider as its emulator received it, each carrying what FCM's does (Web Push's decrypted).
    samples = done.stdout.split("one message as each emulator received it", 1)[1].split("where to look next:")[0]
    printed = dict(line.strip().split(": ", 1) for line in samples.splitlines()[1:] if line.strip())
    assert set(printed) == {"FCM", "APNs", "Web Push"}
    fcm, apns, webpush = (json.loads(printed[provider]) for provider in ("FCM", "APNs", "Web Push"))
    apns_data = {k: v for k, v in apns["payload"].items() if k != "aps"}
    assert set(fcm["data"]) == set(apns_data) == set(webpush["payload"]["data"]) == DATA_KEYS
    for shown in (fcm["notification"], apns["payload"]["aps"]["alert"], webpush["payload"]["notification"]):
        assert set(shown) == {"title", "body"} and all(shown.values())
    assert apns["headers"]["apns-collapse-id"] and webpush["headers"]["topic"]
    accepted = re.search(r"messages accepted by the emulators: FCM (\d+), APNs (\d+), Web Push (\d+)", done.stdout)
    assert accepted and all(int(count) > 0 for count in accepted.groups())

    # "where to look next" names a command that runs as printed, though .venv/bin is not on PATH after make demo
    hint = done.stdout.split("where to look next:", 1)[1]
    report = next(line.strip() for line in hint.splitlines() if line.strip().endswith(" report"))
    without_venv = {**env, "PATH": "/usr/bin:/bin"}
    looked = subprocess.run(report, shell=True, env=without_venv, capture_output=True, text=True, timeout=300)
    assert looked.returncode == 0, f"{report}: {looked.stderr[-2000:]}"
    assert "statement-ready" in looked.stdout and "no_device" in looked.stdout
