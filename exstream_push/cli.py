"""The ``exstream-push`` command line."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from exstream_push.settings import Settings, get_settings


def configure_prefect(settings: Settings) -> None:
    """Embedded defaults for Prefect unless the user configured a server: state under our home, no telemetry."""
    os.environ.setdefault("PREFECT_HOME", str((settings.home / "prefect").resolve()))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")


def _as_of(value: str) -> datetime:
    """``--as-of``: an ISO date-time with its zone, so a run is reproducible wherever it is started."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date-time: {value!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"needs a time zone, e.g. {value}+00:00")
    return moment


def cmd_devices_import(args: argparse.Namespace) -> int:
    from exstream_push.devices import import_devices
    from exstream_push.runtime import ledger_for

    report = import_devices(ledger_for(get_settings()), Path(args.path))
    for line, reason in report.errors:
        print(f"{args.path}:{line}: skipped: {reason}", file=sys.stderr)
    print(f"imported {report.imported} device(s), skipped {len(report.errors)} bad row(s)")
    return 1 if (args.strict and report.errors) else 0


def cmd_links_verify(args: argparse.Namespace) -> int:
    from exstream_push.content.links import verify_link

    check = verify_link(get_settings().link_key, args.url, datetime.now(UTC))
    print(check.reason)
    return 0 if check.valid else 1


def cmd_run(args: argparse.Namespace) -> int:
    settings = get_settings()
    configure_prefect(settings)
    from exstream_push.tasks.extract import job_id_for_file
    from flows.statement_ready import statement_ready

    if args.manifest:
        manifest = Path(args.manifest)
        if not manifest.is_file():
            print(f"no such manifest: {manifest}", file=sys.stderr)
            return 2
        job_id = args.job_id or job_id_for_file(manifest)
        result = statement_ready(manifest=str(manifest.resolve()), job_id=job_id, as_of=args.as_of)
    else:
        result = statement_ready(job_id=args.job, as_of=args.as_of)
    print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from exstream_push.runtime import ledger_for

    ledger = ledger_for(get_settings())
    if args.json:
        print(json.dumps(ledger.status_counts(), indent=2, sort_keys=True))
        return 0
    counts = ledger.reason_counts()
    if not counts:
        print("the ledger is empty")
    for use_case, statuses in sorted(counts.items()):
        print(use_case)
        for status, reasons in sorted(statuses.items()):
            print(f"  {status:<12} {sum(reasons.values()):>9}")
            for reason, count in sorted(reasons.items()):
                if reason:
                    print(f"    {reason:<40} {count:>9}")
    return 0


def cmd_emulate(args: argparse.Namespace) -> int:
    from emulators.exstream import create_exstream_app
    from emulators.fcm import create_fcm_app, parse_fault_spec
    from emulators.server import ServerThread

    faults = parse_fault_spec(args.faults) if args.faults else None
    data_dir = Path(args.exstream_data) if args.exstream_data else get_settings().data_dir / "exstream"
    fcm = ServerThread(create_fcm_app(faults=faults, latency=args.latency), port=args.fcm_port).start()
    exstream = ServerThread(create_exstream_app(data_dir), port=args.exstream_port).start()
    print(f"FCM emulator       {fcm.url}   (accepted messages: {fcm.url}/_emulator/messages)")
    print(f"Exstream emulator  {exstream.url}/orchestration   (received posts: {exstream.url}/_emulator/inbox)")
    print("point exstream-push at them with:")
    print(f"  export EXSTREAM_PUSH_FCM_URL={fcm.url}")
    print(f"  export EXSTREAM_PUSH_EXSTREAM_URL={exstream.url}/orchestration")
    print("Ctrl-C stops them.", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    fcm.stop()
    exstream.stop()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from exstream_push.demo import run_demo

    return run_demo()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exstream-push",
        description="Push notifications for OpenText Exstream documents, orchestrated by Prefect.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="run the statement-ready flow end to end against the emulators")
    demo.set_defaults(handler=cmd_demo)

    emulate = commands.add_parser("emulate", help="run the FCM and Exstream emulators until Ctrl-C")
    emulate.add_argument("--fcm-port", type=int, default=8090)
    emulate.add_argument("--exstream-port", type=int, default=8091)
    emulate.add_argument("--exstream-data", help="folder holding jobs/{jobId}/ (default: data/exstream)")
    emulate.add_argument("--faults", help="random FCM faults by rate, e.g. 429=0.05,503=0.05,500=0.01")
    emulate.add_argument("--latency", type=float, default=0.0, help="seconds added to every FCM send")
    emulate.set_defaults(handler=cmd_emulate)

    devices = commands.add_parser("devices", help="the device registry").add_subparsers(
        dest="devices_command", required=True, metavar="ACTION"
    )
    devices_import = devices.add_parser("import", help="upsert devices from CSV by device_id")
    devices_import.add_argument("path")
    devices_import.add_argument("--strict", action="store_true", help="exit 1 when any row was skipped")
    devices_import.set_defaults(handler=cmd_devices_import)

    links = commands.add_parser("links", help="signed portal links").add_subparsers(
        dest="links_command", required=True, metavar="ACTION"
    )
    links_verify = links.add_parser("verify", help="exit 0 for a valid link, 1 for a tampered or expired one")
    links_verify.add_argument("url")
    links_verify.set_defaults(handler=cmd_links_verify)

    run = commands.add_parser("run", help="run a use-case flow now").add_subparsers(
        dest="use_case", required=True, metavar="USE_CASE"
    )
    statement = run.add_parser("statement-ready", help="push 'your document is ready' for an Exstream run")
    source = statement.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", help="a delivery manifest file (_STDDELIVERYFILE.xml)")
    source.add_argument("--job", help="an Exstream job id, fetched through the Orchestration API")
    statement.add_argument("--job-id", help="with --manifest: the Exstream job it came from")
    statement.add_argument("--as-of", type=_as_of, help="ISO date-time with zone the run acts at (default: now)")
    statement.set_defaults(handler=cmd_run)

    report = commands.add_parser("report", help="counts per use case and status")
    report.add_argument("--json", action="store_true", help="an object keyed by use case: status → count")
    report.set_defaults(handler=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
