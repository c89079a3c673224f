"""Development commands (``demo``, ``emulate``, ``up``, ``bench``), plugged into the ``exstream-push`` CLI.

They start the emulators and a local stack, so they live apart from the product: the product's CLI finds them
through the ``exstream_push.commands`` entry point and never imports this package.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path
from typing import Any

from exstream_push.settings import get_settings
from exstream_push_dev.emulators.exstream import DEFAULT_PAGE_CAP, ERROR_SHAPES


def cmd_demo(args: argparse.Namespace) -> int:
    from exstream_push_dev.demo import run_demo

    return run_demo()


def cmd_emulate(args: argparse.Namespace) -> int:
    from exstream_push_dev.emulators.apns import DEFAULT_BUNDLE_ID, start_apns_emulator
    from exstream_push_dev.emulators.exstream import create_exstream_app
    from exstream_push_dev.emulators.fcm import create_fcm_app, parse_fault_spec
    from exstream_push_dev.emulators.google_oauth import start_oauth_emulator
    from exstream_push_dev.emulators.samples import subscribe_web_devices
    from exstream_push_dev.emulators.server import ServerThread
    from exstream_push_dev.emulators.webpush import development_vapid_key, start_webpush_emulator

    # Before anything starts: a signal while the emulators start (subscribing the web devices takes a moment)
    # stops them once they are up, instead of killing the process with its servers half made.
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    settings = get_settings()
    faults = parse_fault_spec(args.faults) if args.faults else None
    data_dir = Path(args.exstream_data) if args.exstream_data else settings.data_dir / "exstream"
    key_file = (settings.home / "emulators" / "service-account.json").resolve()
    oauth = start_oauth_emulator(
        key_file, settings.fcm_project, port=args.oauth_port, token_lifetime=args.token_lifetime
    )
    fcm = ServerThread(
        create_fcm_app(faults=faults, latency=args.latency, tokens=oauth.app.state.oauth.tokens), port=args.fcm_port
    ).start()
    exstream_app = create_exstream_app(
        data_dir, token_ttl=args.otds_token_ttl, page_cap=args.exstream_page_cap, error_shape=args.exstream_errors
    )
    exstream = ServerThread(exstream_app, port=args.exstream_port).start()
    emulator_files = (settings.home / "emulators").resolve()
    webpush = start_webpush_emulator(emulator_files, port=args.webpush_port)
    vapid_key_file = development_vapid_key(emulator_files)
    # The browsers of data/devices.csv subscribe now: only subscriptions the emulator made can be pushed to.
    devices_file = emulator_files / "devices.csv"
    subscribe_web_devices(settings.data_dir / "devices.csv", devices_file, webpush.url, webpush.tls.ca_file)
    # The same folder, so one development CA signs both TLS emulators and one EXSTREAM_PUSH_CA_FILE trusts them.
    apns = start_apns_emulator(
        emulator_files, bundle_id=settings.apns_bundle_id or DEFAULT_BUNDLE_ID, port=args.apns_port
    )
    print(f"FCM emulator       {fcm.url}   (accepted messages: {fcm.url}/_emulator/messages)")
    print(f"Google OAuth2      {oauth.url}/token   (tokens live {args.token_lifetime:g} s)")
    print(f"Exstream emulator  {exstream.url}/orchestration   (received posts: {exstream.url}/_emulator/inbox)")
    print(f"Web Push emulator  {webpush.url}   (subscribe: POST {webpush.url}/_emulator/subscriptions)")
    print(f"APNs emulator      {apns.url}   (HTTP/2 over TLS; accepted notifications: {apns.url}/_emulator/messages)")
    print(f"devices            {devices_file}   (data/devices.csv, its web devices subscribed here)")
    print("point exstream-push at them with:")
    print(f"  export EXSTREAM_PUSH_FCM_URL={fcm.url}")
    print(f"  export EXSTREAM_PUSH_FCM_SERVICE_ACCOUNT_FILE={key_file}")
    print(f"  export EXSTREAM_PUSH_EXSTREAM_URL={exstream.url}/orchestration")
    print(f"  export EXSTREAM_PUSH_WEBPUSH_VAPID_PRIVATE_KEY_FILE={vapid_key_file}")
    for name, value in apns.environment().items():
        print(f"  export {name}={value}")
    print(f"and import the devices with: exstream-push devices import {devices_file}")
    print("Ctrl-C stops them.", flush=True)
    stop.wait()
    for server in (fcm, oauth, exstream, webpush, apns):
        server.stop()
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from exstream_push_dev.stack import run_stack

    return run_stack(prefect_port=args.prefect_port)


def cmd_bench(args: argparse.Namespace) -> int:
    from exstream_push_dev.bench import run_bench

    if min(args.apns_share, args.webpush_share) < 0 or args.apns_share + args.webpush_share > 1:
        raise SystemExit("--apns-share and --webpush-share must each be at least 0 and add up to at most 1")
    mix = {"fcm": 1 - args.apns_share - args.webpush_share, "apns": args.apns_share, "webpush": args.webpush_share}
    run_bench(args.customers, Path(args.out), args.emulator_workers, args.workers, args.latency, mix)
    return 0


def add_commands(commands: Any) -> None:
    """Add the development commands to the CLI's sub-command parsers (the entry point's hook)."""
    demo = commands.add_parser("demo", help="run the statement-ready flow end to end against the emulators")
    demo.set_defaults(handler=cmd_demo)

    emulate = commands.add_parser("emulate", help="run the FCM, APNs, Web Push and Exstream emulators until Ctrl-C")
    emulate.add_argument("--fcm-port", type=int, default=8090, help="port of the FCM HTTP v1 emulator")
    emulate.add_argument("--exstream-port", type=int, default=8091, help="port of the Exstream Orchestration emulator")
    emulate.add_argument("--oauth-port", type=int, default=8092, help="port of the Google OAuth2 token emulator")
    emulate.add_argument("--apns-port", type=int, default=8093, help="port of the APNs emulator (HTTP/2 over TLS)")
    emulate.add_argument("--webpush-port", type=int, default=8094, help="port of the Web Push service emulator (TLS)")
    emulate.add_argument(
        "--token-lifetime", type=float, default=3600, help="seconds an access token from the OAuth2 emulator lives"
    )
    emulate.add_argument("--exstream-data", help="folder holding jobs/{jobId}/ (default: data/exstream)")
    emulate.add_argument(
        "--exstream-page-cap", type=int, default=DEFAULT_PAGE_CAP, help="most items an Exstream list page serves"
    )
    emulate.add_argument("--otds-token-ttl", type=int, default=3600, help="seconds an OTDS access token lives")
    emulate.add_argument(
        "--exstream-errors",
        choices=ERROR_SHAPES,
        default="generic",
        help="Exstream error bodies: the spec's GenericResponse, or Spring Boot's {timestamp, status, error, ...}",
    )
    emulate.add_argument("--faults", help="random FCM faults by rate, e.g. 429=0.05,503=0.05,500=0.01")
    emulate.add_argument("--latency", type=float, default=0.0, help="seconds added to every FCM send")
    emulate.set_defaults(handler=cmd_emulate)

    up = commands.add_parser("up", help="Prefect server and worker, emulators, ingress API, deployments; Ctrl-C stops")
    up.add_argument("--prefect-port", type=int, default=4200, help="port of the Prefect server and UI")
    up.set_defaults(handler=cmd_up)

    bench = commands.add_parser("bench", help="statement-ready at scale beside the ceiling and the SDK baseline")
    bench.add_argument("--customers", type=int, default=1_000_000, help="customers in the generated manifest")
    bench.add_argument("--out", default="bench-results/bench.json", help="where the figures go as JSON")
    bench.add_argument("--emulator-workers", type=int, default=1, help="FCM emulator processes")
    bench.add_argument(
        "--latency",
        type=float,
        default=50.0,
        help="ms the FCM, APNs and Web Push emulators wait before answering, in the second run",
    )
    bench.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="processes sharing the run (default: one per core)"
    )
    bench.add_argument("--apns-share", type=float, default=0.3, help="share of the devices that are APNs' (0 to 1)")
    bench.add_argument(
        "--webpush-share", type=float, default=0.1, help="share of the devices that are Web Push's; FCM has the rest"
    )
    bench.set_defaults(handler=cmd_bench)
