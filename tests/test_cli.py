"""The command line: a job fetched through the Orchestration API, reports, the emulators in the foreground."""

from __future__ import annotations

import csv
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from exstream_push.cli import main
from exstream_push_dev.emulators.exstream import job_uuid
from exstream_push_dev.emulators.samples import write_devices, write_exstream_job
from tests.conftest import exstream_inbox, fcm_messages, printed_json

CLI_JOB = job_uuid("JOB-CLI-1")


def test_run_by_job_id_through_the_orchestration_api(
    prefect_harness: None,
    env: dict[str, str],
    fcm,
    exstream,
    exstream_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    exstream.app.state.exstream.load_job_folder(write_exstream_job(exstream_data / "jobs", CLI_JOB, 300, seed=5))
    write_devices(tmp_path / "devices.csv", 300, seed=6)
    assert main(["devices", "import", str(tmp_path / "devices.csv")]) == 0
    capsys.readouterr()

    assert main(["run", "statement-ready", "--job", CLI_JOB, "--as-of", "2026-11-29T08:00:00+00:00"]) == 0
    result = printed_json(capsys)
    assert result["job_id"] == CLI_JOB and result["customers"] == 300
    assert len(fcm_messages(fcm)) == result["sent"] > 0
    assert result["post_back"]["posted"] is True

    inbox = exstream_inbox(exstream)
    status_posts = [p for p in inbox if p["path"].endswith("/push-status")]
    assert len(status_posts) == 1
    assert status_posts[0]["headers"]["content-type"].startswith("text/csv")
    assert all("exstream-push" not in json.dumps(p["headers"].get("authorization", "")) for p in inbox)

    assert main(["report"]) == 0
    text = capsys.readouterr().out
    assert "statement-ready" in text and "no_device" in text


def test_as_of_without_zone_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "statement-ready", "--manifest", "m.xml", "--as-of", "2026-11-29T08:00:00"])
    assert exit_info.value.code == 2
    assert "time zone" in capsys.readouterr().err


def test_missing_manifest_is_a_clear_error(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "statement-ready", "--manifest", "/nonexistent/_STDDELIVERYFILE.xml"]) == 2
    assert "no such manifest" in capsys.readouterr().err


def test_emulate_serves_every_emulator_until_sigterm(tmp_path: Path) -> None:
    from google.auth.transport.requests import Request
    from google.oauth2 import service_account

    from exstream_push.connectors.fcm import FCM_SCOPE
    from exstream_push_dev.emulators.server import free_port

    fcm_port, exstream_port, oauth_port = free_port(), free_port(), free_port()
    apns_port, webpush_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exstream_push.cli",
            "emulate",
            "--fcm-port",
            str(fcm_port),
            "--exstream-port",
            str(exstream_port),
            "--oauth-port",
            str(oauth_port),
            "--apns-port",
            str(apns_port),
            "--webpush-port",
            str(webpush_port),
            "--faults",
            "503=1",
            "--exstream-page-cap",
            "1",
            "--otds-token-ttl",
            "7",
            "--exstream-errors",
            "spring",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "EXSTREAM_PUSH_HOME": str(tmp_path)},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{fcm_port}/_emulator/stats").raise_for_status()
                httpx.get(f"http://127.0.0.1:{exstream_port}/_emulator/inbox").raise_for_status()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.1)
        send_url = f"http://127.0.0.1:{fcm_port}/v1/projects/p/messages:send"
        assert httpx.post(send_url, json={"message": {"token": "t"}}).status_code == 401  # no token, no entry
        key_file = tmp_path / "emulators" / "service-account.json"
        credentials = service_account.Credentials.from_service_account_file(str(key_file), scopes=[FCM_SCOPE])
        credentials.refresh(Request())  # the key file's token_uri is the OAuth2 emulator on --oauth-port
        assert f":{oauth_port}/token" in credentials._token_uri
        answer = httpx.post(
            send_url, json={"message": {"token": "t"}}, headers={"Authorization": f"Bearer {credentials.token}"}
        )
        assert answer.status_code == 503  # --faults reached the FCM emulator
        exstream = f"http://127.0.0.1:{exstream_port}"
        refused = httpx.get(f"{exstream}/orchestration/api/v1/runtime/default/flow-steps")
        assert refused.status_code == 401 and refused.json()["error"] == "Unauthorized"  # --exstream-errors spring
        form = {"grant_type": "client_credentials", "client_id": "push"}
        issued = httpx.post(f"{exstream}/otdsws/oauth2/token", data=form).json()
        assert issued["expires_in"] == 7  # --otds-token-ttl
        steps = httpx.get(
            f"{exstream}/orchestration/api/v1/runtime/default/flow-steps",
            params={"count": 10},
            headers={"Authorization": f"Bearer {issued['access_token']}"},
        ).json()
        assert len(steps["data"]) == steps["page"]["pageSize"] == 1 < steps["page"]["totalElements"]  # page cap
        ca_file = tmp_path / "emulators" / "emulator-ca.pem"  # Web Push is served over TLS, trusted through it
        trust = ssl.create_default_context(cafile=str(ca_file))
        subscribed = httpx.post(f"https://127.0.0.1:{webpush_port}/_emulator/subscriptions", verify=trust)
        assert subscribed.status_code == 201 and subscribed.json()["endpoint"].startswith(
            f"https://127.0.0.1:{webpush_port}/"
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        printed = process.stdout.read()
        assert f"EXSTREAM_PUSH_FCM_URL=http://127.0.0.1:{fcm_port}" in printed
        assert f"EXSTREAM_PUSH_FCM_SERVICE_ACCOUNT_FILE={key_file}" in printed
        assert f"EXSTREAM_PUSH_APNS_URL=https://127.0.0.1:{apns_port}" in printed
        ca_file = tmp_path.resolve() / "emulators" / "emulator-ca.pem"  # one CA for both TLS emulators
        assert f"EXSTREAM_PUSH_CA_FILE={ca_file}" in printed and "EXSTREAM_PUSH_APNS_KEY_FILE=" in printed
        assert f"EXSTREAM_PUSH_WEBPUSH_VAPID_PRIVATE_KEY_FILE={tmp_path / 'emulators' / 'vapid-private.pem'}" in printed
        devices_file = tmp_path.resolve() / "emulators" / "devices.csv"  # data/devices.csv, web devices subscribed
        assert f"exstream-push devices import {devices_file}" in printed
        with devices_file.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        web = [row["token"] for row in rows if row["provider"] == "webpush"]
        assert web and all(token.startswith(f"https://127.0.0.1:{webpush_port}/push/") for token in web)
        assert {row["provider"] for row in rows} == {"fcm", "apns", "webpush"}
    finally:
        if process.poll() is None:
            process.kill()


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    from exstream_push.usecases.registry import USE_CASES

    commands = [
        [], ["demo"], ["emulate"], ["devices", "import"], ["links", "verify"], ["report"], ["events", "import"],
        ["audit", "export"], ["audit", "verify"], ["audit", "trail"], ["exceptions", "list"], ["exceptions", "reissue"],
        ["serve"], ["up"], ["bench"],
        ["server"], ["server", "start"], ["server", "status"], ["server", "stop"],
        *(["run", name] for name in USE_CASES),
    ]  # fmt: skip
    for command in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--help"])
        assert exit_info.value.code == 0
        assert "usage: exstream-push" in capsys.readouterr().out


def test_a_bench_mix_that_adds_up_to_more_than_every_device_is_refused_before_anything_starts() -> None:
    with pytest.raises(SystemExit, match="add up to at most 1"):
        main(["bench", "--customers", "10", "--apns-share", "0.8", "--webpush-share", "0.5"])


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The real command in its own process, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "exstream_push.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=600,
    )


def test_an_unreachable_database_is_one_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    from exstream_push_dev.emulators.server import free_port

    port = free_port()
    manifest = tmp_path / "_STDDELIVERYFILE.xml"
    manifest.write_text("<outputList/>\n")
    env = {
        "EXSTREAM_PUSH_HOME": str(tmp_path / "home"),
        "EXSTREAM_PUSH_DATABASE_URL": f"postgresql://exstream:s3cr3t-pw@127.0.0.1:{port}/ledger",
    }
    for command in (["report"], ["run", "statement-ready", "--manifest", str(manifest)]):
        done = _cli(*command, env=env)
        lines = done.stderr.splitlines()
        assert done.returncode == 69, done.stderr
        assert len(lines) == 1, done.stderr
        assert f"PostgreSQL) is unreachable at postgresql://exstream@127.0.0.1:{port}/ledger" in lines[0]
        assert "EXSTREAM_PUSH_DATABASE_URL" in lines[0] and "s3cr3t-pw" not in done.stderr + done.stdout

    debugged = _cli("--debug", "report", env=env)
    assert debugged.returncode == 69
    assert "Traceback (most recent call last)" in debugged.stderr and "s3cr3t-pw" not in debugged.stderr


def test_an_unreachable_prefect_api_is_one_line(tmp_path: Path) -> None:
    from exstream_push_dev.emulators.server import free_port

    port = free_port()
    manifest = tmp_path / "_STDDELIVERYFILE.xml"
    manifest.write_text("<outputList/>\n")
    done = _cli(
        "run", "statement-ready", "--manifest", str(manifest),
        env={"EXSTREAM_PUSH_HOME": str(tmp_path / "home"), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"},
    )  # fmt: skip
    lines = done.stderr.splitlines()
    assert done.returncode == 69, done.stderr
    assert len(lines) == 1, done.stderr
    assert f"the Prefect API is unreachable at http://127.0.0.1:{port}/api" in lines[0]
    assert "PREFECT_API_URL" in lines[0]


def test_an_exstream_job_not_found_is_one_line(prefect_harness: None, env: dict[str, str]) -> None:
    """A connector's error ends the command as its one line (not retried: a 404 cannot succeed later)."""
    from prefect.settings import PREFECT_API_URL

    done = _cli("run", "statement-ready", "--job", "NOPE-123", env={**env, "PREFECT_API_URL": PREFECT_API_URL.value()})
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith("exstream-push: Exstream job NOPE-123 not found")


def test_exstream_that_does_not_answer_is_one_line(prefect_harness: None, env: dict[str, str]) -> None:
    from prefect.settings import PREFECT_API_URL

    from exstream_push_dev.emulators.server import free_port

    unreachable = {**env, "EXSTREAM_PUSH_EXSTREAM_URL": f"http://127.0.0.1:{free_port()}/orchestration"}
    done = _cli(
        "run", "statement-ready", "--job", "J-1", env={**unreachable, "PREFECT_API_URL": PREFECT_API_URL.value()}
    )
    assert done.returncode == 69, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith("exstream-push: Exstream")


def test_a_run_that_fails_in_prefect_is_one_line_without_debug(
    prefect_harness: None, env: dict[str, str], tmp_path: Path
) -> None:
    """The flow and task engines log the failure with its traceback: the terminal shows their one-line messages,
    and the command ends with the error's own line."""
    from prefect.settings import PREFECT_API_URL

    from exstream_push.runtime import ledger_for
    from exstream_push.settings import get_settings
    from exstream_push_dev.emulators.samples import write_manifest
    from tests.test_ledger_errors import refuse_documents

    manifest = tmp_path / "_STDDELIVERYFILE.xml"
    write_manifest(manifest, 20, seed=41, job_id="JOB-CLI-FAIL")
    refuse_documents(ledger_for(get_settings()))
    customers = {f"C{number:08d}" for number in range(1, 21)}
    prefect = {**env, "PREFECT_API_URL": PREFECT_API_URL.value()}

    done = _cli("run", "statement-ready", "--manifest", str(manifest), "--job", "JOB-CLI-FAIL", env=prefect)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    # Prefect's engine logged the task's failure in one line (an integrity error is not retried, so no attempt log)
    assert "Task run 'extract-manifest" in done.stderr and "Finished in state Failed" in done.stderr
    assert done.stderr.splitlines()[-1].startswith("exstream-push: ledger statement failed on SQLite")
    assert not any(customer in done.stderr + done.stdout for customer in customers)

    debugged = _cli("--debug", "run", "statement-ready", "--manifest", str(manifest), env=prefect)
    assert debugged.returncode == 1
    assert "Traceback (most recent call last)" in debugged.stderr
