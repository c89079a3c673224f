"""The APNs sender over HTTP/2 and TLS against the APNs emulator on loopback, and the emulator's own strictness."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from exstream_push.blocks.apns import ApnsConnection
from exstream_push.connectors.apns import (
    MAX_PAYLOAD_BYTES,
    MIN_REUSE_SECONDS,
    PRODUCTION_URL,
    RENEW_AFTER_SECONDS,
    SANDBOX_URL,
    ApnsKeyInvalid,
    ApnsNotConfigured,
    ApnsNotification,
    ApnsSender,
    apns_payload,
    apns_url,
    load_signing_key,
    provider_token,
    validate_device_token,
)
from exstream_push.connectors.fcm import apns_collapse_id
from exstream_push.connectors.push import PushRequest, PushResult
from exstream_push.connectors.push_errors import PushErrorKind, PushProvider
from exstream_push.connectors.tls import client_ssl_context
from exstream_push.quota import NoQuota
from exstream_push.settings import Settings
from exstream_push.status import QuarantineReason
from exstream_push_dev.emulators.apns import (
    PROVIDER_TOKEN_MAX_AGE,
    RETRY_AFTER_SECONDS,
    ApnsEmulator,
    ApnsSigningKey,
    new_signing_key,
)

PAYLOAD = apns_payload("Your statement is ready", "Open the app to read it", {"doc_type": "statement", "ref": "r1"})


def token(prefix: str = "", number: int = 0) -> str:
    """A valid 64-hex-character device token starting with ``prefix`` (the emulator's fault prefixes are hex)."""
    return prefix + f"{number:0{64 - len(prefix)}x}"


def notification(device_token: str, **fields: Any) -> ApnsNotification:
    return ApnsNotification(
        device_token=device_token, payload=fields.pop("payload", PAYLOAD), collapse_id="c", **fields
    )


class RecordingSleep:
    """Records what the driver asks to wait, and does not wait: no test depends on a clock."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class Clock:
    """A wall clock a test sets: the sender reads the provider token's ``iat`` and age from it."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def cleared(apns: ApnsEmulator) -> Iterator[None]:
    apns.state.reset()
    yield


@pytest.fixture
def key(apns: ApnsEmulator, tmp_path: Path) -> ApnsSigningKey:
    """A signing key of this test's own, known to the emulator: provider tokens are shared per key in a process,
    so counting signatures needs a key no other test signed with."""
    fresh = new_signing_key(tmp_path / "keys")
    apns.state.register(fresh)
    return fresh


def sender_for(apns: ApnsEmulator, key: ApnsSigningKey, **options: Any) -> ApnsSender:
    return ApnsSender(
        team_id=key.team_id,
        key_id=key.key_id,
        signing_key=key.pem,
        bundle_id=apns.bundle_id,
        url=apns.url,
        ca_file=apns.ca_file,
        **options,
    )


def bearer(key: ApnsSigningKey, issued_at: float | None = None, signing_key: Any = None) -> str:
    claims = {"iss": key.team_id, "iat": int(time.time() if issued_at is None else issued_at)}
    signed = jwt.encode(
        claims, signing_key or load_signing_key(key.pem), algorithm="ES256", headers={"kid": key.key_id}
    )
    return f"bearer {signed}"


def post_raw(
    apns: ApnsEmulator,
    device_token: str,
    headers: dict[str, str],
    body: bytes = PAYLOAD,
    *,
    http2: bool = True,
) -> httpx.Response:
    """One request by hand, with our TLS trust: what the emulator answers to what the sender would never send."""
    with httpx.Client(http1=not http2, http2=http2, verify=client_ssl_context(apns.ca_file, http2=http2)) as client:
        return client.post(f"{apns.url}/3/device/{device_token}", content=body, headers=headers)


def good_headers(apns: ApnsEmulator, key: ApnsSigningKey) -> dict[str, str]:
    return {"authorization": bearer(key), "apns-topic": apns.bundle_id, "apns-push-type": "alert"}


# The sender against the emulator.


def test_an_accepted_notification_arrives_with_every_header_as_sent(apns: ApnsEmulator, key: ApnsSigningKey) -> None:
    collapse_id = apns_collapse_id("statement-ready:" + "k" * 80)  # a long key becomes a digest of ≤ 64 bytes
    sent = ApnsNotification(token("ab", 1), PAYLOAD, collapse_id, priority=5, expiration=1_900_000_000)
    [result] = sender_for(apns, key).send([PushRequest("key-1", sent)])

    assert result.ok and result.provider is PushProvider.APNS and result.attempts == 1
    [received] = httpx.get(f"{apns.url}/_emulator/messages", verify=client_ssl_context(apns.ca_file)).json()
    assert received["device_token"] == sent.device_token
    assert received["payload"] == orjson.loads(PAYLOAD)
    assert received["headers"] == {
        "apns-topic": apns.bundle_id,
        "apns-push-type": "alert",
        "apns-priority": "5",
        "apns-expiration": "1900000000",
        "apns-collapse-id": collapse_id,
        "apns-id": result.message_id,
    }


def test_the_same_message_keeps_its_apns_id_across_sends(apns: ApnsEmulator, key: ApnsSigningKey) -> None:
    """The id is derived from the idempotency key: a repeat after a crash is recognisably the same message."""
    sender = sender_for(apns, key)
    [first] = sender.send([PushRequest("key-1", notification(token("ab", 1)))])
    [again] = sender.send([PushRequest("key-1", notification(token("ab", 1)))])
    [other] = sender.send([PushRequest("key-2", notification(token("ab", 1)))])
    assert first.message_id == again.message_id != other.message_id


def test_one_provider_token_signs_many_messages_and_batches(apns: ApnsEmulator, key: ApnsSigningKey) -> None:
    """The send task builds a sender per batch: the token is the process's, signed once, not per sender or
    request (Apple answers TooManyProviderTokenUpdates to that)."""
    batches = [[PushRequest(f"b{b}-{i}", notification(token("ab", b * 1000 + i))) for i in range(150)] for b in (1, 2)]
    senders = [sender_for(apns, key, concurrency=32) for _ in batches]
    results = [result for sender, batch in zip(senders, batches, strict=True) for result in sender.send(batch)]

    assert all(result.ok for result in results) and len(results) == 300
    assert senders[0].token_signatures == senders[1].token_signatures == 1
    assert apns.state.stats()["provider_tokens"] == 1 and apns.state.accepted == 300


def test_the_provider_token_is_renewed_after_45_minutes_not_before() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    tokens = provider_token("TEAM123456", "RENEWTEST1", pem)
    first = tokens.current(1_000_000.0)
    assert tokens.current(1_000_000.0 + RENEW_AFTER_SECONDS - 1) is first
    renewed = tokens.current(1_000_000.0 + RENEW_AFTER_SECONDS)
    assert renewed.value != first.value and tokens.signatures == 2
    assert MIN_REUSE_SECONDS <= RENEW_AFTER_SECONDS < PROVIDER_TOKEN_MAX_AGE


def test_fault_tokens_are_classified_by_the_one_table(apns: ApnsEmulator, key: ApnsSigningKey) -> None:
    sleep = RecordingSleep()
    requests = [
        PushRequest("dead", notification(token("dead"))),
        PushRequest("bad", notification(token("bad0"))),
        PushRequest("flaky", notification(token("fa11"))),
    ]
    dead, bad, flaky = sender_for(apns, key, sleep=sleep).send(requests)

    assert dead.error_code == "Unregistered" and dead.error_class is not None and dead.error_class.deactivate_device
    assert dead.attempts == 1 and dead.reason == "Unregistered" and dead.provider is PushProvider.APNS
    assert bad.error_code == "BadDeviceToken" and bad.error_class is not None and bad.error_class.deactivate_device
    assert flaky.ok and flaky.attempts == 2 and len(sleep.waits) == 1  # 503, then accepted
    assert apns.state.rejected == {"Unregistered": 1, "BadDeviceToken": 1, "ServiceUnavailable": 1}


def test_too_many_requests_is_retried_after_the_pause_apns_asks_for(apns: ApnsEmulator, key: ApnsSigningKey) -> None:
    sleep = RecordingSleep()
    [throttled] = sender_for(apns, key, sleep=sleep).send([PushRequest("throttled", notification(token("0429")))])
    assert throttled.ok and throttled.attempts == 2
    assert len(sleep.waits) == 1 and sleep.waits[0] >= RETRY_AFTER_SECONDS
    assert apns.state.rejected == {"TooManyRequests": 1}


def test_an_expired_provider_token_is_renewed_once_when_old_enough_else_an_operators_problem(
    apns: ApnsEmulator, key: ApnsSigningKey
) -> None:
    """A token APNs calls expired although we signed it just now means our clock is wrong: re-signing cannot cure
    that, so nothing is marked failed and an operator is told. One at least 20 minutes old is re-signed, once."""
    clock = Clock(time.time() - PROVIDER_TOKEN_MAX_AGE - 100)  # our clock runs over an hour behind
    sender = sender_for(apns, key, clock=clock)
    [refused] = sender.send([PushRequest("k1", notification(token("ab", 1)))])
    assert refused.error_code == "ExpiredProviderToken" and refused.attempts == 1
    assert refused.error_class is not None and refused.error_class.kind is PushErrorKind.CONFIGURATION
    assert sender.token_signatures == 1

    clock.now += MIN_REUSE_SECONDS + 300  # the same token, now 25 minutes old by our clock, still expired by Apple's
    [accepted] = sender.send([PushRequest("k2", notification(token("ab", 2)))])
    assert accepted.ok and accepted.attempts == 2
    assert sender.token_signatures == 2
    assert apns.state.rejected == {"ExpiredProviderToken": 2}


def test_an_oversize_payload_is_unsendable_and_no_request_is_made(apns: ApnsEmulator, key: ApnsSigningKey) -> None:
    oversize = b'{"aps":{"alert":"' + b"x" * (MAX_PAYLOAD_BYTES - 19) + b'"}}'
    assert len(oversize) == MAX_PAYLOAD_BYTES + 1
    [result] = sender_for(apns, key).send([PushRequest("big", notification(token("ab"), payload=oversize))])
    assert result.reason == QuarantineReason.PAYLOAD_TOO_LARGE.value and result.error_code == "PayloadTooLarge"
    assert result.error_class is not None and result.error_class.kind is PushErrorKind.PERMANENT
    assert result.attempts == 0 and apns.state.requests == 0


def test_a_token_that_is_not_hex_is_never_put_in_a_url(apns: ApnsEmulator, key: ApnsSigningKey) -> None:
    [result] = sender_for(apns, key).send([PushRequest("odd", notification("../../_emulator/messages"))])
    assert result.error_code == "BadDeviceToken" and result.attempts == 0
    assert result.error_class is not None and result.error_class.deactivate_device
    assert apns.state.requests == 0


def test_the_emulator_is_trusted_only_through_ca_file(apns: ApnsEmulator, key: ApnsSigningKey) -> None:
    untrusting = ApnsSender(
        team_id=key.team_id,
        key_id=key.key_id,
        signing_key=key.pem,
        bundle_id=apns.bundle_id,
        url=apns.url,
        max_attempts=1,
    )
    [result] = untrusting.send([PushRequest("k", notification(token("ab")))])
    assert not result.ok and result.error_code is None and result.reason == "unreachable"
    assert isinstance(result.error, Exception) and result.error_class is not None and result.error_class.retryable
    assert apns.state.requests == 0  # the TLS handshake failed: nothing reached the emulator
    [trusted] = sender_for(apns, key).send([PushRequest("k", notification(token("ab")))])
    assert trusted.ok


def test_results_are_flushed_while_the_batch_runs(apns: ApnsEmulator, key: ApnsSigningKey) -> None:
    groups: list[list[PushResult]] = []
    requests = [PushRequest(f"k{i}", notification(token("ab", i))) for i in range(40)]
    results = sender_for(apns, key, concurrency=8).send(
        requests, on_results=lambda group: groups.append([*group]), flush_size=10
    )
    assert [result.key for result in results] == [request.key for request in requests]
    assert sorted(result.key for group in groups for result in group) == sorted(r.key for r in requests)
    assert all(len(group) <= 10 for group in groups)


# The emulator is as strict as Apple.


def test_http_1_1_is_refused(apns: ApnsEmulator, key: ApnsSigningKey) -> None:
    answer = post_raw(apns, token("ab"), good_headers(apns, key), http2=False)
    assert answer.http_version == "HTTP/1.1" and answer.status_code == 505
    assert apns.state.accepted == 0


def test_a_provider_token_signed_by_another_key_is_invalid(apns: ApnsEmulator, key: ApnsSigningKey) -> None:
    impostor = ec.generate_private_key(ec.SECP256R1())
    headers = {**good_headers(apns, key), "authorization": bearer(key, signing_key=impostor)}
    answer = post_raw(apns, token("ab"), headers)
    assert answer.status_code == 403 and answer.json() == {"reason": "InvalidProviderToken"}
    assert answer.http_version == "HTTP/2" and answer.headers["apns-id"]


@pytest.mark.parametrize(
    ("issued_ago", "reason"),
    [(PROVIDER_TOKEN_MAX_AGE + 60, "ExpiredProviderToken"), (-600, "InvalidProviderToken")],
    ids=["over-an-hour-old", "from-the-future"],
)
def test_the_provider_token_age_is_checked(
    apns: ApnsEmulator, key: ApnsSigningKey, issued_ago: int, reason: str
) -> None:
    headers = {**good_headers(apns, key), "authorization": bearer(key, issued_at=time.time() - issued_ago)}
    answer = post_raw(apns, token("ab"), headers)
    assert answer.status_code == 403 and answer.json()["reason"] == reason


def test_re_signing_sooner_than_20_minutes_on_one_connection_is_refused(
    apns: ApnsEmulator, key: ApnsSigningKey
) -> None:
    async def two_tokens() -> list[httpx.Response]:
        verify = client_ssl_context(apns.ca_file, http2=True)
        async with httpx.AsyncClient(http1=False, http2=True, verify=verify) as client:
            answers = []
            for issued_at in (time.time() - 120, time.time()):
                headers = {**good_headers(apns, key), "authorization": bearer(key, issued_at=issued_at)}
                answers.append(
                    await client.post(f"{apns.url}/3/device/{token('ab')}", content=PAYLOAD, headers=headers)
                )
            return answers

    first, second = asyncio.run(two_tokens())
    assert first.status_code == 200
    assert second.status_code == 429 and second.json() == {"reason": "TooManyProviderTokenUpdates"}


@pytest.mark.parametrize(
    ("change", "status", "reason"),
    [
        ({"apns-topic": None}, 400, "MissingTopic"),
        ({"apns-topic": "not a bundle id"}, 400, "BadTopic"),
        ({"apns-topic": "com.example.someone-else"}, 400, "TopicDisallowed"),
        ({"apns-push-type": "banner"}, 400, "InvalidPushType"),
        ({"apns-priority": "7"}, 400, "BadPriority"),
        ({"apns-push-type": "background", "apns-priority": "10"}, 400, "BadPriority"),
        ({"apns-expiration": "tomorrow"}, 400, "BadExpirationDate"),
        ({"apns-collapse-id": "c" * 65}, 400, "BadCollapseId"),
        ({"apns-id": "not-a-uuid"}, 400, "BadMessageId"),
        ({"authorization": None}, 403, "MissingProviderToken"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_headers_are_checked(
    apns: ApnsEmulator, key: ApnsSigningKey, change: dict[str, str | None], status: int, reason: str
) -> None:
    headers = {**good_headers(apns, key), **change}
    answer = post_raw(apns, token("ab"), {name: value for name, value in headers.items() if value is not None})
    assert (answer.status_code, answer.json()["reason"]) == (status, reason)


@pytest.mark.parametrize(
    ("device_token", "body", "status", "reason"),
    [
        (token("ab"), b'{"aps":{"alert":"' + b"x" * (MAX_PAYLOAD_BYTES - 19) + b'"}}', 413, "PayloadTooLarge"),
        ("zz" * 32, PAYLOAD, 400, "BadDeviceToken"),
        (token("ab")[:-2], PAYLOAD, 400, "BadDeviceToken"),
        (token("ab"), b"", 400, "PayloadEmpty"),
        (token("ab"), b'{"alert": "no aps"}', 400, "BadPayload"),
        (token("ab"), b'{"aps": {"badge": 1}}', 400, "BadPayload"),  # an alert push without an alert
    ],
    ids=["4097-bytes", "not-hex", "short", "empty", "no-aps", "alert-without-alert"],
)
def test_device_token_and_payload_are_checked(
    apns: ApnsEmulator, key: ApnsSigningKey, device_token: str, body: bytes, status: int, reason: str
) -> None:
    answer = post_raw(apns, device_token, good_headers(apns, key), body)
    assert (answer.status_code, answer.json()["reason"]) == (status, reason)
    assert apns.state.accepted == 0


def test_an_unregistered_token_says_since_when_and_the_id_is_echoed(apns: ApnsEmulator, key: ApnsSigningKey) -> None:
    apns_id = "1b6b7d2e-9f0a-4c1d-8e2f-3a4b5c6d7e8f"
    answer = post_raw(apns, token("dead"), {**good_headers(apns, key), "apns-id": apns_id})
    assert answer.status_code == 410 and answer.json()["reason"] == "Unregistered"
    assert isinstance(answer.json()["timestamp"], int) and answer.headers["apns-id"] == apns_id


def test_messages_can_be_listed_and_cleared(apns: ApnsEmulator, key: ApnsSigningKey) -> None:
    sender_for(apns, key).send([PushRequest("k", notification(token("ab")))])
    verify = client_ssl_context(apns.ca_file)
    assert len(httpx.get(f"{apns.url}/_emulator/messages", verify=verify).json()) == 1
    assert httpx.delete(f"{apns.url}/_emulator/messages", verify=verify).status_code == 204
    assert httpx.get(f"{apns.url}/_emulator/messages", verify=verify).json() == []


# The model, the settings and the block.


@pytest.mark.parametrize(
    ("device_token", "problem"),
    [
        (token("ab"), None),
        (token("AB"), None),
        ("ab" * 50, None),
        ("xyz" + token()[3:], "not hexadecimal"),
        ("", "not hexadecimal"),
        (token()[:-1], "63 hex characters, expected an even number from 64 to 200"),
        ("ab" * 16, "32 hex characters, expected an even number from 64 to 200"),
    ],
)
def test_device_tokens_are_validated(device_token: str, problem: str | None) -> None:
    assert validate_device_token(device_token) == problem


def test_the_payload_keeps_data_beside_aps_and_refuses_a_key_named_aps() -> None:
    assert orjson.loads(apns_payload("T", "B", {"ref": "r"})) == {
        "aps": {"alert": {"title": "T", "body": "B"}},
        "ref": "r",
    }
    with pytest.raises(ValueError, match="aps"):
        apns_payload("T", "B", {"aps": "x"})


def test_urls_by_environment() -> None:
    assert apns_url("production") == PRODUCTION_URL == "https://api.push.apple.com"
    assert apns_url("sandbox") == SANDBOX_URL == "https://api.sandbox.push.apple.com"
    assert apns_url("sandbox", "https://127.0.0.1:8093/") == "https://127.0.0.1:8093"


def test_a_signing_key_that_is_not_p256_is_a_configuration_error() -> None:
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ApnsKeyInvalid, match="P-256"):
        load_signing_key(rsa_pem)
    with pytest.raises(ApnsKeyInvalid) as unreadable:
        load_signing_key("not a key")
    assert unreadable.value.exit_code == 78


def test_the_block_from_settings_sends_to_the_emulator(
    apns: ApnsEmulator, key: ApnsSigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXSTREAM_PUSH_CA_FILE", str(apns.ca_file))  # TLS trust is the sending worker's
    settings = Settings(
        apns_team_id=key.team_id,
        apns_key_id=key.key_id,
        apns_key_file=key.key_file,
        apns_bundle_id=apns.bundle_id,
        apns_environment="sandbox",
        apns_url=apns.url,
        apns_concurrency=4,
    )
    sender = ApnsConnection.from_settings(settings).get_sender(quota=NoQuota())
    assert (sender.url, sender.concurrency, sender.max_concurrency) == (apns.url, 4, 512)
    [result] = sender.send([PushRequest("k", notification(token("ab")))])
    assert result.ok

    inline = ApnsConnection(
        team_id=key.team_id, key_id=key.key_id, bundle_id=apns.bundle_id, signing_key=key.pem.decode(), url=apns.url
    )
    [again] = inline.get_sender(quota=NoQuota()).send([PushRequest("k2", notification(token("ab", 2)))])
    assert again.ok


def test_the_block_needs_exactly_one_key_source_and_settings_name_what_is_missing(key: ApnsSigningKey) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ApnsConnection(team_id="T", key_id="K", bundle_id="com.example.app")
    with pytest.raises(ValueError, match="exactly one"):
        ApnsConnection(
            team_id="T", key_id="K", bundle_id="com.example.app", signing_key="pem", signing_key_file=key.key_file
        )
    with pytest.raises(ApnsNotConfigured) as missing:
        ApnsConnection.from_settings(Settings(apns_team_id="T", apns_bundle_id="com.example.app"))
    assert "EXSTREAM_PUSH_APNS_KEY_ID, EXSTREAM_PUSH_APNS_KEY_FILE" in str(missing.value)
    assert ApnsConnection(team_id="T", key_id="K", bundle_id="b.c", signing_key="x").environment == "production"
