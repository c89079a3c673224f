"""``exstream-push demo``: the statement-ready flow end to end on embedded defaults, in a sandbox of its own."""

from __future__ import annotations

import json
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx

from exstream_push.settings import Settings, configure_settings, get_settings
from exstream_push_dev.emulators.exstream import job_uuid

DEMO_JOB_ID = job_uuid("STMT-2026-11-DEMO")


def this_command() -> str:
    """How to run exstream-push again from here. ``make demo`` runs ``.venv/bin/exstream-push``, which is not on
    PATH, so the bare name would not be found: the script beside this interpreter, relative to here when below."""
    script = Path(sys.executable).parent / "exstream-push"
    if not script.is_file():
        return f"{sys.executable} -m exstream_push.cli"
    if shutil.which("exstream-push") == str(script):
        return "exstream-push"
    return str(script.relative_to(Path.cwd())) if script.is_relative_to(Path.cwd()) else str(script)


def run_demo() -> int:
    """Starts both emulators on free loopback ports, seeds data/, runs the flow on embedded Prefect, prints counts.

    The demo keeps its own ledger under ``{home}/demo`` and starts it afresh each time, so its output is the same
    on every run; the product's own ledger is never touched.
    """
    base = get_settings()
    home = (base.home / "demo").resolve()
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)

    from exstream_push_dev.emulators.exstream import create_exstream_app
    from exstream_push_dev.emulators.google_oauth import google_emulators
    from exstream_push_dev.emulators.server import ServerThread

    data_dir = base.data_dir
    with (
        google_emulators(home / "service-account.json", base.fcm_project) as google,
        ServerThread(create_exstream_app(data_dir / "exstream")) as exstream,
    ):
        fcm = google.fcm
        # The demo's own settings, given to the product directly: its sandbox, its emulators, its SQLite ledger,
        # and a service-account key of its own, which google-auth signs in with at the token emulator.
        settings = Settings(
            home=home,
            database_url=None,
            fcm_url=fcm.url,
            fcm_service_account_file=google.service_account_file,
            exstream_url=f"{exstream.url}/orchestration",
            # Prefect's temporary server: a shared one would outlive the sandbox this command deletes next time.
            prefect_server="ephemeral",
        )
        configure_settings(settings)
        from exstream_push.cli import configure_prefect

        configure_prefect(settings)
        print(
            f"FCM emulator on {fcm.url} (signed in through the OAuth2 emulator on {google.oauth.url}), "
            f"Exstream emulator on {exstream.url}; ledger in {home}"
        )

        from exstream_push.devices import import_devices
        from exstream_push.runtime import ledger_for

        ledger = ledger_for(settings)
        imported = import_devices(ledger, data_dir / "devices.csv")
        print(f"imported {imported.imported} devices from {data_dir / 'devices.csv'}")

        from exstream_push.flows.statement_ready import statement_ready

        print(f"running statement-ready for Exstream job {DEMO_JOB_ID} through the Orchestration API ...")
        result = statement_ready(job_id=DEMO_JOB_ID, as_of=datetime.now(UTC))

        messages = httpx.get(f"{fcm.url}/_emulator/messages").json()
        inbox = httpx.get(f"{exstream.url}/_emulator/inbox").json()
        status_posts = [p for p in inbox if p["path"].endswith(f"/{settings.channels.push_status}")]

    counts = ledger.status_counts()
    print()
    print("outcomes by status:", json.dumps(counts.get("statement-ready", {}), sort_keys=True))
    print(
        f"customers in the manifest: {result.get('customers', 0)}, "
        f"messages accepted by the FCM emulator: {len(messages)}, "
        f"devices deactivated (UNREGISTERED): {result.get('devices_deactivated', 0)}"
    )
    if status_posts:
        lines = status_posts[-1]["body"].splitlines()
        print(f"push-status CSV posted back to Exstream: {len(lines) - 1} rows; first lines:")
        for line in lines[:3]:
            print(f"  {line}")
    if messages:
        sample = messages[0]
        print("one message as FCM received it (no customer data, an opaque ref and a signed link):")
        print("  " + json.dumps({k: sample[k] for k in ("notification", "data") if k in sample}))
    print()
    command = this_command()
    print("where to look next:")
    print(f"  EXSTREAM_PUSH_HOME={home} {command} report")
    print(f"  EXSTREAM_PUSH_HOME={home} {command} links verify '<a deep_link from above>'")
    print(f"  {command} emulate   # the emulators in the foreground, for your own runs")
    return 0
