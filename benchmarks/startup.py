"""How long a command on the embedded defaults takes to reach its first task run, the shared Prefect server up.

``exstream-push run statement-ready`` on a 20-customer manifest, three times, each timed from the process's start
to its first task run's start as the Prefect API recorded it (``exstream_push_dev.bench.measure_startup``, the
figure ``make bench`` writes as ``startup_seconds``). The emulators run in this process; the shared server is
started for a fresh state folder first and stopped after. Run from the repository root:

    .venv/bin/python benchmarks/startup.py [--runs 3] [--out bench-results/startup.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path

from exstream_push_dev.bench import STARTUP_RUNS, measure_startup
from exstream_push_dev.emulators.exstream import create_exstream_app
from exstream_push_dev.emulators.google_oauth import google_emulators
from exstream_push_dev.emulators.server import ServerThread


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=STARTUP_RUNS)
    parser.add_argument("--out", help="also write the figures here as JSON")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="xp-startup-") as folder,
        google_emulators(Path(folder) / "service-account.json", "exstream-push") as google,
        ServerThread(create_exstream_app(None)) as exstream,
    ):
        env = {name: value for name, value in os.environ.items() if not name.startswith("EXSTREAM_PUSH_")}
        env.update(
            {
                "EXSTREAM_PUSH_FCM_URL": google.fcm.url,
                "EXSTREAM_PUSH_FCM_SERVICE_ACCOUNT_FILE": str(google.service_account_file),
                "EXSTREAM_PUSH_EXSTREAM_URL": f"{exstream.url}/orchestration",
            }
        )
        figures = measure_startup(Path(folder) / "home", env, args.runs)
    figures["benchmark_command"] = shlex.join(sys.orig_argv)
    print(json.dumps(figures, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
