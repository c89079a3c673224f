"""Our FCM adapter against the FCM emulator on loopback: firebase-admin's real model, our transport."""

from __future__ import annotations

import asyncio
import functools
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from firebase_admin import exceptions, messaging
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from exstream_push.blocks.fcm import FcmConnection
from exstream_push.connectors.fcm import (
    FCM_SCOPE,
    MAX_PAYLOAD_BYTES,
    MAX_TOPIC_PAYLOAD_BYTES,
    FcmSender,
    PayloadTooLargeError,
    PushRequest,
    build_message,
    encode,
    firebase_app_at,
    parse_retry_after,
)
from exstream_push.connectors.push_errors import PushErrorKind
from exstream_push.quota import NoQuota
from exstream_push.settings import Settings
from exstream_push_dev.emulators.fcm import FcmEmulatorState, create_fcm_app
from exstream_push_dev.emulators.google_oauth import GoogleEmulators
from exstream_push_dev.emulators.server import ServerThread

PROJECT = "test-project"


@pytest.fixture(autouse=True)
def signed_in_as_the_session_service_account(monkeypatch: pytest.MonkeyPatch, google: GoogleEmulators) -> None:
    """Senders find the session's service-account key as application-default credentials do, and sign in at the
    OAuth2 emulator its token_uri names (never at Google)."""
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(google.service_account_file))


@pytest.fixture(scope="module")
def new_fcm_app(google: GoogleEmulators) -> Callable[..., Starlette]:
    """``create_fcm_app`` taking the tokens the session's OAuth2 emulator issues."""
    return functools.partial(create_fcm_app, tokens=google.oauth.app.state.oauth.tokens)


def issued_by(google: GoogleEmulators, authorization: str) -> bool:
    """Whether an Authorization header carries a token the session's OAuth2 emulator issued for FCM."""
    token = authorization.removeprefix("Bearer ")
    return google.oauth.app.state.oauth.tokens.problem(token, {FCM_SCOPE}) is None


class Exchanges:
    """An ASGI wrapper that records, in arrival order, each send's target, answer status and Authorization."""

    def __init__(self, app: ASGIApp, *, drop_retry_after: bool = False) -> None:
        self.app = app
        self.drop_retry_after = drop_retry_after
        self.log: list[tuple[str, int]] = []
        self.authorizations: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].endswith(":send"):
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        message = orjson.loads(body)["message"]
        target = message.get("token") or message.get("fid") or message.get("topic")
        self.authorizations.append(dict(scope["headers"]).get(b"authorization", b"").decode())

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.log.append((target, message["status"]))  # before the client can have its answer
                if self.drop_retry_after:
                    message["headers"] = [(k, v) for k, v in message["headers"] if k.lower() != b"retry-after"]
            await send(message)

        await self.app(scope, replay, capture)

    @property
    def fcm(self) -> FcmEmulatorState:
        return self.app.state.fcm  # type: ignore[attr-defined]

    def of(self, target: str) -> list[int]:
        return [status for sent_to, status in self.log if sent_to == target]


def answering(status: int, error: dict[str, Any]) -> Starlette:
    """A stand-in FCM that refuses every message the same way."""

    async def refuse(request: Any) -> JSONResponse:
        await request.body()
        return JSONResponse({"error": error}, status_code=status)

    return Starlette(routes=[Route("/v1/projects/{project}/messages:send", refuse, methods=["POST"])])


class RecordingSleep:
    """Stands in for asyncio.sleep before retries: records what the sender asked to wait, then yields."""

    def __init__(self, real: bool = False) -> None:
        self.requested: list[float] = []
        self.real = real

    async def __call__(self, seconds: float) -> None:
        self.requested.append(seconds)
        await asyncio.sleep(seconds if self.real else 0)


@pytest.fixture(scope="module")
def logged_fcm(new_fcm_app: Callable[..., Starlette]) -> Iterator[tuple[ServerThread, Exchanges]]:
    exchanges = Exchanges(new_fcm_app())
    with ServerThread(exchanges) as server:
        yield server, exchanges


@pytest.fixture
def emulator(logged_fcm: tuple[ServerThread, Exchanges]) -> tuple[ServerThread, Exchanges]:
    server, exchanges = logged_fcm
    exchanges.fcm.reset()
    exchanges.log.clear()
    exchanges.authorizations.clear()
    return server, exchanges


def notice(token: str | None, **overrides: Any) -> messaging.Message:
    fields: dict[str, Any] = {
        "title": "Your statement is ready",
        "body": "Open the app to view it.",
        "data": {"document_ref": "r-1", "deep_link": "https://portal.example.com/d/r-1"},
        "collapse_key": f"statement-{token or 'broadcast'}",
        "token": token,
    }
    return build_message(**(fields | overrides))


def requests_for(*tokens: str) -> list[PushRequest]:
    return [PushRequest(key=f"key-{token}", message=notice(token)) for token in tokens]


def sender_for(server: ServerThread, **options: Any) -> FcmSender:
    return FcmSender(base_url=server.url, project_id=PROJECT, **options)


def encoded(message: messaging.Message) -> dict[str, Any]:
    return json.loads(encode(message))


# --- the message model --------------------------------------------------------------------------------------------


def test_collapse_key_reaches_android_apns_and_webpush() -> None:
    body = encoded(notice("t-1", collapse_key="stmt-2024-05_A1"))
    assert body["android"]["collapse_key"] == "stmt-2024-05_A1"
    assert body["apns"]["headers"]["apns-collapse-id"] == "stmt-2024-05_A1"
    assert body["webpush"]["headers"]["Topic"] == "stmt-2024-05_A1"


def test_collapse_keys_too_long_or_unsafe_for_a_header_get_short_stable_forms() -> None:
    long_key = "statement/" + "Kontoauszüge-" * 8  # > 64 bytes, and "/" and "ü" are not URL-safe base64
    first, again = encoded(notice("t-1", collapse_key=long_key)), encoded(notice("t-2", collapse_key=long_key))
    other = encoded(notice("t-1", collapse_key=long_key + "x"))
    assert first["android"]["collapse_key"] == long_key
    collapse_id, topic = first["apns"]["headers"]["apns-collapse-id"], first["webpush"]["headers"]["Topic"]
    assert len(collapse_id.encode()) <= 64
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,32}", topic)
    assert (collapse_id, topic) == (
        again["apns"]["headers"]["apns-collapse-id"],
        again["webpush"]["headers"]["Topic"],
    )
    assert collapse_id != other["apns"]["headers"]["apns-collapse-id"]
    assert topic != other["webpush"]["headers"]["Topic"]
    short_but_unsafe = encoded(notice("t-1", collapse_key="stmt:2024/05"))
    assert short_but_unsafe["apns"]["headers"]["apns-collapse-id"] == "stmt:2024/05"
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", short_but_unsafe["webpush"]["headers"]["Topic"])


def test_priority_and_ttl_reach_every_platform() -> None:
    body = encoded(notice("t-1", priority="high", ttl=timedelta(hours=1)))
    assert body["android"]["priority"] == "high"
    assert body["android"]["ttl"] == "3600s"
    assert body["apns"]["headers"]["apns-priority"] == "10"
    assert int(body["apns"]["headers"]["apns-expiration"]) > datetime.now(UTC).timestamp()
    assert body["webpush"]["headers"] == body["webpush"]["headers"] | {"Urgency": "high", "TTL": "3600"}
    assert encoded(notice("t-1"))["apns"]["headers"]["apns-priority"] == "5"
    with pytest.raises(ValueError, match="28 days"):
        notice("t-1", ttl=timedelta(days=29))


def test_targets_token_fid_or_topic_and_nothing_else() -> None:
    by_token = encoded(notice("registration-token"))
    assert by_token["token"] == "registration-token" and "fid" not in by_token
    assert encoded(notice(None, fid="cFid22charsBase64url_-"))["fid"] == "cFid22charsBase64url_-"
    assert encoded(notice(None, topic="ops-alerts"))["topic"] == "ops-alerts"
    with pytest.raises(ValueError, match="exactly one"):
        notice("t-1", topic="ops-alerts")


def test_token_deprecation_warning_is_silenced_for_the_whole_process() -> None:
    """The SDK warns on every token message; under -W error a token message must still build, in any thread."""
    script = (
        "import threading\n"
        "from exstream_push.connectors.fcm import build_message\n"
        "def build(): build_message(token='t', title='T', body='B', data={}, collapse_key='k')\n"
        "build()\n"
        "worker = threading.Thread(target=build); worker.start(); worker.join()\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", script], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_encode_holds_each_message_to_its_targets_size_limit() -> None:
    """FCM takes 4,096 bytes to one device but only 2,048 to a topic (operations alerts go to one)."""
    body = "x" * (MAX_TOPIC_PAYLOAD_BYTES + 100)
    assert MAX_TOPIC_PAYLOAD_BYTES < len(encode(notice("t-1", body=body))) <= MAX_PAYLOAD_BYTES
    with pytest.raises(PayloadTooLargeError, match=r"^payload_too_large: \d+ bytes, over FCM's 2048-byte limit"):
        encode(notice(None, topic="ops-alerts", body=body))
    with pytest.raises(PayloadTooLargeError, match=r"^payload_too_large: \d+ bytes, over FCM's 4096-byte limit"):
        encode(notice("t-1", body="x" * MAX_PAYLOAD_BYTES))
    assert len(encode(notice(None, topic="ops-alerts"))) <= MAX_TOPIC_PAYLOAD_BYTES


def test_an_oversize_topic_message_fails_without_a_request(emulator: tuple[ServerThread, Exchanges]) -> None:
    server, exchanges = emulator
    small = notice(None, topic="ops-small")
    big = notice(None, topic="ops-big", body="x" * MAX_TOPIC_PAYLOAD_BYTES)
    small_result, big_result = sender_for(server).send([PushRequest("small", small), PushRequest("big", big)])
    assert small_result.ok
    assert isinstance(big_result.error, exceptions.InvalidArgumentError) and big_result.attempts == 0
    assert big_result.error_class is not None and big_result.error_class.kind is PushErrorKind.PERMANENT
    assert big_result.reason == "payload_too_large"
    assert exchanges.log == [("ops-small", 200)]


def test_fcm_refuses_an_oversize_message_that_reaches_it(emulator: tuple[ServerThread, Exchanges]) -> None:
    """Bytes are posted as given (render encoded them): FCM's own limit is the last check, per target."""
    server, _ = emulator
    topic_at_device_size = orjson.dumps({"topic": "ops", "data": {"x": "y" * (MAX_TOPIC_PAYLOAD_BYTES + 1)}})
    [result] = sender_for(server).send([PushRequest("big", topic_at_device_size)])
    assert isinstance(result.error, exceptions.InvalidArgumentError) and result.attempts == 1
    assert result.reason == "INVALID_ARGUMENT:message"


def test_what_we_encode_is_what_fcm_receives(emulator: tuple[ServerThread, Exchanges]) -> None:
    server, exchanges = emulator
    message = notice("t-1", priority="high", ttl=timedelta(days=1))
    [result] = sender_for(server).send([PushRequest("k", message)])
    assert result.ok and result.message_id is not None
    assert exchanges.fcm.messages == [encoded(message)]


# --- the transport ------------------------------------------------------------------------------------------------


def test_results_come_back_in_request_order_with_keys_and_ids(
    emulator: tuple[ServerThread, Exchanges], google: GoogleEmulators
) -> None:
    server, exchanges = emulator
    tokens = [f"ok-{n}" for n in range(300)]
    results = sender_for(server, concurrency=16).send(requests_for(*tokens))
    assert [result.key for result in results] == [f"key-{token}" for token in tokens]
    assert all(result.ok and result.attempts == 1 for result in results)
    assert len({result.message_id for result in results}) == 300
    assert sorted(exchanges.log) == sorted((token, 200) for token in tokens)
    [authorization] = set(exchanges.authorizations)  # one token, fetched once, for every message
    assert issued_by(google, authorization)


def test_each_fault_prefix_is_classified_and_only_transient_ones_retried(
    emulator: tuple[ServerThread, Exchanges],
) -> None:
    server, exchanges = emulator
    sleep = RecordingSleep()
    unregistered, invalid, flaky, quota, fine = sender_for(server, sleep=sleep).send(
        requests_for("unregistered-a", "invalid-a", "flaky-a", "quota-a", "fine-a")
    )

    assert isinstance(unregistered.error, messaging.UnregisteredError)
    assert unregistered.error_code == "UNREGISTERED" and unregistered.attempts == 1
    assert unregistered.error_class is not None
    assert unregistered.error_class.kind is PushErrorKind.PERMANENT and unregistered.error_class.deactivate_device

    assert isinstance(invalid.error, exceptions.InvalidArgumentError)
    assert invalid.error_code == "INVALID_ARGUMENT" and invalid.attempts == 1
    assert invalid.error_class is not None
    assert invalid.error_class.kind is PushErrorKind.PERMANENT and not invalid.error_class.deactivate_device

    for retried in (flaky, quota):
        assert retried.ok and retried.attempts == 2 and retried.message_id is not None
    assert fine.ok and fine.attempts == 1

    assert exchanges.of("unregistered-a") == [404]
    assert exchanges.of("invalid-a") == [400]
    assert exchanges.of("flaky-a") == [503, 200]
    assert exchanges.of("quota-a") == [429, 200]
    # Both answered `Retry-After: 1`: each retry waited at least that, plus at most half a first backoff of jitter.
    assert len(sleep.requested) == 2
    assert all(1.0 <= seconds <= 1.25 for seconds in sleep.requested)


def test_without_retry_after_429_waits_a_minute_and_503_backs_off(new_fcm_app: Callable[..., Starlette]) -> None:
    exchanges = Exchanges(new_fcm_app(), drop_retry_after=True)
    sleep = RecordingSleep()
    with ServerThread(exchanges) as server:
        quota, flaky = sender_for(server, sleep=sleep, concurrency=1).send(requests_for("quota-b", "flaky-b"))
    assert quota.ok and flaky.ok and quota.attempts == flaky.attempts == 2
    assert exchanges.of("quota-b") == [429, 200] and exchanges.of("flaky-b") == [503, 200]
    quota_wait, flaky_wait = sleep.requested
    assert 60.0 <= quota_wait <= 60.25
    assert 0.25 <= flaky_wait <= 0.5


def test_sender_id_mismatch_is_a_permanent_failure_of_that_device_alone(
    emulator: tuple[ServerThread, Exchanges],
) -> None:
    server, exchanges = emulator
    sleep = RecordingSleep()
    mismatch, fine = sender_for(server, sleep=sleep).send(requests_for("sender-mismatch-a", "fine-a"))
    assert isinstance(mismatch.error, messaging.SenderIdMismatchError)
    assert mismatch.error_code == "SENDER_ID_MISMATCH" and mismatch.reason == "SENDER_ID_MISMATCH"
    assert mismatch.error_class is not None and mismatch.error_class.kind is PushErrorKind.PERMANENT
    assert not mismatch.error_class.deactivate_device
    assert fine.ok
    assert exchanges.of("sender-mismatch-a") == [403] and sleep.requested == []


def test_third_party_auth_error_alerts_an_operator_without_a_retry(emulator: tuple[ServerThread, Exchanges]) -> None:
    server, exchanges = emulator
    sleep = RecordingSleep()
    [result] = sender_for(server, sleep=sleep).send(requests_for("auth-error-a"))
    assert isinstance(result.error, messaging.ThirdPartyAuthError)
    assert result.error_code == "THIRD_PARTY_AUTH_ERROR" and result.attempts == 1
    assert result.error_class is not None and result.error_class.alert_operator
    assert not result.error_class.deactivate_device
    assert exchanges.of("auth-error-a") == [401] and sleep.requested == []


def test_a_bare_429_from_the_emulator_waits_at_least_a_minute(emulator: tuple[ServerThread, Exchanges]) -> None:
    server, exchanges = emulator
    sleep = RecordingSleep()
    [result] = sender_for(server, sleep=sleep).send(requests_for("quota-bare-a"))
    assert result.ok and result.attempts == 2
    assert exchanges.of("quota-bare-a") == [429, 200]
    [wait] = sleep.requested
    assert 60.0 <= wait <= 60.25


def test_a_field_fcm_refuses_ends_failed_with_its_path_and_no_value(emulator: tuple[ServerThread, Exchanges]) -> None:
    server, exchanges = emulator
    bad_ttl = orjson.dumps({"token": "t-ttl", "android": {"ttl": "ACCT-12345"}})
    [result] = sender_for(server).send([PushRequest("bad", bad_ttl)])
    assert isinstance(result.error, exceptions.InvalidArgumentError) and result.attempts == 1
    assert result.error_class is not None and result.error_class.kind is PushErrorKind.PERMANENT
    assert result.reason == "INVALID_ARGUMENT:message.android.ttl"
    assert exchanges.of("t-ttl") == [400]


def test_the_reason_keeps_field_paths_only_even_when_fcm_quotes_the_value() -> None:
    """Real FCM's descriptions quote the refused value; the reason keeps the path, and drops a path that is not one."""
    description = (
        "Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration), \"ACCT-12345\""
    )
    error = {
        "code": 400,
        "status": "INVALID_ARGUMENT",
        "message": description,
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [
                    {"field": "message.android.ttl", "description": description},
                    {"field": "message.data ACCT-12345 jane@example.com", "description": description},
                ],
            }
        ],
    }
    with ServerThread(answering(400, error)) as server:
        [result] = sender_for(server).send(requests_for("device-1"))
    assert result.reason == "INVALID_ARGUMENT:message.android.ttl"


def test_retry_after_as_seconds_or_http_date() -> None:
    assert parse_retry_after("7") == 7.0
    in_thirty_seconds = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    seconds = parse_retry_after(in_thirty_seconds)
    assert seconds is not None and 28 <= seconds <= 30
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_random_faults_are_all_retried_to_success_or_classified(new_fcm_app: Callable[..., Starlette]) -> None:
    app = new_fcm_app(faults={429: 0.1, 503: 0.1, 500: 0.1}, seed=7)
    exchanges = Exchanges(app)
    sleep = RecordingSleep()
    tokens = [f"device-{n}" for n in range(400)]
    with ServerThread(exchanges) as server:
        results = sender_for(server, sleep=sleep, concurrency=8, max_attempts=4).send(requests_for(*tokens))
    delivered = [result for result in results if result.ok]
    exhausted = [result for result in results if not result.ok]
    assert len(delivered) + len(exhausted) == 400
    assert len(delivered) > 390
    assert any(result.attempts > 1 for result in delivered)
    for result in exhausted:
        assert result.attempts == 4
        assert result.error_class is not None and result.error_class.kind is PushErrorKind.RETRY
        assert result.error_code in {"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL"}
    # Every attempt reached the wire exactly once, and nothing was delivered twice.
    assert sum(result.attempts for result in results) == len(exchanges.log)
    accepted = [message["token"] for message in app.state.fcm.messages]
    assert sorted(accepted) == sorted(result.key.removeprefix("key-") for result in delivered)


@pytest.mark.parametrize(
    ("status", "error", "sdk_exception"),
    [
        (
            401,
            {
                "code": 401,
                "status": "UNAUTHENTICATED",
                "message": "Auth error from APNS or Web Push Service",
                "details": [
                    {
                        "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                        "errorCode": "THIRD_PARTY_AUTH_ERROR",
                    }
                ],
            },
            messaging.ThirdPartyAuthError,
        ),
        (
            403,
            {"code": 403, "status": "PERMISSION_DENIED", "message": "Permission denied on project."},
            exceptions.PermissionDeniedError,
        ),
    ],
)
def test_configuration_errors_are_not_retried(
    status: int, error: dict[str, Any], sdk_exception: type[exceptions.FirebaseError]
) -> None:
    exchanges = Exchanges(answering(status, error))
    sleep = RecordingSleep()
    with ServerThread(exchanges) as server:
        results = sender_for(server, sleep=sleep).send(requests_for("device-1", "device-2"))
    for result in results:
        assert isinstance(result.error, sdk_exception) and result.attempts == 1
        assert result.error_class is not None
        assert result.error_class.alert_operator and not result.error_class.deactivate_device
    assert sorted(exchanges.log) == [("device-1", status), ("device-2", status)]
    assert sleep.requested == []


def test_connection_errors_are_retried_then_reported(new_fcm_app: Callable[..., Starlette]) -> None:
    with ServerThread(new_fcm_app()) as server:
        closed_url = server.url  # nothing listens here once the server has stopped
    sleep = RecordingSleep()
    sender = FcmSender(base_url=closed_url, project_id=PROJECT, max_attempts=3, sleep=sleep)
    [result] = sender.send(requests_for("device-1"))
    assert isinstance(result.error, exceptions.UnavailableError)
    assert result.error_class is not None and result.error_class.retryable
    assert result.attempts == 3 and len(sleep.requested) == 2


def test_outcomes_are_handed_over_in_groups_while_others_are_in_flight(
    emulator: tuple[ServerThread, Exchanges],
) -> None:
    server, exchanges = emulator
    state = exchanges.fcm
    tokens = [f"ok-{n}" for n in range(180)] + ["flaky-late"]
    groups: list[list[str]] = []
    flaky_delivered_at_group: list[bool] = []

    def record(results: Any) -> None:
        groups.append([result.key for result in results])
        flaky_delivered_at_group.append(any(m.get("token") == "flaky-late" for m in state.messages))

    # The flaky message really waits out its Retry-After (1 s); everything else finishes well before.
    sender = sender_for(server, concurrency=8, sleep=RecordingSleep(real=True))
    results = sender.send(requests_for(*tokens), on_results=record, flush_size=50)

    assert all(len(group) <= 50 for group in groups)
    assert sorted(key for group in groups for key in group) == sorted(result.key for result in results)
    assert groups[-1] == ["key-flaky-late"]
    assert flaky_delivered_at_group.count(False) == len(groups) - 1
    # 180 is no multiple of 50: some group came by the clock (every 0.2 s), while the flaky one still waited.
    assert sum(map(len, groups[:-1])) == 180
    assert any(len(group) < 50 for group in groups[:-1])


def test_a_failing_recorder_stops_the_send(new_fcm_app: Callable[..., Starlette]) -> None:
    def broken_ledger(results: Any) -> None:
        raise RuntimeError("ledger unavailable")

    exchanges = Exchanges(new_fcm_app())
    with ServerThread(exchanges) as server, pytest.raises(RuntimeError, match="ledger unavailable"):
        sender_for(server, concurrency=2).send(
            requests_for(*(f"ok-{n}" for n in range(200))), on_results=broken_ledger, flush_size=1
        )
    assert len(exchanges.log) < 10  # abandoned in flight, not sent to the end


def test_invalid_messages_fail_alone_without_a_request(emulator: tuple[ServerThread, Exchanges]) -> None:
    server, exchanges = emulator
    broken = notice("t-broken")
    broken.data = {"amount": 12}  # the SDK's encoder refuses non-string data values
    good, bad = sender_for(server).send([PushRequest("good", notice("t-good")), PushRequest("bad", broken)])
    assert good.ok
    assert isinstance(bad.error, exceptions.InvalidArgumentError) and bad.attempts == 0
    assert [target for target, _ in exchanges.log] == ["t-good"]


# --- parity with firebase-admin's own sender ----------------------------------------------------------------------


def test_errors_match_what_firebase_admin_itself_reports(emulator: tuple[ServerThread, Exchanges]) -> None:
    server, _ = emulator
    tokens = ("unregistered-p", "invalid-p", "fine-p")
    ours = sender_for(server).send(requests_for(*tokens))

    async def send_with_the_sdk() -> messaging.BatchResponse:
        async with firebase_app_at(server.url, PROJECT, name="parity-test") as app:
            return await messaging.send_each_async([notice(token) for token in tokens], app=app)

    sdk = asyncio.run(send_with_the_sdk())
    for our_result, sdk_response in zip(ours, sdk.responses, strict=True):
        assert type(our_result.error) is type(sdk_response.exception)
        if sdk_response.exception is not None:
            assert our_result.error is not None
            assert our_result.error.code == sdk_response.exception.code
            assert str(our_result.error) == str(sdk_response.exception)
    assert sdk.success_count == 1 and sdk.responses[2].message_id.startswith(f"projects/{PROJECT}/messages/")


# --- credentials --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def refusing_token_server() -> Iterator[tuple[ServerThread, list[str]]]:
    """A token endpoint that rejects every key, as Google does a deleted one."""
    requested: list[str] = []

    async def refuse(request: Any) -> JSONResponse:
        await request.body()
        requested.append(request.url.path)
        return JSONResponse({"error": "invalid_grant", "error_description": "Invalid JWT."}, 400)

    with ServerThread(Starlette(routes=[Route("/refused", refuse, methods=["POST"])])) as server:
        yield server, requested


def test_a_service_account_token_is_fetched_once_and_sent_with_every_message(
    emulator: tuple[ServerThread, Exchanges], google: GoogleEmulators
) -> None:
    server, exchanges = emulator
    info = json.loads(google.service_account_file.read_text())
    tokens = google.oauth.app.state.oauth.tokens
    issued_before = tokens.issued
    connection = FcmConnection(url=server.url, project_id=PROJECT, service_account_info=info)
    sender = connection.get_sender(quota=NoQuota())
    first = sender.send(requests_for(*(f"ok-{n}" for n in range(100))))
    second = sender.send(requests_for("ok-again"))
    assert all(result.ok for result in [*first, *second])
    assert tokens.issued == issued_before + 1
    [authorization] = set(exchanges.authorizations)
    assert issued_by(google, authorization)


def test_a_refused_service_account_is_a_configuration_error_asked_once(
    emulator: tuple[ServerThread, Exchanges],
    refusing_token_server: tuple[ServerThread, list[str]],
    google: GoogleEmulators,
) -> None:
    server, exchanges = emulator
    token_url, requested = refusing_token_server
    requested.clear()
    refused_key = json.loads(google.service_account_file.read_text()) | {"token_uri": f"{token_url.url}/refused"}
    connection = FcmConnection(url=server.url, project_id=PROJECT, service_account_info=refused_key)
    sender = connection.get_sender(quota=NoQuota())  # no shared quota: this test needs no Prefect server
    results = sender.send(requests_for(*(f"ok-{n}" for n in range(50))))
    for result in results:
        assert isinstance(result.error, exceptions.UnauthenticatedError) and result.attempts == 1
        assert result.error_class is not None and result.error_class.alert_operator
    assert requested == ["/refused"]
    assert exchanges.log == []


def test_google_application_credentials_is_honoured(
    emulator: tuple[ServerThread, Exchanges],
    google: GoogleEmulators,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, exchanges = emulator
    key_file = tmp_path / "key.json"
    key_file.write_text(google.service_account_file.read_text())
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    [result] = sender_for(server).send(requests_for("ok-1"))
    assert result.ok
    [authorization] = exchanges.authorizations
    assert issued_by(google, authorization)


def test_a_connection_has_one_sender_per_process_for_every_batch(google: GoogleEmulators) -> None:
    """So a batch starts with the access token and the in-flight limit the previous one left."""
    info = json.loads(google.service_account_file.read_text())
    url = "http://127.0.0.1:9/"
    sender = FcmConnection(url=url, project_id="p-shared", service_account_info=info).get_sender()
    assert FcmConnection(url=url, project_id="p-shared", service_account_info=info).get_sender() is sender
    other_account = {**info, "client_email": f"other-{info['client_email']}"}
    for other in (
        FcmConnection(url=url, project_id="p-other", service_account_info=info),
        FcmConnection(url=url, project_id="p-shared", service_account_info=other_account),  # secrets tell apart
        FcmConnection(url=url, project_id="p-shared", service_account_info=info, max_concurrency=256),
    ):
        assert other.get_sender() is not sender
    # A caller's own quota gets a sender of its own.
    assert FcmConnection(url=url, project_id="p-shared", service_account_info=info).get_sender(NoQuota()) is not sender


def test_settings_and_block_configure_the_same_sender() -> None:
    settings = Settings(fcm_url="http://127.0.0.1:9/", fcm_project="p-1", fcm_concurrency=7, fcm_max_attempts=2)
    sender = FcmConnection.from_settings(settings).get_sender()
    assert sender.url == "http://127.0.0.1:9/v1/projects/p-1/messages:send"
    assert (sender.concurrency, sender.max_attempts) == (7, 2)
    # A block left at its defaults is configured as default settings are: one set of defaults.
    block, defaults = FcmConnection(project_id="p-1"), Settings.model_fields
    assert (block.url, block.concurrency, block.max_attempts) == tuple(
        defaults[name].default for name in ("fcm_url", "fcm_concurrency", "fcm_max_attempts")
    )
