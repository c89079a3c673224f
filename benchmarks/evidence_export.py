"""Whether ``audit export --use-case all`` stays flat in memory as the evidence log grows: the same export of ledgers
of increasing size, each in a fresh process, its peak RSS and time.

Each ledger is filled through ``record_documents`` (the registration path, which appends a ``generated`` record per
document), 10,000 per call. Run from the repository root:

    .venv/bin/python benchmarks/evidence_export.py --documents 100000,1000000 [--format csv|parquet|jsonl]
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from ledger_bulk import document_rows  # the sibling script (this one runs as a script, from benchmarks/)

from exstream_push.audit import export_audit
from exstream_push.ledger import Ledger


def fill(url: str, documents: int) -> None:
    ledger = Ledger(url)
    now = datetime.now(UTC)
    for start in range(0, documents, 10_000):
        ledger.record_documents(document_rows(range(start, min(start + 10_000, documents)), "statement-ready", now))
    ledger.dispose()


def export(url: str, fmt: str, out: Path) -> None:
    """In this process alone, so its peak RSS is the export's."""
    started = time.perf_counter()
    rows = export_audit(Ledger(url), "all", fmt, out)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{rows:>12,}{time.perf_counter() - started:>10.1f}{peak_mb:>12.0f}{out.stat().st_size / 1e6:>12.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", default="100000,1000000", help="comma-separated ledger sizes")
    parser.add_argument("--format", default="csv", choices=["csv", "parquet", "jsonl"])
    parser.add_argument("--export", nargs=2, metavar=("URL", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.export:
        export(args.export[0], args.format, Path(args.export[1]))
        return
    print("$", shlex.join([sys.executable, *sys.argv]))
    print(f"{'documents':>12}{'export s':>10}{'peak RSS MB':>12}{'file MB':>12}")
    for documents in (int(size) for size in args.documents.split(",")):
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{folder}/ledger.db"
            fill(url, documents)
            command = [sys.executable, __file__, "--format", args.format, "--export", url, f"{folder}/out"]
            subprocess.run(command, check=True, env={**os.environ, "EXSTREAM_PUSH_HOME": folder})


if __name__ == "__main__":
    main()
