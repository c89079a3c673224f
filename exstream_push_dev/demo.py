"""``exstream-push demo``: the statement-ready flow end to end on embedded defaults, in a sandbox of its own."""

from __future__ import annotations

import json
import shutil
import ssl
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
    """Starts the emulators (FCM, APNs, Web Push, Exstream) on free loopback ports, subscribes the web devices of
    data/devices.csv at the Web Push emulator, seeds data/, runs the flow on embedded Prefect, prints counts.

    The demo keeps its own ledger under ``{home}/demo`` and starts it afresh each time, so its output is the same
    on every run; the product's own ledger is never touched.
    """
    base = get_settings()
    home = (base.home / "demo").resolve()
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)

    from exstream_push_dev.emulators.apns import apns_emulator
    from exstream_push_dev.emulators.exstream import create_exstream_app
    from exstream_push_dev.emulators.google_oauth import google_emulators
    from exstream_push_dev.emulators.samples import subscribe_web_devices
    from exstream_push_dev.emulators.server import ServerThread
    from exstream_push_dev.emulators.webpush import development_vapid_key, webpush_emulator

    data_dir = base.data_dir
    emulator_files = home / "emulators"  # one development CA for both TLS emulators, the APNs key, the VAPID key
    with (
        google_emulators(home / "service-account.json", base.fcm_project) as google,
        ServerThread(create_exstream_app(data_dir / "exstream")) as exstream,
        apns_emulator(emulator_files) as apns,
        webpush_emulator(emulator_files) as webpush,
    ):
        fcm = google.fcm
        # The browsers subscribe first: only subscriptions the emulator made can be pushed to and decrypted.
        devices = home / "devices.csv"
        subscribe_web_devices(data_dir / "devices.csv", devices, webpush.url, webpush.tls.ca_file)
        # The demo's own settings, given to the product directly: its sandbox, its emulators, its SQLite ledger,
        # a service-account key of its own, which google-auth signs in with at the token emulator, the APNs
        # signing key and the VAPID key the emulators verify, and the CA their certificates come from.
        settings = Settings(
            home=home,
            database_url=None,
            fcm_url=fcm.url,
            fcm_service_account_file=google.service_account_file,
            exstream_url=f"{exstream.url}/orchestration",
            apns_url=apns.url,
            apns_team_id=apns.key.team_id,
            apns_key_id=apns.key.key_id,
            apns_key_file=apns.key.key_file,
            apns_bundle_id=apns.bundle_id,
            webpush_vapid_private_key_file=development_vapid_key(emulator_files),
            ca_file=webpush.tls.ca_file,
            # Prefect's temporary server: a shared one would outlive the sandbox this command deletes next time.
            prefect_server="ephemeral",
        )
        configure_settings(settings)
        from exstream_push.cli import configure_prefect

        configure_prefect(settings)
        print(
            f"FCM emulator on {fcm.url} (signed in through the OAuth2 emulator on {google.oauth.url}), "
            f"APNs emulator on {apns.url}, Web Push emulator on {webpush.url}, "
            f"Exstream emulator on {exstream.url}; ledger in {home}"
        )

        from exstream_push.devices import import_devices
        from exstream_push.runtime import ledger_for

        ledger = ledger_for(settings)
        imported = import_devices(ledger, devices)
        print(
            f"imported {imported.imported} devices from {data_dir / 'devices.csv'} "
            "(FCM, APNs and Web Push; the web ones subscribed at the emulator first)"
        )

        from exstream_push.flows.statement_ready import statement_ready

        print(f"running statement-ready for Exstream job {DEMO_JOB_ID} through the Orchestration API ...")
        result = statement_ready(job_id=DEMO_JOB_ID, as_of=datetime.now(UTC))

        trust = ssl.create_default_context(cafile=str(webpush.tls.ca_file))
        received = {
            "FCM": httpx.get(f"{fcm.url}/_emulator/messages").json(),
            "APNs": httpx.get(f"{apns.url}/_emulator/messages", verify=trust).json(),
            "Web Push": httpx.get(f"{webpush.url}/_emulator/messages", verify=trust).json(),
        }
        inbox = httpx.get(f"{exstream.url}/_emulator/inbox").json()
        status_posts = [p for p in inbox if p["path"].endswith(f"/{settings.channels.push_status}")]

    counts = ledger.status_counts()
    print()
    print("outcomes by status:", json.dumps(counts.get("statement-ready", {}), sort_keys=True))
    accepted = ", ".join(f"{provider} {len(messages)}" for provider, messages in received.items())
    print(
        f"customers in the manifest: {result.get('customers', 0)}, messages accepted by the emulators: {accepted}, "
        f"devices deactivated (FCM UNREGISTERED, APNs Unregistered, Web Push 410): "
        f"{result.get('devices_deactivated', 0)}"
    )
    if status_posts:
        lines = status_posts[-1]["body"].splitlines()
        print(f"push-status CSV posted back to Exstream: {len(lines) - 1} rows; first lines:")
        for line in lines[:3]:
            print(f"  {line}")
    samples = {provider: as_received(provider, messages[0]) for provider, messages in received.items() if messages}
    if samples:
        print("one message as each emulator received it (no customer data, an opaque ref and a signed link):")
        width = max(map(len, samples)) + 1
        for provider, sample in samples.items():
            print(f"  {provider + ':':<{width}} {json.dumps(sample)}")
    print()
    command = this_command()
    print("where to look next:")
    print(f"  EXSTREAM_PUSH_HOME={home} {command} report")
    print(f"  EXSTREAM_PUSH_HOME={home} {command} links verify '<a deep_link from above>'")
    print(f"  {command} emulate   # the emulators in the foreground, for your own runs")
    return 0


def as_received(provider: str, message: dict[str, Any]) -> dict[str, Any]:
    """What the device is given, without its address (token, endpoint): FCM's notification and data; the APNs
    headers and payload; the Web Push headers and the payload the emulator decrypted as the browser would."""
    if provider == "FCM":
        return {key: message[key] for key in ("notification", "data") if key in message}
    return {"headers": message["headers"], "payload": message["payload"]}
