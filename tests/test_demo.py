"""`exstream-push demo` — the README's first command — runs end to end and prints its counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


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

    # "where to look next" names a command that runs as printed, though .venv/bin is not on PATH after make demo
    hint = done.stdout.split("where to look next:", 1)[1]
    report = next(line.strip() for line in hint.splitlines() if line.strip().endswith(" report"))
    without_venv = {**env, "PATH": "/usr/bin:/bin"}
    looked = subprocess.run(report, shell=True, env=without_venv, capture_output=True, text=True, timeout=300)
    assert looked.returncode == 0, f"{report}: {looked.stderr[-2000:]}"
    assert "statement-ready" in looked.stdout and "no_device" in looked.stdout
