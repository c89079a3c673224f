"""Web Push end to end: our sender (pywebpush's encryption, py-vapid's tokens, aiohttp) against the Web Push
emulator over TLS, which verifies the VAPID token with its own code and decrypts what the browser would get."""

from __future__ import annotations

import base64
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid
from pydantic import SecretStr
from pywebpush import WebPusher

from exstream_push.blocks.webpush import WebPushConnection
from exstream_push.connectors.fcm import webpush_topic
from exstream_push.connectors.push import PushRequest
from exstream_push.connectors.push_errors import PushProvider
from exstream_push.connectors.webpush import (
    MAX_PLAINTEXT_BYTES,
    VapidKeyMissing,
    VapidTokens,
    WebPushNotification,
    WebPushSender,
    load_vapid_key,
    validate_subscription,
)
from exstream_push.connectors.webpush.vapid import RENEW_AHEAD_SECONDS, TOKEN_LIFETIME_SECONDS
from exstream_push.quota import NoQuota
from exstream_push.settings import Settings
from exstream_push_dev.emulators.server import ServerThread
from exstream_push_dev.emulators.webpush import b64url_encode, webpush_emulator

SUBJECT = "mailto:operations@example.invalid"


@pytest.fixture(scope="module")
def webpush_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with webpush_emulator(tmp_path_factory.mktemp("webpush-tls")) as server:
        yield server


@pytest.fixture
def emulator(webpush_server: ServerThread) -> Iterator[httpx.Client]:
    """A client of the emulator's control endpoints, trusting only its development authority; messages and
    counters cleared before each test."""
    assert webpush_server.tls is not None
    trust = ssl.create_default_context(cafile=str(webpush_server.tls.ca_file))
    with httpx.Client(base_url=webpush_server.url, verify=trust) as client:
        client.delete("/_emulator/messages").raise_for_status()
        yield client


def subscribe(client: httpx.Client, **options: Any) -> dict[str, Any]:
    response = client.post("/_emulator/subscriptions", json=options)
    assert response.status_code == 201, response.text
    return response.json()


def new_key() -> Vapid:
    key = Vapid()
    key.generate_keys()
    return key


def public_key_of(key: Vapid) -> str:
    return b64url_encode(
        key.public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )


def sender_for(server: ServerThread, key: Vapid | None = None, **options: Any) -> WebPushSender:
    assert server.tls is not None
    return WebPushSender(
        vapid_private_key=key or new_key(), vapid_subject=SUBJECT, ca_file=server.tls.ca_file, **options
    )


def notification(subscription: dict[str, Any], payload: bytes = b'{"document_type":"statement"}', **options: Any):
    return WebPushNotification(
        endpoint=subscription["endpoint"],
        p256dh=subscription["keys"]["p256dh"],
        auth=subscription["keys"]["auth"],
        payload=payload,
        topic=options.pop("topic", webpush_topic("key-1")),
        **options,
    )


def stats(client: httpx.Client) -> dict[str, Any]:
    return client.get("/_emulator/stats").json()


def test_the_browser_decrypts_exactly_what_was_sent_with_the_rfc_8030_headers(
    webpush_server: ServerThread, emulator: httpx.Client
) -> None:
    subscription = subscribe(emulator)
    payload = orjson.dumps({"document_type": "statement", "document_ref": "r-1", "deep_link": "https://p/x"})
    topic = webpush_topic("a key longer than thirty-two characters, with spaces")
    [result] = sender_for(webpush_server).send(
        [PushRequest("k-1", notification(subscription, payload, topic=topic, urgency="high", ttl=3600))]
    )
    assert result.ok and result.attempts == 1 and result.provider is PushProvider.WEBPUSH
    [message] = emulator.get("/_emulator/messages").json()
    assert message["payload"] == orjson.loads(payload)
    assert message["endpoint"] == subscription["endpoint"]
    assert message["headers"] == {"ttl": "3600", "urgency": "high", "topic": topic, "content-encoding": "aes128gcm"}
    assert result.message_id is not None and result.message_id.startswith(f"{webpush_server.url}/message/")


def test_a_payload_of_exactly_one_record_is_delivered_and_one_byte_more_is_refused_unsent(
    webpush_server: ServerThread, emulator: httpx.Client
) -> None:
    subscription = subscribe(emulator)
    largest = b'"' + b"x" * (MAX_PLAINTEXT_BYTES - 2) + b'"'
    fits, too_large = sender_for(webpush_server).send(
        [
            PushRequest("fits", notification(subscription, largest)),
            PushRequest("big", notification(subscription, largest + b" ")),
        ]
    )
    assert fits.ok
    assert not too_large.ok and too_large.attempts == 0
    assert too_large.reason == too_large.error_code == "payload_too_large"
    assert too_large.error_class is not None and not too_large.error_class.retryable
    assert not too_large.error_class.deactivate_device
    assert stats(emulator)["requests"] == 1


def test_one_vapid_token_is_signed_per_push_service_for_many_messages_and_batches(
    webpush_server: ServerThread, emulator: httpx.Client
) -> None:
    subscriptions = [subscribe(emulator) for _ in range(5)]
    sender = sender_for(webpush_server, concurrency=16)
    requests = [PushRequest(f"k-{n}", notification(subscriptions[n % 5])) for n in range(200)]
    assert all(result.ok for result in sender.send(requests))
    assert all(result.ok for result in sender.send(requests[:10]))
    assert sender.vapid.signatures == 1
    assert stats(emulator) | {"subscriptions": None} == {
        "subscriptions": None,
        "accepted": 210,
        "rejected": {},
        "requests": 210,
        "vapid_tokens": 1,
    }


def test_a_token_is_reused_until_an_hour_before_it_expires_then_renewed() -> None:
    now = [1_000_000.0]
    tokens = VapidTokens(new_key(), SUBJECT, clock=lambda: now[0])
    first = tokens.authorization("https://push.example.com")
    now[0] += TOKEN_LIFETIME_SECONDS - RENEW_AHEAD_SECONDS - 1
    assert tokens.authorization("https://push.example.com") == first
    assert tokens.signatures == 1
    tokens.authorization("https://other.example.com")
    assert tokens.signatures == 2  # one per push service origin
    now[0] += 2
    assert tokens.authorization("https://push.example.com") != first
    assert tokens.signatures == 3


def test_a_gone_or_unknown_subscription_deactivates_the_device(
    webpush_server: ServerThread, emulator: httpx.Client
) -> None:
    gone = subscribe(emulator, gone=True)
    unknown = subscribe(emulator) | {"endpoint": f"{webpush_server.url}/push/no-such-subscription"}
    results = sender_for(webpush_server).send(
        [PushRequest("gone", notification(gone)), PushRequest("unknown", notification(unknown))]
    )
    assert [(result.error_code, result.attempts) for result in results] == [("410", 1), ("404", 1)]
    for result in results:
        assert result.error_class is not None and result.error_class.deactivate_device
        assert result.reason == result.error_code
    assert emulator.get("/_emulator/messages").json() == []


def test_429_is_retried_after_at_least_its_retry_after(webpush_server: ServerThread, emulator: httpx.Client) -> None:
    asked: list[float] = []

    async def recording_sleep(seconds: float) -> None:
        asked.append(seconds)

    subscription = subscribe(emulator, fault="retry")
    [result] = sender_for(webpush_server, sleep=recording_sleep).send([PushRequest("k", notification(subscription))])
    assert result.ok and result.attempts == 2
    assert len(asked) == 1 and asked[0] >= 1.0
    assert stats(emulator)["rejected"] == {"429": 1}
    assert len(emulator.get("/_emulator/messages").json()) == 1


def test_a_vapid_key_other_than_the_subscriptions_is_an_operators_problem(
    webpush_server: ServerThread, emulator: httpx.Client
) -> None:
    ours, theirs = new_key(), new_key()
    bound = subscribe(emulator, applicationServerKey=public_key_of(theirs))
    [refused] = sender_for(webpush_server, ours).send([PushRequest("k", notification(bound))])
    assert refused.error_code == "403" and refused.attempts == 1
    assert refused.error_class is not None and refused.error_class.alert_operator
    assert not refused.error_class.deactivate_device
    [accepted] = sender_for(webpush_server, theirs).send([PushRequest("k", notification(bound))])
    assert accepted.ok


def test_the_push_service_is_trusted_only_through_the_ca_file(
    webpush_server: ServerThread, emulator: httpx.Client
) -> None:
    subscription = subscribe(emulator)
    untrusting = WebPushSender(vapid_private_key=new_key(), vapid_subject=SUBJECT)
    [result] = untrusting.send([PushRequest("k", notification(subscription))])
    assert result.error_code == "tls_untrusted" and result.attempts == 1
    assert result.error_class is not None and result.error_class.alert_operator
    assert stats(emulator)["requests"] == 0


def test_an_unusable_subscription_is_refused_unsent_and_deactivated(
    webpush_server: ServerThread, emulator: httpx.Client
) -> None:
    subscription = subscribe(emulator)
    plain_http = subscription | {"endpoint": subscription["endpoint"].replace("https://", "http://")}
    bad_topic = notification(subscription, topic="not a topic!")
    results = sender_for(webpush_server).send(
        [PushRequest("http", notification(plain_http)), PushRequest("topic", bad_topic)]
    )
    assert [(result.error_code, result.attempts) for result in results] == [
        ("invalid_subscription", 0),
        ("invalid_headers", 0),
    ]
    assert results[0].error_class is not None and results[0].error_class.deactivate_device
    assert results[1].error_class is not None and not results[1].error_class.deactivate_device
    assert not results[1].error_class.retryable
    assert stats(emulator)["requests"] == 0


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


P256_POINT = _b64(
    new_key().public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
)


@pytest.mark.parametrize(
    ("endpoint", "p256dh", "auth", "problem"),
    [
        ("https://push.example.com/s/1", P256_POINT, _b64(b"\x01" * 16), None),
        ("https://push.example.com/s/1", P256_POINT + "=", _b64(b"\x01" * 16) + "==", None),  # padded is fine
        ("http://push.example.com/s/1", P256_POINT, _b64(b"\x01" * 16), "endpoint is not an https URL"),
        ("push.example.com/s/1", P256_POINT, _b64(b"\x01" * 16), "endpoint is not an https URL"),
        ("https://push.example.com/s/1", "not base64!", _b64(b"\x01" * 16), "p256dh is not base64url"),
        ("https://push.example.com/s/1", _b64(b"\x04" * 64), _b64(b"\x01" * 16), "p256dh is not an uncompressed"),
        ("https://push.example.com/s/1", _b64(b"\x02" + b"\x01" * 64), _b64(b"\x01" * 16), "p256dh is not an unc"),
        ("https://push.example.com/s/1", _b64(b"\x04" + b"\x01" * 64), _b64(b"\x01" * 16), "p256dh is not a point"),
        ("https://push.example.com/s/1", P256_POINT, _b64(b"\x01" * 15), "auth is not 16 bytes"),
        ("https://push.example.com/s/1", P256_POINT, "a+b/", "auth is not base64url"),  # base64, not base64url
    ],
)
def test_validate_subscription(endpoint: str, p256dh: str, auth: str, problem: str | None) -> None:
    found = validate_subscription(endpoint, p256dh, auth)
    assert (found is None) if problem is None else (found is not None and found.startswith(problem))


def test_the_vapid_key_loads_from_pem_or_raw_base64url_and_never_generates_one(tmp_path: Path) -> None:
    key = new_key()
    raw = _b64(key.private_key.private_numbers().private_value.to_bytes(32, "big"))
    for text in (key.private_pem().decode(), raw):
        assert public_key_of(load_vapid_key(text)) == public_key_of(key)
    with pytest.raises(VapidKeyMissing) as refused:
        load_vapid_key("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----")
    assert "not a key" not in str(refused.value)
    missing = tmp_path / "vapid.pem"
    with pytest.raises(VapidKeyMissing):
        WebPushConnection(vapid_private_key_file=missing).get_sender(quota=NoQuota())
    assert not missing.exists()  # py-vapid's from_file would have made (and saved) a new key


def test_a_vapid_subject_must_be_mailto_or_https() -> None:
    for subject in ("operations@example.com", "http://example.com", "mailto:nobody"):
        with pytest.raises(ValueError, match="VAPID subject"):
            WebPushSender(vapid_private_key=new_key(), vapid_subject=subject)


def test_the_block_sends_with_a_secret_key_and_the_deployments_ca_file(
    webpush_server: ServerThread, emulator: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert webpush_server.tls is not None
    monkeypatch.setenv("EXSTREAM_PUSH_CA_FILE", str(webpush_server.tls.ca_file))
    key = new_key()
    subscription = subscribe(emulator, applicationServerKey=public_key_of(key))
    connection = WebPushConnection(vapid_private_key=SecretStr(key.private_pem().decode()))
    [result] = connection.get_sender(quota=NoQuota()).send([PushRequest("k", notification(subscription))])
    assert result.ok
    with pytest.raises(ValueError, match="not both"):
        WebPushConnection(vapid_private_key=SecretStr("k"), vapid_private_key_file=Path("k.pem"))
    with pytest.raises(VapidKeyMissing):
        WebPushConnection().get_sender(quota=NoQuota())


def test_the_blocks_defaults_are_the_settings() -> None:
    block, settings = WebPushConnection(), Settings()
    assert (block.vapid_subject, block.concurrency, block.max_concurrency, block.max_attempts) == (
        settings.webpush_vapid_subject,
        settings.webpush_concurrency,
        settings.webpush_max_concurrency,
        settings.webpush_max_attempts,
    )
    assert WebPushConnection.from_settings(settings) == block


# The emulator is as strict as a push service: one valid request, then each thing a real service refuses.


def _valid_request(server: ServerThread, client: httpx.Client, **claims: Any) -> tuple[str, dict[str, str], bytes]:
    subscription = subscribe(client)
    key = new_key()
    signed = key.sign({"aud": server.url, "exp": int(time.time()) + 3600, "sub": SUBJECT} | claims)
    body = WebPusher(subscription).encode(b'{"a":1}', "aes128gcm")["body"]
    headers = {"TTL": "60", "Content-Encoding": "aes128gcm", "Authorization": signed["Authorization"]}
    return subscription["endpoint"], headers, body


def _post(client: httpx.Client, endpoint: str, headers: dict[str, str], body: bytes) -> httpx.Response:
    return client.post(endpoint, headers=headers, content=body)


def test_the_emulator_accepts_a_request_as_rfc_8030_describes_it(
    webpush_server: ServerThread, emulator: httpx.Client
) -> None:
    endpoint, headers, body = _valid_request(webpush_server, emulator)
    response = _post(emulator, endpoint, headers | {"Authorization": headers["Authorization"].replace(",", ", ")}, body)
    assert response.status_code == 201 and response.headers["location"]
    assert emulator.get("/_emulator/messages").json()[0]["payload"] == {"a": 1}


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"TTL": None}, 400),
        ({"TTL": "soon"}, 400),
        ({"Urgency": "urgent"}, 400),
        ({"Topic": "x" * 33}, 400),
        ({"Topic": "has space"}, 400),
        ({"Content-Encoding": "aesgcm"}, 415),
        ({"Authorization": None}, 401),
        ({"Authorization": "WebPush abc"}, 401),
        ({"Authorization": "vapid t=abc.def.ghi, k=xyz"}, 401),
    ],
)
def test_the_emulator_refuses_bad_headers(
    webpush_server: ServerThread, emulator: httpx.Client, change: dict[str, str | None], status: int
) -> None:
    endpoint, headers, body = _valid_request(webpush_server, emulator)
    for name, value in change.items():
        headers.pop(name, None)
        if value is not None:
            headers[name] = value
    assert _post(emulator, endpoint, headers, body).status_code == status
    assert emulator.get("/_emulator/messages").json() == []


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": int(time.time()) - 10},  # expired
        {"exp": int(time.time()) + 25 * 3600},  # more than 24 hours away
        {"aud": "https://another.example.com"},
        {"sub": "mailto:"},
        {"sub": "operations@example.com"},
    ],
)
def test_the_emulator_refuses_a_token_whose_claims_a_push_service_refuses(
    webpush_server: ServerThread, emulator: httpx.Client, claims: dict[str, Any]
) -> None:
    subscription = subscribe(emulator)
    key = new_key()
    key.conf["no-strict"] = True  # let py-vapid sign what a careless sender would
    signed = key.sign({"aud": webpush_server.url, "exp": int(time.time()) + 3600, "sub": SUBJECT} | claims)
    body = WebPusher(subscription).encode(b"{}", "aes128gcm")["body"]
    headers = {"TTL": "60", "Content-Encoding": "aes128gcm", "Authorization": signed["Authorization"]}
    assert _post(emulator, subscription["endpoint"], headers, body).status_code == 401


def test_the_emulator_refuses_a_forged_signature(webpush_server: ServerThread, emulator: httpx.Client) -> None:
    endpoint, headers, body = _valid_request(webpush_server, emulator)
    forger = new_key()  # the token signed by one key, presented with another's public key
    token = headers["Authorization"].split("t=")[1].split(",")[0]
    headers["Authorization"] = f"vapid t={token},k={public_key_of(forger)}"
    assert _post(emulator, endpoint, headers, body).status_code == 401


def test_the_emulator_refuses_a_body_over_4096_bytes_or_one_it_cannot_decrypt(
    webpush_server: ServerThread, emulator: httpx.Client
) -> None:
    endpoint, headers, body = _valid_request(webpush_server, emulator)
    assert _post(emulator, endpoint, headers, body + b"\x00" * (4097 - len(body))).status_code == 413
    other = subscribe(emulator)  # encrypted for another browser's keys
    assert _post(emulator, endpoint, headers, WebPusher(other).encode(b"{}", "aes128gcm")["body"]).status_code == 400
    assert _post(emulator, endpoint, headers, b"\x00" * 200).status_code == 400
    assert emulator.get("/_emulator/messages").json() == []
