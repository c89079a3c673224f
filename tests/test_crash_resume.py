"""SIGKILL in the middle of sending, then run again: every eligible message goes out, repeats only from the wire."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from sqlalchemy import select

from exstream_push.content.links import document_ref
from exstream_push.ledger import Notification
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push_dev.emulators.apns import ApnsEmulator
from exstream_push_dev.emulators.samples import write_devices, write_manifest
from exstream_push_dev.emulators.server import ServerThread
from tests.conftest import fcm_messages
from tests.oracle import read_scenario
from tests.test_every_provider import delivered, mixed_registry, providers

CUSTOMERS = 2_500
JOB_ID = "JOB-CRASH-1"
CONCURRENCY = 8
MAX_CONCURRENCY = 32  # the in-flight limit grows from 8 towards 32 while the emulator's 20 ms stay flat


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "exstream_push.cli", *args]


def test_kill_mid_run_then_resume_sends_what_was_missing(
    prefect_harness: None, env: dict[str, str], fcm, exstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import PREFECT_API_URL

    manifest, devices = tmp_path / "_STDDELIVERYFILE.xml", tmp_path / "devices.csv"
    write_manifest(manifest, CUSTOMERS, seed=31, job_id=JOB_ID)
    write_devices(devices, CUSTOMERS, seed=32)
    expected = read_scenario(manifest, devices, JOB_ID)
    child_env = {
        **os.environ,
        **env,
        "EXSTREAM_PUSH_FCM_CONCURRENCY": str(CONCURRENCY),
        "EXSTREAM_PUSH_FCM_MAX_CONCURRENCY": str(MAX_CONCURRENCY),
        "PREFECT_API_URL": PREFECT_API_URL.value(),
    }
    subprocess.run(_cli("devices", "import", str(devices)), env=child_env, check=True, capture_output=True)

    fcm.app.state.fcm.latency = 0.02  # slow enough that the kill lands mid-send
    run = _cli("run", "statement-ready", "--manifest", str(manifest), "--job", JOB_ID)
    process = subprocess.Popen(
        run, env=child_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 240
        while len(fcm_messages(fcm)) < 400:
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "the run never got going"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    accepted_at_kill = len(fcm_messages(fcm))
    assert accepted_at_kill < len(expected.accepted), "the kill came too late to test anything"

    monkeypatch.setenv("EXSTREAM_PUSH_DATABASE_URL", env["EXSTREAM_PUSH_DATABASE_URL"])
    with ledger_for(get_settings()).engine.connect() as conn:
        unconfirmed = {
            (document_id, device_id)
            for document_id, device_id in conn.execute(
                select(Notification.document_id, Notification.device_id).where(Notification.status == "pending")
            )
        }

    fcm.app.state.fcm.latency = 0.0
    resumed = subprocess.run(run, env=child_env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    key = get_settings().link_key
    refs = {document_ref(key, "statement-ready", d): d for d in expected.documents}
    device_of = {token: device for device, token in expected.tokens.items()}
    copies: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for message in fcm_messages(fcm):
        copies[(refs[message["data"]["document_ref"]], device_of[message["token"]])].append(message)

    assert set(copies) == expected.accepted
    repeats = {pair: sent for pair, sent in copies.items() if len(sent) > 1}
    # Only messages on the wire, or answered but not yet recorded (outcomes are written every MAX_CONCURRENCY
    # completions), when the process died may repeat.
    assert set(repeats) <= unconfirmed
    assert len(repeats) <= 2 * MAX_CONCURRENCY
    assert all(len(sent) == 2 for sent in repeats.values())
    for sent in repeats.values():
        first, again = sent
        assert first["android"]["collapse_key"] == again["android"]["collapse_key"]
        assert first["apns"]["headers"]["apns-collapse-id"] == again["apns"]["headers"]["apns-collapse-id"]
        assert first["webpush"]["headers"]["Topic"] == again["webpush"]["headers"]["Topic"]


PROVIDERS_JOB_ID = "JOB-CRASH-PROVIDERS"
ROUND_TRIP = {"fcm": 0.05, "apns": 0.1, "webpush": 0.25}
IN_FLIGHT = {"fcm": (8, 8), "apns": (8, 8), "webpush": (8, 8)}
"""Seconds per request and (first, most) requests in flight per provider: with 60/30/10 % of the devices, each
provider's group takes about as long (8-10 s), so all three are still sending when the last of them starts (FCM
signs in to Google first, Web Push signs its VAPID token: their starts differ by seconds)."""
STARTED = 25  # messages each emulator accepted before the kill


def test_kill_mid_run_over_every_provider_then_resume_repeats_only_in_flight_messages_with_their_collapse_ids(
    prefect_harness: None,
    every_provider_env: dict[str, str],
    fcm: ServerThread,
    apns: ApnsEmulator,
    webpush: ServerThread,
    exstream: ServerThread,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """FCM, APNs and Web Push devices in one run: each provider's sender records its outcomes as they complete, so
    the kill repeats at most what was on each provider's wire, and each repeat collapses onto its first copy."""
    from prefect.settings import PREFECT_API_URL

    manifest = tmp_path / "_STDDELIVERYFILE.xml"
    write_manifest(manifest, CUSTOMERS, seed=33, job_id=PROVIDERS_JOB_ID)
    devices, gone = mixed_registry(tmp_path, CUSTOMERS, 34, webpush)
    expected = read_scenario(manifest, devices, PROVIDERS_JOB_ID, gone_devices=gone)
    provider_of = providers(devices)
    in_flight = {
        f"EXSTREAM_PUSH_{provider.upper()}_{limit}": str(value)
        for provider, limits in IN_FLIGHT.items()
        for limit, value in zip(("CONCURRENCY", "MAX_CONCURRENCY"), limits, strict=True)
    }
    child_env = {**os.environ, **every_provider_env, **in_flight, "PREFECT_API_URL": PREFECT_API_URL.value()}
    subprocess.run(_cli("devices", "import", str(devices)), env=child_env, check=True, capture_output=True)

    emulator_states = {"fcm": fcm.app.state.fcm, "apns": apns.state, "webpush": webpush.app.state.webpush}
    for provider, state in emulator_states.items():
        state.latency = ROUND_TRIP[provider]
    run = _cli("run", "statement-ready", "--manifest", str(manifest), "--job", PROVIDERS_JOB_ID)
    process = subprocess.Popen(
        run, env=child_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 240
        while min(state.accepted for state in emulator_states.values()) < STARTED:
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "the run never got going"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    accepted_at_kill = Counter(provider_of[device] for _, device in delivered(expected, fcm, apns, webpush)[0])
    owed = Counter(provider_of[device] for _, device in expected.accepted)
    for provider in owed:
        assert 0 < accepted_at_kill[provider] < owed[provider], f"the kill did not land mid-send to {provider}"

    monkeypatch.setenv("EXSTREAM_PUSH_DATABASE_URL", every_provider_env["EXSTREAM_PUSH_DATABASE_URL"])
    with ledger_for(get_settings()).engine.connect() as conn:
        unconfirmed = set(
            conn.execute(
                select(Notification.document_id, Notification.device_id).where(Notification.status == "pending")
            )
        )

    for state in emulator_states.values():
        state.latency = 0.0
    resumed = subprocess.run(run, env=child_env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    key = get_settings().link_key
    refs = {document_ref(key, "statement-ready", d): d for d in expected.documents}
    device_of = {token: device for device, token in expected.tokens.items()}
    copies: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for provider, messages in delivered(expected, fcm, apns, webpush)[1].items():
        for message in messages:
            pair = (refs[message["shown"]["document_ref"]], device_of[message["address"]])
            assert provider_of[pair[1]] == provider
            copies[pair].append(message)

    assert set(copies) == expected.accepted
    assert {provider_of[device] for _, device in copies} == {"fcm", "apns", "webpush"}
    repeats = {pair: sent for pair, sent in copies.items() if len(sent) > 1}
    assert set(repeats) <= unconfirmed
    # At most twice what each provider's sender had in flight: on the wire, or answered but not yet recorded.
    per_provider = Counter(provider_of[device] for _, device in repeats)
    assert all(count <= 2 * IN_FLIGHT[provider][1] for provider, count in per_provider.items()), per_provider
    assert all(len(sent) == 2 for sent in repeats.values())
    for (_, device), (first, again) in repeats.items():
        assert collapse_id(provider_of[device], first) == collapse_id(provider_of[device], again)


def collapse_id(provider: str, message: dict) -> str:
    """What makes the device show one copy: FCM's collapse key (and its APNs and Web Push overrides), APNs'
    ``apns-collapse-id``, Web Push's ``Topic``."""
    if provider == "apns":
        return message["headers"]["apns-collapse-id"]
    if provider == "webpush":
        return message["headers"]["topic"]
    overrides = (message["apns"]["headers"]["apns-collapse-id"], message["webpush"]["headers"]["Topic"])
    return f"{message['android']['collapse_key']}|{overrides}"


def test_a_killed_run_is_marked_crashed_in_prefect_when_the_next_run_of_its_job_joins(
    prefect_harness: None, env: dict[str, str], fcm, exstream, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL

    job_id = "JOB-CRASH-2"
    manifest, devices = tmp_path / "_STDDELIVERYFILE.xml", tmp_path / "devices.csv"
    write_manifest(manifest, 400, seed=41, job_id=job_id)
    write_devices(devices, 400, seed=42)
    child_env = {
        **os.environ,
        **env,
        "EXSTREAM_PUSH_FCM_CONCURRENCY": "2",
        "EXSTREAM_PUSH_FCM_MAX_CONCURRENCY": "2",
        "PREFECT_API_URL": PREFECT_API_URL.value(),
    }
    subprocess.run(_cli("devices", "import", str(devices)), env=child_env, check=True, capture_output=True)

    fcm.app.state.fcm.latency = 0.05
    run = _cli("run", "statement-ready", "--manifest", str(manifest), "--job", job_id)
    process = subprocess.Popen(
        run, env=child_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 240
        while not fcm_messages(fcm):  # sending, so it holds its batch
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "the run never got going"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    fcm.app.state.fcm.latency = 0.0
    resumed = subprocess.run(run, env=child_env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"statement-ready-{job_id}"])),
            sort=FlowRunSort.START_TIME_ASC,
        )
    assert [flow_run.state_type.value for flow_run in runs] == ["CRASHED", "COMPLETED"]
    assert "took over" in runs[0].state.message
