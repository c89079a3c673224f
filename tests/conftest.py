"""Shared fixtures: one Prefect test harness per session, emulators on loopback, an isolated ledger per test."""

from __future__ import annotations

import json
import os
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# A command a test runs without the harness or a server of its own gets Prefect's temporary server, as before: no
# test leaves a shared server behind (tests/test_prefect_server.py asks for one and stops it).
os.environ.setdefault("EXSTREAM_PUSH_PREFECT_SERVER", "ephemeral")

from google.oauth2 import service_account

from exstream_push.connectors.fcm import FCM_SCOPE, PushRequest, build_message
from exstream_push_dev.emulators.apns import ApnsEmulator, start_apns_emulator
from exstream_push_dev.emulators.exstream import create_exstream_app
from exstream_push_dev.emulators.google_oauth import DEFAULT_TOKEN_LIFETIME, GoogleEmulators, google_emulators
from exstream_push_dev.emulators.server import ServerThread
from exstream_push_dev.emulators.webpush import development_vapid_key, start_webpush_emulator

REQUIRE_SERVICES = os.environ.get("EXSTREAM_PUSH_REQUIRE_SERVICES") == "1"
POSTGRES_ADMIN_URL = os.environ.get(
    "EXSTREAM_PUSH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


# A test that asks for any of these runs against a server, an emulator or a database: ``make test-fast`` leaves it
# out (``-m "not e2e"``), as it does the modules below; ``make test`` runs everything.
# fmt: off
END_TO_END_FIXTURES = frozenset(
    {
        "prefect_harness", "google", "fcm_server", "fcm", "fcm_google_credentials", "exstream", "env",
        "database_url", "postgres_url", "apns_server", "apns", "webpush_server", "webpush", "every_provider_env",
    }
)
# fmt: on


# Modules whose tests start servers, emulators or processes of their own (the CLI, workers, the stack, Dask).
END_TO_END_MODULES = frozenset(
    {
        "test_cli", "test_crash_resume", "test_demo", "test_event_driven", "test_exstream_client",
        "test_exstream_conformance", "test_exstream_emulator", "test_fcm_emulator", "test_fcm_sender", "test_ingress",
        "test_memory", "test_migrations", "test_apns_http2", "test_prefect_events", "test_prefect_server", "test_quota",
        "test_shared_run", "test_stack",
        "test_task_runners", "test_work_queue", "test_zombie_runs",
    }
)  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if END_TO_END_FIXTURES & fixtures or item.module.__name__.rsplit(".", 1)[-1] in END_TO_END_MODULES:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """Prefect's embedded test server, started once: it costs 7-10 s on this machine."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with (
        temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
        prefect_test_harness(server_startup_timeout=120),
    ):
        yield


GOOGLE_PROJECT = "test-project"


@pytest.fixture(scope="session")
def google(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GoogleEmulators]:
    """The FCM emulator and Google's token endpoint, and a service-account key whose token_uri points there:
    every test that sends signs in as production does (google-auth, a signed JWT, short-lived access tokens)."""
    key_file = tmp_path_factory.mktemp("google") / "service-account.json"
    with google_emulators(key_file, GOOGLE_PROJECT) as emulators:
        yield emulators


@pytest.fixture(scope="session")
def fcm_server(google: GoogleEmulators) -> ServerThread:
    return google.fcm


@pytest.fixture
def fcm(google: GoogleEmulators) -> Iterator[ServerThread]:
    """The session's FCM emulator, emptied before each test, its tokens living an hour again."""
    state = google.fcm.app.state.fcm
    state.reset()
    state.latency = 0.0
    google.oauth.app.state.oauth.token_lifetime = DEFAULT_TOKEN_LIFETIME
    yield google.fcm


@pytest.fixture
def fcm_google_credentials(google: GoogleEmulators) -> service_account.Credentials:
    """Fresh (not yet signed-in) credentials of the session's service account, for clients built by hand."""
    return service_account.Credentials.from_service_account_file(str(google.service_account_file), scopes=[FCM_SCOPE])


@pytest.fixture(scope="session")
def push_tls_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One development CA for the emulators that speak only TLS, so one ``EXSTREAM_PUSH_CA_FILE`` trusts both."""
    return tmp_path_factory.mktemp("push-tls")


@pytest.fixture(scope="session")
def apns_server(push_tls_folder: Path) -> Iterator[ApnsEmulator]:
    """The APNs emulator (HTTP/2 over TLS) and the team's signing key it verifies provider tokens with."""
    emulator = start_apns_emulator(push_tls_folder)
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def apns(apns_server: ApnsEmulator) -> ApnsEmulator:
    """The session's APNs emulator, emptied before each test, answering at once again."""
    apns_server.state.reset()
    apns_server.state.latency = 0.0
    return apns_server


@pytest.fixture(scope="session")
def webpush_server(push_tls_folder: Path) -> Iterator[ServerThread]:
    """The Web Push emulator: the browsers' push service and the browsers behind it, over TLS."""
    server = start_webpush_emulator(push_tls_folder)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def webpush(webpush_server: ServerThread) -> ServerThread:
    """The session's Web Push emulator, its messages forgotten before each test (subscriptions stay), answering
    at once again."""
    webpush_server.app.state.webpush.reset()
    webpush_server.app.state.webpush.latency = 0.0
    return webpush_server


@pytest.fixture
def every_provider_env(
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    apns: ApnsEmulator,
    webpush: ServerThread,
    push_tls_folder: Path,
) -> dict[str, str]:
    """``env`` with APNs and Web Push configured too, against their emulators."""
    values = {
        **apns.environment(),
        "EXSTREAM_PUSH_WEBPUSH_VAPID_PRIVATE_KEY_FILE": str(development_vapid_key(push_tls_folder / "vapid")),
        "EXSTREAM_PUSH_CA_FILE": str(webpush.tls.ca_file),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return {**env, **values}


@pytest.fixture
def exstream_data(tmp_path: Path) -> Path:
    data = tmp_path / "exstream-data"
    (data / "jobs").mkdir(parents=True)
    return data


@pytest.fixture
def exstream(exstream_data: Path) -> Iterator[ServerThread]:
    with ServerThread(create_exstream_app(exstream_data)) as server:
        yield server


def _postgres_database() -> Iterator[str]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as exc:  # any connection failure means "no PostgreSQL here"
        admin.dispose()
        if REQUIRE_SERVICES:
            pytest.fail(f"PostgreSQL is required (EXSTREAM_PUSH_REQUIRE_SERVICES=1) but unreachable: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}; set EXSTREAM_PUSH_REQUIRE_SERVICES=1 to fail")
    name = f"xp_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        from exstream_push.runtime import _ledger

        _ledger.cache_clear()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test; skipped without a server unless services are required."""
    yield from _postgres_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        yield from _postgres_database()


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    google: GoogleEmulators,
    fcm: ServerThread,
    exstream: ServerThread,
) -> dict[str, str]:
    """Settings pointing at the emulators, with a state folder and SQLite ledger of the test's own."""
    values = {
        "EXSTREAM_PUSH_HOME": str(tmp_path / "home"),
        "EXSTREAM_PUSH_DATABASE_URL": f"sqlite:///{tmp_path / 'home' / 'ledger.db'}",
        "EXSTREAM_PUSH_FCM_URL": fcm.url,
        "EXSTREAM_PUSH_FCM_PROJECT": GOOGLE_PROJECT,
        "EXSTREAM_PUSH_FCM_SERVICE_ACCOUNT_FILE": str(google.service_account_file),
        "EXSTREAM_PUSH_EXSTREAM_URL": f"{exstream.url}/orchestration",
        "EXSTREAM_PUSH_LINK_SECRET": "test-link-secret",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def statement_requests(count: int, token_prefix: str = "d") -> list[PushRequest]:
    """``count`` "your statement is ready" pushes to devices ``{token_prefix}-0`` … for senders built by hand."""
    return [
        PushRequest(
            key=f"key-{n}",
            message=build_message(
                title="Your statement is ready",
                body="Open the app to view it.",
                data={"document_ref": f"r-{n}"},
                collapse_key="statement",
                token=f"{token_prefix}-{n}",
            ),
        )
        for n in range(count)
    ]


def fcm_messages(server: ServerThread) -> list[dict]:
    return httpx.get(f"{server.url}/_emulator/messages").json()


def apns_messages(emulator: ApnsEmulator) -> list[dict]:
    """``{"device_token", "headers", "payload"}`` per notification the APNs emulator accepted."""
    return httpx.get(
        f"{emulator.url}/_emulator/messages", verify=ssl.create_default_context(cafile=emulator.ca_file)
    ).json()


def webpush_messages(server: ServerThread) -> list[dict]:
    """``{"endpoint", "headers", "payload"}`` per message, ``payload`` as the service worker decrypted it."""
    return httpx.get(
        f"{server.url}/_emulator/messages", verify=ssl.create_default_context(cafile=server.tls.ca_file)
    ).json()


def exstream_inbox(server: ServerThread) -> list[dict]:
    return httpx.get(f"{server.url}/_emulator/inbox").json()


def printed_json(capsys: pytest.CaptureFixture[str]) -> dict | list:
    """The JSON a command printed last, after whatever log lines came before it."""
    out = capsys.readouterr().out
    return json.loads(out[min(i for i in (out.find("{"), out.find("[")) if i >= 0) :])
