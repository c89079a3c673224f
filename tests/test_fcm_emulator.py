"""The FCM emulator must answer like FCM, so that what passes against it also holds against Google."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

import firebase_admin
import google.auth.credentials
import httpx
import orjson
import pytest
from firebase_admin import _utils, credentials, exceptions, messaging
from starlette.applications import Starlette

from exstream_push.connectors.fcm import FCM_SCOPE
from exstream_push_dev.emulators.fcm import FcmEmulatorState, create_fcm_app, parse_fault_spec
from exstream_push_dev.emulators.server import ServerThread

PROJECT = "demo-project"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
SEND_PATH = f"/v1/projects/{PROJECT}/messages:send"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread(create_fcm_app()) as running:
        yield running


def access_token(app: Starlette) -> str:
    """A token as the OAuth2 emulator would issue it for this FCM emulator (``tests/test_google_oauth.py`` signs
    in for real; these tests are about what comes after)."""
    return app.state.tokens.issue("tests@demo-project.iam.gserviceaccount.com", [FCM_SCOPE], 3600)


def signed_in(app: Starlette) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token(app)}"}


@pytest.fixture
def client(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=signed_in(server.app)) as http:
        http.delete("/_emulator/messages")
        yield http


def send(http: httpx.Client, message: Any, **body: Any) -> httpx.Response:
    return http.post(SEND_PATH, json={"message": message, **body})


def fcm_error_code(response: httpx.Response) -> str:
    """The one ``FcmError`` detail's code (firebase-admin reads it to pick its exception class)."""
    error = response.json()["error"]
    assert error["code"] == response.status_code
    (detail,) = [detail for detail in error["details"] if detail["@type"] == FCM_ERROR_TYPE]
    return detail["errorCode"]


def violated_fields(response: httpx.Response) -> list[str]:
    """The fields named by the ``google.rpc.BadRequest`` detail, as real FCM reports a field error."""
    error = response.json()["error"]
    (detail,) = [detail for detail in error["details"] if detail["@type"] == BAD_REQUEST_TYPE]
    return [violation.get("field", "") for violation in detail["fieldViolations"]]


def send_raw(state: FcmEmulatorState, message: dict[str, Any]) -> int:
    return state.handle_send(PROJECT, orjson.dumps({"message": message})).status


# --- fault specs ---


def test_parse_fault_spec_reads_codes_and_rates() -> None:
    assert parse_fault_spec("429=0.05, 503=0.05,500=0.01") == {429: 0.05, 503: 0.05, 500: 0.01}
    assert parse_fault_spec("503=1") == {503: 1.0}
    assert parse_fault_spec("429=0.1,503=0.2,500=0.7") == {429: 0.1, 503: 0.2, 500: 0.7}
    assert parse_fault_spec("  ") == {}


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ("404=0.1", "unknown fault code 404"),
        ("429=1.5", "between 0 and 1"),
        ("503=-0.1", "between 0 and 1"),
        ("500=nan", "between 0 and 1"),
        ("429=0.6,503=0.6", "must not exceed 1"),
        ("429", "expected CODE=RATE"),
        ("429=0.1,", "expected CODE=RATE"),
        ("429=lots", "CODE must be an integer and RATE a number"),
        ("quota=0.1", "CODE must be an integer and RATE a number"),
        ("429=0.1,429=0.2", "appears twice"),
    ],
)
def test_parse_fault_spec_rejects_bad_input(spec: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_fault_spec(spec)


def test_create_fcm_app_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="unknown fault code 404"):
        create_fcm_app(faults={404: 0.5})
    with pytest.raises(ValueError, match="must not be negative"):
        create_fcm_app(latency=-1.0)


# --- accepted messages ---


def test_send_accepts_every_target_and_lists_messages_as_received(client: httpx.Client) -> None:
    messages = [
        {"token": "device-1", "notification": {"title": "Your statement is ready"}, "data": {"ref": "a1"}},
        {"fid": "installation-2", "data": {"ref": "b2"}},
        {"topic": "operations", "data": {"event": "run-finished"}},
        {"topic": "ops.alerts~%20_-", "notification": {"body": "x"}},
        {"condition": "'ops' in topics && 'eu' in topics"},
        {"token": "device-3", "android": {"collapseKey": "k", "ttl": "3.5s"}, "fcmOptions": {"analyticsLabel": "a"}},
    ]
    names = []
    for message in messages:
        response = send(client, message)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        names.append(response.json()["name"])

    assert all(name.startswith(f"projects/{PROJECT}/messages/") for name in names)
    assert len(set(names)) == len(names)
    assert client.get("/_emulator/messages").json() == messages
    assert client.get("/_emulator/stats").json() == {
        "accepted": 6,
        "validated": 0,
        "rejected": {},
        "requests": 6,
    }


def test_validate_only_checks_without_listing(client: httpx.Client) -> None:
    assert send(client, {"token": "device-1"}, validate_only=True).status_code == 200
    assert send(client, {"token": "device-1"}, validateOnly=True).status_code == 200
    assert send(client, {"token": "device-1"}, validateOnly=False).status_code == 200
    assert send(client, {"token": "device-1", "data": {"n": 1}}, validate_only=True).status_code == 400
    assert client.get("/_emulator/messages").json() == [{"token": "device-1"}]
    assert client.get("/_emulator/stats").json() == {
        "accepted": 1,
        "validated": 2,
        "rejected": {"400": 1},
        "requests": 4,
    }


def test_message_ids_stay_unique_across_reset(server: ServerThread, client: httpx.Client) -> None:
    first = send(client, {"token": "device-1"}).json()["name"]
    client.delete("/_emulator/messages")
    assert send(client, {"token": "device-1"}).json()["name"] != first


# --- validation ---


@pytest.mark.parametrize(
    ("raw_body", "field", "complaint"),
    [
        (b"{not json", "", "Invalid JSON payload"),
        (b"[]", "", "must be a JSON object"),
        (b"{}", "message", "'message' must be a JSON object"),
        (b'{"message": "hello"}', "message", "expected a JSON object"),
        (b'{"message": {"token": "d"}, "validate_only": "yes"}', "validate_only", "TYPE_BOOL"),
        (b'{"message": {"token": "d"}, "dry_run": true}', "dry_run", 'Unknown name "dry_run"'),
        (b'{"message": {"token": "d", "notifcation": {}}}', "message", 'Unknown name "notifcation"'),
        (b'{"message": {"data": {"a": "b"}}}', "message", "Exactly one of token, fid, topic, condition"),
        (b'{"message": {"token": "d", "topic": "ops"}}', "message", "Exactly one of token, fid, topic, condition"),
        (b'{"message": {"token": "d", "fid": "f"}}', "message", "Exactly one of token, fid, topic, condition"),
        (b'{"message": {"token": ""}}', "message.token", "not a valid FCM registration token"),
        (b'{"message": {"fid": 42}}', "message.fid", "TYPE_STRING"),
        (b'{"message": {"topic": "ops alerts"}}', "message.topic", "Topic name must match"),
        (b'{"message": {"topic": "/topics/"}}', "message.topic", "'/topics/' prefix"),
        (b'{"message": {"token": "d", "data": ["a"]}}', "message.data", "expected a JSON object"),
        (b'{"message": {"token": "d", "data": {"count": 3}}}', "message.data[count]", "TYPE_STRING"),
        (b'{"message": {"token": "d", "data": {"flag": null}}}', "message.data[flag]", "may not be null"),
    ],
)
def test_invalid_requests_get_invalid_argument_naming_the_field(
    client: httpx.Client, raw_body: bytes, field: str, complaint: str
) -> None:
    response = client.post(SEND_PATH, content=raw_body, headers={"Content-Type": "application/json"})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and error["code"] == 400
    assert violated_fields(response) == [field]
    assert complaint in error["message"], response.text
    assert client.get("/_emulator/messages").json() == []


@pytest.mark.parametrize(
    ("target", "limit"),
    [({"token": "d"}, 4096), ({"topic": "ops"}, 2048), ({"condition": "'ops' in topics"}, 2048)],
)
@pytest.mark.parametrize("over", [0, 1])
def test_message_size_limit_counts_the_serialized_message_and_depends_on_the_target(
    client: httpx.Client, target: dict[str, str], limit: int, over: int
) -> None:
    overhead = len(orjson.dumps({**target, "data": {"x": ""}}))
    message = {**target, "data": {"x": "y" * (limit + over - overhead)}}
    assert len(orjson.dumps(message)) == limit + over

    response = send(client, message)

    assert response.status_code == (400 if over else 200)
    if over:
        assert f"{limit + over} bytes" in response.json()["error"]["message"]
        assert violated_fields(response) == ["message"]


# --- deterministic faults ---


@pytest.mark.parametrize("target", ["token", "fid"])
def test_permanent_fault_prefixes_fail_every_time(client: httpx.Client, target: str) -> None:
    for _ in range(2):
        gone = send(client, {target: "unregistered-abc"})
        assert gone.status_code == 404
        assert gone.json()["error"]["status"] == "NOT_FOUND"
        assert gone.json()["error"]["message"] == "Requested entity was not found."
        assert fcm_error_code(gone) == "UNREGISTERED"

        bad = send(client, {target: "invalid-abc"})
        assert bad.status_code == 400
        assert bad.json()["error"]["status"] == "INVALID_ARGUMENT"
        assert fcm_error_code(bad) == "INVALID_ARGUMENT"
        assert violated_fields(bad) == [f"message.{target}"]

        mismatch = send(client, {target: "sender-mismatch-abc"})
        assert mismatch.status_code == 403
        assert mismatch.json()["error"]["status"] == "PERMISSION_DENIED"
        assert fcm_error_code(mismatch) == "SENDER_ID_MISMATCH"

        third_party = send(client, {target: "auth-error-abc"})
        assert third_party.status_code == 401
        assert third_party.json()["error"]["status"] == "UNAUTHENTICATED"
        assert fcm_error_code(third_party) == "THIRD_PARTY_AUTH_ERROR"
    assert client.get("/_emulator/messages").json() == []
    assert client.get("/_emulator/stats").json()["rejected"] == {"400": 2, "401": 2, "403": 2, "404": 2}


@pytest.mark.parametrize(
    ("token", "status", "rpc_status", "error_code", "retry_after"),
    [
        ("flaky-1", 503, "UNAVAILABLE", "UNAVAILABLE", "1"),
        ("quota-1", 429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "1"),
        ("quota-bare-1", 429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", None),
    ],
)
def test_transient_fault_prefixes_fail_only_the_first_attempt(
    client: httpx.Client, token: str, status: int, rpc_status: str, error_code: str, retry_after: str | None
) -> None:
    first = send(client, {"token": token})
    assert first.status_code == status
    assert first.headers.get("retry-after") == retry_after
    assert first.json()["error"]["status"] == rpc_status
    assert fcm_error_code(first) == error_code

    assert send(client, {"token": f"{token}-other"}).status_code == status
    assert send(client, {"token": token}).status_code == 200
    assert send(client, {"token": token}).status_code == 200

    client.delete("/_emulator/messages")
    assert send(client, {"token": token}).status_code == status
    assert send(client, {"token": token}).status_code == 200
    assert client.get("/_emulator/messages").json() == [{"token": token}]


def test_prefix_faults_do_not_apply_to_topics(client: httpx.Client) -> None:
    assert send(client, {"topic": "unregistered-ops"}).status_code == 200
    assert send(client, {"topic": "flaky-ops"}).status_code == 200


# --- random faults ---


@pytest.mark.parametrize(
    ("code", "error_code", "retry_after"),
    [(429, "QUOTA_EXCEEDED", "1"), (503, "UNAVAILABLE", "1"), (500, "INTERNAL", None)],
)
def test_random_fault_at_rate_one_hits_every_send(code: int, error_code: str, retry_after: str | None) -> None:
    with (
        ServerThread(create_fcm_app(faults={code: 1.0})) as server,
        httpx.Client(base_url=server.url, headers=signed_in(server.app)) as http,
    ):
        responses = [send(http, {"token": f"device-{n}"}) for n in range(3)]
        listed = http.get("/_emulator/messages").json()

    for response in responses:
        assert response.status_code == code
        assert fcm_error_code(response) == error_code
        assert response.headers.get("retry-after") == retry_after
    assert listed == []


def test_random_faults_at_rate_zero_never_fire() -> None:
    state = FcmEmulatorState(faults={429: 0.0, 503: 0.0, 500: 0.0}, seed=1)
    assert {send_raw(state, {"token": f"device-{n}"}) for n in range(200)} == {200}


def test_random_faults_are_reproducible_with_a_seed() -> None:
    faults = {429: 0.2, 503: 0.2, 500: 0.2}

    def statuses(state: FcmEmulatorState) -> list[int]:
        return [send_raw(state, {"token": f"device-{n}"}) for n in range(300)]

    first = FcmEmulatorState(faults=faults, seed=7)
    run = statuses(first)
    assert set(run) == {200, 429, 503, 500}
    assert statuses(FcmEmulatorState(faults=faults, seed=7)) == run
    assert statuses(FcmEmulatorState(faults=faults, seed=8)) != run

    first.reset()
    assert statuses(first) == run
    assert first.stats()["accepted"] == run.count(200)
    assert first.stats()["rejected"] == {str(code): run.count(code) for code in (429, 500, 503)}


# --- in-process state and latency ---


def test_state_is_reachable_in_process_and_reset_clears_it() -> None:
    app = create_fcm_app()
    state: FcmEmulatorState = app.state.fcm
    assert send_raw(state, {"token": "quota-9"}) == 429
    assert send_raw(state, {"token": "quota-9", "data": {"k": "v"}}) == 200
    assert state.messages == [{"token": "quota-9", "data": {"k": "v"}}]

    state.reset()

    assert state.messages == []
    assert state.stats() == {"accepted": 0, "validated": 0, "rejected": {}, "requests": 0}
    assert send_raw(state, {"token": "quota-9"}) == 429


def test_latency_is_added_to_every_send(monkeypatch: pytest.MonkeyPatch) -> None:
    delays: list[float] = []

    async def record_sleep(delay: float) -> None:
        delays.append(delay)

    async def post_twice() -> list[int]:
        app = create_fcm_app(latency=0.25)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fcm.test", headers=signed_in(app)) as http:
            monkeypatch.setattr(asyncio, "sleep", record_sleep)
            ok = await http.post(SEND_PATH, json={"message": {"token": "d"}})
            bad = await http.post(SEND_PATH, content=b"nope")
            monkeypatch.undo()
            return [ok.status_code, bad.status_code]

    assert asyncio.run(post_twice()) == [200, 400]
    assert delays == [0.25, 0.25]


# --- firebase-admin maps our errors to its exception classes ---


class StaticTokenCredentials(google.auth.credentials.Credentials):
    """Sends a token already issued and never asks Google for one."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def refresh(self, request: Any) -> None:
        return None


class StaticCredential(credentials.Base):
    def __init__(self, token: str) -> None:
        self._token = token

    def get_credential(self) -> google.auth.credentials.Credentials:
        return StaticTokenCredentials(self._token)


_app_names = itertools.count()


@pytest.fixture
def sdk_app(server: ServerThread, client: httpx.Client) -> Iterator[firebase_admin.App]:
    """A firebase-admin app whose messaging service posts to the emulator instead of fcm.googleapis.com."""
    app = firebase_admin.initialize_app(
        StaticCredential(access_token(server.app)),
        options={"projectId": PROJECT},
        name=f"fcm-emulator-test-{next(_app_names)}",
    )
    service = messaging._get_messaging_service(app)
    service._fcm_url = server.url + SEND_PATH
    try:
        yield app
    finally:
        firebase_admin.delete_app(app)


def test_sdk_send_reaches_the_emulator(sdk_app: firebase_admin.App, client: httpx.Client) -> None:
    message = messaging.Message(fid="device-1", data={"ref": "a1"}, notification=messaging.Notification("Ready"))

    name = messaging.send(message, app=sdk_app)

    assert name.startswith(f"projects/{PROJECT}/messages/")
    assert client.get("/_emulator/messages").json() == [
        {"fid": "device-1", "data": {"ref": "a1"}, "notification": {"title": "Ready"}}
    ]
    assert messaging.send(message, dry_run=True, app=sdk_app).startswith(f"projects/{PROJECT}/messages/")
    assert len(client.get("/_emulator/messages").json()) == 1


@pytest.mark.parametrize(
    ("fid", "exception_type"),
    [
        ("unregistered-1", messaging.UnregisteredError),
        ("invalid-1", exceptions.InvalidArgumentError),
    ],
)
def test_sdk_send_raises_the_matching_exception(
    sdk_app: firebase_admin.App, fid: str, exception_type: type[exceptions.FirebaseError]
) -> None:
    with pytest.raises(exception_type) as raised:
        messaging.send(messaging.Message(fid=fid), app=sdk_app)
    assert type(raised.value) is exception_type


def test_sdk_sync_send_waits_out_a_quota_fault(sdk_app: firebase_admin.App, client: httpx.Client) -> None:
    """urllib3 under the sync path retries a 429 that carries Retry-After, so the second attempt lands."""
    assert messaging.send(messaging.Message(fid="quota-1"), app=sdk_app).startswith(f"projects/{PROJECT}/")
    assert client.get("/_emulator/stats").json()["rejected"] == {"429": 1}


def test_sdk_send_each_async_reports_each_failure(sdk_app: firebase_admin.App, client: httpx.Client) -> None:
    fids = ["device-1", "unregistered-1", "quota-2", "invalid-1"]
    messages = [messaging.Message(fid=fid) for fid in fids]

    async def send_and_close() -> messaging.BatchResponse:
        """The SDK's close() uses a fresh event loop; connections must close on the loop that opened them."""
        try:
            return await messaging.send_each_async(messages, app=sdk_app)
        finally:
            await messaging._get_messaging_service(sdk_app)._async_client.aclose()

    batch = asyncio.run(send_and_close())

    assert batch.success_count == 1
    assert [type(response.exception) for response in batch.responses] == [
        type(None),
        messaging.UnregisteredError,
        messaging.QuotaExceededError,
        exceptions.InvalidArgumentError,
    ]
    assert client.get("/_emulator/messages").json() == [{"fid": "device-1"}]


@pytest.mark.parametrize(
    ("faults", "fid", "exception_type"),
    [
        ({}, "unregistered-1", messaging.UnregisteredError),
        ({}, "invalid-1", exceptions.InvalidArgumentError),
        ({}, "quota-1", messaging.QuotaExceededError),
        ({}, "quota-bare-1", messaging.QuotaExceededError),
        ({}, "sender-mismatch-1", messaging.SenderIdMismatchError),
        ({}, "auth-error-1", messaging.ThirdPartyAuthError),
        ({}, "flaky-1", exceptions.UnavailableError),
        ({429: 1.0}, "device-1", messaging.QuotaExceededError),
        ({503: 1.0}, "device-1", exceptions.UnavailableError),
        ({500: 1.0}, "device-1", exceptions.InternalError),
    ],
)
def test_sdk_error_parser_maps_every_fault(
    faults: dict[int, float], fid: str, exception_type: type[exceptions.FirebaseError]
) -> None:
    """The SDK retries 500/503 with back-off, so its parser is fed the emulator's responses directly."""
    app = create_fcm_app(faults=faults)
    transport = httpx.ASGITransport(app=app)

    async def post() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://fcm.test", headers=signed_in(app)) as http:
            return await http.post(SEND_PATH, json={"message": {"fid": fid}})

    response = asyncio.run(post())
    error = httpx.HTTPStatusError("FCM refused", request=response.request, response=response)

    mapped = _utils.handle_platform_error_from_httpx(error, messaging._MessagingService._build_fcm_error_httpx)

    assert type(mapped) is exception_type
    assert mapped.http_response is response
