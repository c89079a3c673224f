"""The ``exstream-push`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from exstream_push.errors import ExstreamPushError
from exstream_push.settings import Settings, get_settings
from exstream_push.status import EngagementType, Platform, PushProvider
from exstream_push.task_runners import TASK_RUNNERS
from exstream_push.usecases.registry import USE_CASES

# Set by ``main`` from ``--debug``: whether the terminal shows tracebacks.
_debug = False


COMMAND_PLUGINS = "exstream_push.commands"
"""Entry-point group of packages that add commands (the development tools add demo, emulate, up and bench)."""


def configure_prefect(settings: Settings) -> None:
    """Before a flow runs here: embedded defaults for Prefect unless the user configured a server (state under our
    home, no telemetry), tracebacks on the terminal only with ``--debug``, and the ledger and a configured Prefect
    API checked, so an outage is one line before any server starts."""
    _use_prefect_home(settings)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    if not _debug:
        _hide_terminal_tracebacks()
    from exstream_push.runtime import check_dependencies

    check_dependencies(settings)


def _use_prefect_home(settings: Settings) -> None:
    """Prefect's home under ours (the shared server's folder), unless the user set one, before Prefect reads it."""
    from exstream_push.prefect_server import server_dir

    prefect_home = Path(os.environ.setdefault("PREFECT_HOME", str(server_dir(settings.home))))
    prefect_home.mkdir(parents=True, exist_ok=True)  # Prefect creates only the last level: its server failed


class _WithoutTracebacks(logging.Formatter):
    """A terminal handler's own formatter, minus tracebacks: a failure is its one-line message. The record is
    restored after, so the run's logs in the Prefect API keep the traceback."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.formatter = formatter

    def format(self, record: logging.LogRecord) -> str:
        kept = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return self.formatter.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = kept


def _hide_terminal_tracebacks() -> None:
    """Prefect's console handler (its flow and task engines log every failure with its traceback) shows one line."""
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import PrefectConsoleHandler

    ensure_logging_setup()
    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not isinstance(handler.formatter, _WithoutTracebacks):
            handler.setFormatter(_WithoutTracebacks(handler.formatter or logging.Formatter()))


def _moment(value: str) -> datetime:
    """``--as-of``, ``--since``: an ISO date-time with its zone, so a command means the same wherever it runs."""
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

    settings = get_settings()
    check = verify_link(
        settings.link_key, args.url, datetime.now(UTC), portal_url=settings.portal_url, lifetime=settings.link_ttl
    )
    print(check.reason)
    return 0 if check.valid else 1


def cmd_run(args: argparse.Namespace) -> int:
    settings = get_settings()
    from exstream_push.tasks.extract import job_id_for_file

    runnable = USE_CASES[args.use_case]
    parameters: dict[str, Any] = {"as_of": args.as_of}
    if getattr(args, "manifest", None):
        manifest = Path(args.manifest)
        if not manifest.is_file():
            print(f"no such manifest: {manifest}", file=sys.stderr)
            return 2
        parameters["manifest"] = str(manifest.resolve())
        parameters["job_id"] = args.job or job_id_for_file(manifest)
    elif getattr(args, "job", None):
        parameters["job_id"] = args.job
    elif runnable.manifest_required:
        print(f"run {args.use_case}: give --manifest, --job or both", file=sys.stderr)
        return 2
    for option in runnable.options:
        parameters[option] = getattr(args, option)
    for name in sorted(runnable.inputs):
        value = getattr(args, name)
        if value is not None:
            if not Path(value).is_file():
                print(f"no such file for --{name}: {value}", file=sys.stderr)
                return 2
            parameters[name] = str(Path(value).resolve())
    configure_prefect(settings)  # after the arguments are checked: a typo must not wait for a server
    flow = runnable.load()
    if args.task_runner != "default":
        from exstream_push.task_runners import task_runner_for

        runner = task_runner_for(args.task_runner, settings.dask_address, settings.dask_workers)
        flow = flow.with_options(task_runner=runner)  # type: ignore[attr-defined]
    from exstream_push.errors import RunIncomplete

    try:
        result = flow(**parameters)
    except RunIncomplete as incomplete:  # it did what it could: the counts as usual, and an exit code that says so
        print(json.dumps(incomplete.counts, indent=2, default=str))
        print(str(incomplete), file=sys.stderr)
        return incomplete.exit_code
    print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_events_import(args: argparse.Namespace) -> int:
    from exstream_push.events import import_events
    from exstream_push.runtime import ledger_for

    report = import_events(ledger_for(get_settings()), Path(args.path))
    for line, reason in report.errors:
        print(f"{args.path}:{line}: skipped: {reason}", file=sys.stderr)
    print(f"stored {report.stored} event(s), {report.repeated} already known, skipped {len(report.errors)} bad line(s)")
    return 1 if (args.strict and report.errors) else 0


def cmd_audit_export(args: argparse.Namespace) -> int:
    from exstream_push.audit import export_audit, head_path
    from exstream_push.runtime import ledger_for

    out = Path(args.out)
    rows = export_audit(ledger_for(get_settings()), args.use_case, args.format, out, args.since, args.until)
    print(f"wrote {rows} row(s) to {out}, the evidence head to {head_path(out)}")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Counts and the broken record's place only: the log's content stays in the ledger."""
    from exstream_push.runtime import ledger_for

    verdict = ledger_for(get_settings()).verify_evidence(args.since)
    checked = f"{verdict.records} record(s) checked in {verdict.shards} shard(s)"
    if verdict.broken is None:
        print(f"evidence intact: {checked}")
        return 0
    broken = verdict.broken
    record = "a missing record" if broken.id is None else f"record id={broken.id}"
    print(f"evidence broken at {record}, shard={broken.shard}, seq={broken.seq}: {broken.why} ({checked})")
    return 1


def cmd_audit_trail(args: argparse.Namespace) -> int:
    from exstream_push.runtime import ledger_for

    facts = ledger_for(get_settings()).evidence_trail(args.document_id)
    if not facts:
        print("no evidence recorded for that document", file=sys.stderr)
        return 1
    print("\t".join(("time", "fact", "use_case", "provider", "provider_message_id", "detail")))
    for occurred_at, fact, use_case, provider, message_id, stage, detail in facts:
        details = "; ".join(part for part in (stage, detail) if part) or "-"
        when = occurred_at.isoformat().replace("+00:00", "Z")
        print("\t".join((when, fact, use_case or "-", provider or "-", message_id or "-", details)))
    return 0


def cmd_exceptions_list(args: argparse.Namespace) -> int:
    from exstream_push.runtime import ledger_for
    from exstream_push.usecases.delivery_exceptions.commands import list_exceptions

    exceptions = list_exceptions(ledger_for(get_settings()), job_id=args.job)
    if args.json:
        print(json.dumps(exceptions, indent=2, default=str))
        return 0
    if not exceptions:
        print("no delivery exceptions")
    for item in exceptions:
        print(
            f"{item['job_id']:<24} {item['channel']:<8} {item['failure_class']:<22} {item['state']:<18} "
            f"{item.get('document_id') or '-':<28} {item['next_action']}"
        )
    return 0


def cmd_exceptions_reissue(args: argparse.Namespace) -> int:
    from exstream_push.blocks.exstream import ExstreamConnection
    from exstream_push.runtime import ledger_for
    from exstream_push.usecases.delivery_exceptions.commands import request_reissue

    settings = get_settings()
    result = request_reissue(ledger_for(settings), ExstreamConnection.from_settings(settings), args.job)
    print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from exstream_push.ingress.app import serve

    serve(host=args.host, port=args.port)
    return 0


REPORT_DESCRIPTION = """\
Counts from the ledger, two kinds kept apart (they are not the same unit):

  notifications     one per document, device and reminder stage: a document sent to three devices counts 3
                    times under sent; a document no device reaches counts once (skipped, no_device)
  rejected_records  input records that became no notification, one per record: quarantined (malformed, or
                    an id another customer holds) or skipped (a duplicate, or outside the use case's scope)

Each by use case, status and reason; --job and --since narrow both kinds."""


def cmd_report(args: argparse.Namespace) -> int:
    from exstream_push.runtime import ledger_for

    counts = ledger_for(get_settings()).report_counts(job_id=args.job, since=args.since)
    if args.json:
        by_status = {
            kind: {
                use_case: {status: sum(reasons.values()) for status, reasons in statuses.items()}
                for use_case, statuses in by_use_case.items()
            }
            for kind, by_use_case in counts.items()
        }
        print(json.dumps(by_status, indent=2, sort_keys=True))
        return 0
    scope = [f"job {args.job}" if args.job else "", f"since {args.since.isoformat()}" if args.since else ""]
    if any(scope):
        print("only " + ", ".join(part for part in scope if part))
    headings = {
        "notifications": "notifications (one per document, device and reminder stage)",
        "rejected_records": "rejected input records (one per record that became no notification)",
    }
    if not any(counts.values()):
        print("nothing recorded")
    for kind, by_use_case in counts.items():
        if not by_use_case:
            continue
        print(headings[kind])
        for use_case, statuses in sorted(by_use_case.items()):
            print(f"  {use_case}")
            for status, reasons in sorted(statuses.items()):
                print(f"    {status:<12} {sum(reasons.values()):>9}")
                for reason, count in sorted(reasons.items()):
                    if reason:
                        print(f"      {reason:<38} {count:>9}")
    return 0


def cmd_server_start(args: argparse.Namespace) -> int:
    from exstream_push.prefect_server import ensure_server

    record, started = ensure_server(get_settings().home)
    print(f"{'started' if started else 'already running:'} Prefect server {record.url} (pid {record.pid})")
    return 0


def cmd_server_status(args: argparse.Namespace) -> int:
    """Which Prefect server a command would run on; exit 1 when it would have to start one."""
    from exstream_push.prefect_events import configured_api_url
    from exstream_push.prefect_server import find_server, read_record, stack_state_file

    settings = get_settings()
    _use_prefect_home(settings)  # the profiles a command reads
    if (api_url := configured_api_url()) is not None:
        print(f"configured by PREFECT_API_URL: {api_url}")
        return 0
    record = find_server(settings.home)
    if record is None:
        print(f"no local Prefect server is running (EXSTREAM_PUSH_PREFECT_SERVER={settings.prefect_server})")
        return 1
    owner = "exstream-push up" if record == read_record(stack_state_file(settings.home)) else "shared"
    print(f"{owner}: Prefect server {record.url} (pid {record.pid}, started {record.started_at})")
    return 0


def cmd_server_stop(args: argparse.Namespace) -> int:
    from exstream_push.prefect_server import stop_server

    record = stop_server(get_settings().home)
    print(f"stopped Prefect server {record.url} (pid {record.pid})" if record else "no shared Prefect server recorded")
    return 0


EVENT_EXAMPLE = (
    '{"event_id": "app-7f3a", "type": "opened", "document_ref": "<from the push>", "customer_id": "C0001", '
    '"occurred_at": "2026-11-02T08:15:00+00:00"}'
)
"""One valid line of ``events import``'s format (a test feeds it to the parser)."""

EVENT_FIELDS = f"""\
One JSON object per line (JSON Lines); blank lines are ignored, a bad line is reported by its number and skipped.
The ingress API's POST /v1/engagement-events takes the same objects.

  event_id      required; an event_id already stored is counted as a repeat and changes nothing
  type          required: {", ".join(member.value for member in EngagementType if member is not EngagementType.SENT)}
  document_ref  the opaque reference the push carried (its data.document_ref), or instead
  document_id   the Exstream document id; one of the two is required, and the document must have been notified
  customer_id   required: the document's customer (an event naming another customer is skipped)
  device_id     optional: the device it happened on
  occurred_at   required: an ISO date-time with its zone

example line:
  {EVENT_EXAMPLE}"""


DEVICE_FIELDS = f"""\
A CSV file with a header line; rows are upserted by device_id, a bad row is reported by its line number and
skipped (its token never quoted). The ingress API's POST /v1/devices takes the same fields (a Web Push device's
subscription as PushSubscription.toJSON() gives it).

  customer_id     required: the customer whose documents the device is told about
  device_id       required: the app back end's id for the device, unique across customers
  platform        required: {", ".join(Platform)}
  token           required: how the provider reaches the device: an FCM registration token; an APNs device
                  token in hex, as the app got it from Apple; or a Web Push subscription's endpoint (https)
  push_opt_in     required: true or false
  locale          optional: the device's language (en, fr, es-MX), used when the document names none
  timezone        optional: an IANA zone such as Europe/Paris, for quiet hours; empty: the use case's default
  categories      optional: ;-separated categories the customer allows (statements;bills); empty means all
  provider        optional column: {", ".join(PushProvider)}; absent or empty means fcm, so files written
                  before APNs and Web Push import unchanged
  webpush_p256dh  webpush rows only: the subscription's keys.p256dh (base64url), as PushSubscription.toJSON()
                  gives it
  webpush_auth    webpush rows only: its keys.auth (base64url)"""


class _DeprecatedAlias(argparse.Action):
    """An option's old spelling, still accepted: it sets the new option and says so on stderr."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(f"exstream-push: {option_string} is deprecated, use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _job_help(runnable: Any) -> str:
    if runnable.job_help:
        return runnable.job_help
    if runnable.takes_manifest:
        return (
            "an Exstream job id: alone, the job's delivery files are fetched through the Orchestration API; with "
            "--manifest, the job that file came from (default: an id made from the file's content)"
        )
    return "an Exstream job id, read through the Orchestration API"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exstream-push",
        description="Push notifications for OpenText Exstream documents, orchestrated by Prefect.",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure, not only its one line")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for plugin in entry_points(group=COMMAND_PLUGINS):
        plugin.load()(commands)

    devices = commands.add_parser("devices", help="the device registry").add_subparsers(
        dest="devices_command", required=True, metavar="ACTION"
    )
    devices_import = devices.add_parser(
        "import",
        help="upsert devices from CSV by device_id",
        description=DEVICE_FIELDS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    devices_import.add_argument("path", help="the CSV file (columns below)")
    devices_import.add_argument("--strict", action="store_true", help="exit 1 when any row was skipped")
    devices_import.set_defaults(handler=cmd_devices_import)

    links = commands.add_parser("links", help="signed portal links").add_subparsers(
        dest="links_command", required=True, metavar="ACTION"
    )
    links_verify = links.add_parser("verify", help="exit 0 for a valid link, 1 for a tampered or expired one")
    links_verify.add_argument("url", help="a deep link as a push carried it (its data.deep_link)")
    links_verify.set_defaults(handler=cmd_links_verify)

    run = commands.add_parser("run", help="run a use-case flow now").add_subparsers(
        dest="use_case", required=True, metavar="USE_CASE"
    )
    for name, runnable in USE_CASES.items():
        required = " One of --job and --manifest is required." if runnable.manifest_required else ""
        use_case = run.add_parser(
            name, help=runnable.help, description=f"{runnable.help[0].upper()}{runnable.help[1:]}.{required}"
        )
        if runnable.takes_job:
            use_case.add_argument("--job", metavar="JOB_ID", help=_job_help(runnable))
        if runnable.takes_manifest:
            use_case.add_argument(
                "--manifest", help="a delivery manifest file (_STDDELIVERYFILE.xml), read instead of a job's"
            )
            use_case.add_argument("--job-id", action=_DeprecatedAlias, new="--job", dest="job", help=argparse.SUPPRESS)
        if "events" in runnable.inputs:
            use_case.add_argument("--events", help="a JSON Lines file of events to take into account")
        if "payments" in runnable.inputs:
            use_case.add_argument("--payments", help="CSV customer_id,document_id,paid_at of payments received")
        for option, option_help in runnable.options.items():
            use_case.add_argument(f"--{option.replace('_', '-')}", dest=option, required=True, help=option_help)
        use_case.add_argument(
            "--as-of", type=_moment, metavar="ISO_TIME", help="ISO date-time with zone the run acts at (default: now)"
        )
        use_case.add_argument(
            "--task-runner",
            choices=TASK_RUNNERS,
            default="default",
            help="where batches run: Prefect's threads here, or Dask (EXSTREAM_PUSH_DASK_ADDRESS or a local cluster)",
        )
        use_case.set_defaults(handler=cmd_run)

    events = commands.add_parser("events", help="engagement events").add_subparsers(
        dest="events_command", required=True, metavar="ACTION"
    )
    events_import = events.add_parser(
        "import",
        help="store JSON Lines engagement events, once per event_id",
        description=EVENT_FIELDS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    events_import.add_argument("path", help="the JSON Lines file (fields below)")
    events_import.add_argument("--strict", action="store_true", help="exit 1 when any line was skipped")
    events_import.set_defaults(handler=cmd_events_import)

    audit = commands.add_parser("audit", help="evidence for compliance").add_subparsers(
        dest="audit_command", required=True, metavar="ACTION"
    )
    audited = [name for name, entry in USE_CASES.items() if entry.audit_export]
    audit_export = audit.add_parser(
        "export",
        help="one row per document: generated, notified, reminded, acknowledged, escalated, expired",
        description=(
            f"One row per document. A follow-up use case ({', '.join(audited)}): when it was first notified and on "
            "how many devices, reminders sent, when it was acknowledged or completed, handed back to Exstream or "
            "expired, and its state now; documents kept out of the use case too, with the reason. Any other use "
            "case, or all: every fact of the evidence log folded per document (generated, notified, devices, "
            "reminders, failures, delivered, opened, accessed, acknowledged, completed, handed back, expired). "
            "The evidence head when the export began is written beside the file as FILE.head."
        ),
    )
    audit_export.add_argument(
        "--use-case", required=True, choices=[*USE_CASES, "all"], help="whose documents to export (all: every one)"
    )
    audit_export.add_argument(
        "--format",
        required=True,
        choices=["csv", "parquet", "jsonl"],
        help="csv (a header, times in UTC ISO 8601), parquet (the same columns, typed), jsonl (an object a line)",
    )
    audit_export.add_argument(
        "--from",
        dest="since",
        type=_moment,
        metavar="ISO_TIME",
        help="only documents that entered the ledger then or later",
    )
    audit_export.add_argument(
        "--to",
        dest="until",
        type=_moment,
        metavar="ISO_TIME",
        help="only documents that entered the ledger before then",
    )
    audit_export.add_argument("--out", required=True, help="file to write (replaced whole once complete)")
    audit_export.set_defaults(handler=cmd_audit_export)
    audit_verify = audit.add_parser(
        "verify",
        help="check the evidence log's hash chains: exit 0 intact, 1 naming the first broken record",
        description=(
            "Recomputes every evidence record's SHA-256 and its link to the record before it, shard by shard, and "
            "that each chain ends at its shard's head. Prints counts only; exit 1 names the first broken record "
            "(id, shard, seq) when one was edited, deleted or reordered."
        ),
    )
    audit_verify.add_argument(
        "--since",
        type=_moment,
        metavar="ISO_TIME",
        help="only records appended at or after this ISO date-time with zone",
    )
    audit_verify.set_defaults(handler=cmd_audit_verify)
    audit_trail = audit.add_parser(
        "trail",
        help="one document's evidence in order",
        description="Every fact the evidence log holds about one document: time, fact, use case, provider, "
        "provider message id, detail (stage, failure code, Exstream step or channel). Exit 1 when there is none.",
    )
    audit_trail.add_argument("document_id", metavar="DOCUMENT_ID", help="the Exstream document id")
    audit_trail.set_defaults(handler=cmd_audit_trail)

    exceptions = commands.add_parser("exceptions", help="delivery exceptions found in Exstream runs").add_subparsers(
        dest="exceptions_command", required=True, metavar="ACTION"
    )
    exceptions_list = exceptions.add_parser("list", help="every failed document with its next action")
    exceptions_list.add_argument("--job", metavar="JOB_ID", help="only this Exstream job")
    exceptions_list.add_argument("--json", action="store_true", help="a JSON array, one object per exception")
    exceptions_list.set_defaults(handler=cmd_exceptions_list)
    exceptions_reissue = exceptions.add_parser("reissue", help="ask Exstream to reissue a job's failed documents")
    exceptions_reissue.add_argument("--job", metavar="JOB_ID", required=True, help="the Exstream job id")
    exceptions_reissue.set_defaults(handler=cmd_exceptions_reissue)

    serve = commands.add_parser("serve", help="the signed ingress API for apps, the portal, operations and Exstream")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine)")
    serve.add_argument("--port", type=int, default=8095, help="port to listen on (default: 8095)")
    serve.set_defaults(handler=cmd_serve)

    server = commands.add_parser(
        "server", help="the local Prefect server that commands without PREFECT_API_URL share"
    ).add_subparsers(dest="server_command", required=True, metavar="ACTION")
    server.add_parser("start", help="start it in the background unless it runs").set_defaults(handler=cmd_server_start)
    server.add_parser("status", help="the server a command would run on; exit 1 when none runs").set_defaults(
        handler=cmd_server_status
    )
    server.add_parser("stop", help="stop the shared server (up stops its own)").set_defaults(handler=cmd_server_stop)

    report = commands.add_parser(
        "report",
        help="notifications and rejected input records per use case, status and reason",
        description=REPORT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("--job", metavar="JOB_ID", help="only this Exstream job's")
    report.add_argument(
        "--since", type=_moment, metavar="ISO_TIME", help="only those recorded at or after this ISO date-time with zone"
    )
    report.add_argument(
        "--json", action="store_true", help='{"notifications": {use case: {status: count}}, "rejected_records": ...}'
    )
    report.set_defaults(handler=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. An error a user can act on (a dependency down, a run incomplete) is one line on stderr and
    the error's exit code; its traceback only with ``--debug``."""
    global _debug
    args = build_parser().parse_args(argv)
    _debug = args.debug
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        return 130
    except ExstreamPushError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"exstream-push: {' '.join(str(exc).split())}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
