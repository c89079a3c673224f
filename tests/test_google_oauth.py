"""Signing in to FCM as production does: google-auth's service-account credentials, a signed JWT exchanged at the
key file's token_uri (the OAuth2 emulator) for short-lived access tokens, which the FCM emulator checks."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from google.auth.exceptions import RefreshError
from google.auth.transport.requests import Request as GoogleAuthRequest
from google.oauth2 import service_account

from exstream_push.connectors.fcm import FCM_SCOPE, FcmCredentialsMissing, FcmSender
from exstream_push_dev.emulators.google_oauth import (
    JWT_BEARER_GRANT,
    GoogleEmulators,
    GoogleOAuthEmulator,
    new_service_account,
)
from tests.conftest import statement_requests

PROJECT = "test-project"


def oauth_state(google: GoogleEmulators) -> GoogleOAuthEmulator:
    return google.oauth.app.state.oauth


def key_info(google: GoogleEmulators) -> dict[str, Any]:
    return json.loads(Path(google.service_account_file).read_text())


def assertion(info: dict[str, Any], **claims: Any) -> str:
    """A JWT-bearer assertion as google-auth builds it, with ``claims`` overriding its fields."""
    now = int(time.time())
    payload = {"iss": info["client_email"], "aud": info["token_uri"], "scope": FCM_SCOPE, "iat": now}
    payload["exp"] = now + 3600
    payload.update(claims)
    return jwt.encode(payload, info["private_key"], algorithm="RS256", headers={"kid": info["private_key_id"]})


def grant(info: dict[str, Any], token_assertion: str, grant_type: str = JWT_BEARER_GRANT) -> httpx.Response:
    return httpx.post(info["token_uri"], data={"grant_type": grant_type, "assertion": token_assertion})


def send(google: GoogleEmulators, authorization: str | None) -> httpx.Response:
    headers = {"Authorization": authorization} if authorization is not None else {}
    body = {"message": {"token": "device-1", "notification": {"title": "Your statement is ready"}}}
    return httpx.post(f"{google.fcm.url}/v1/projects/{PROJECT}/messages:send", json=body, headers=headers)


def test_google_auth_signs_in_and_fcm_takes_the_token(
    google: GoogleEmulators, fcm_google_credentials: service_account.Credentials
) -> None:
    fcm_google_credentials.refresh(GoogleAuthRequest())
    assert fcm_google_credentials.token.startswith("ya29.")
    assert fcm_google_credentials.expiry is not None
    reply = send(google, f"Bearer {fcm_google_credentials.token}")
    assert reply.status_code == 200, reply.text
    assert reply.json()["name"].startswith(f"projects/{PROJECT}/messages/")


@pytest.mark.parametrize(
    ("claims", "grant_type", "error"),
    [
        ({"aud": "https://accounts.example.com/token"}, JWT_BEARER_GRANT, "audience"),
        ({"exp": int(time.time()) - 120, "iat": int(time.time()) - 200}, JWT_BEARER_GRANT, "expired"),
        ({"exp": int(time.time()) + 7200}, JWT_BEARER_GRANT, "short-lived"),
        ({"scope": ""}, JWT_BEARER_GRANT, "scope"),
        ({}, "client_credentials", "grant_type"),
    ],
    ids=["wrong-audience", "expired", "over-an-hour", "no-scope", "other-grant"],
)
def test_the_token_endpoint_refuses_what_google_refuses(
    google: GoogleEmulators, claims: dict[str, Any], grant_type: str, error: str
) -> None:
    info = key_info(google)
    reply = grant(info, assertion(info, **claims), grant_type)
    assert reply.status_code == 400
    assert reply.json()["error"] in {"invalid_grant", "invalid_scope", "unsupported_grant_type"}
    assert error in reply.json()["error_description"].lower() or error in reply.json()["error"]


def test_a_key_google_does_not_hold_is_refused_as_google_refuses_it(google: GoogleEmulators) -> None:
    """Same account and key id, another private key: the signature does not verify with the registered public key."""
    info = key_info(google)
    forged = new_service_account(PROJECT, info["token_uri"]) | {
        "client_email": info["client_email"],
        "private_key_id": info["private_key_id"],
    }
    reply = grant(info, assertion(forged))
    assert reply.status_code == 400 and reply.json() == {
        "error": "invalid_grant",
        "error_description": "Invalid JWT Signature.",
    }
    credentials = service_account.Credentials.from_service_account_info(forged, scopes=[FCM_SCOPE])
    with pytest.raises(RefreshError, match="invalid_grant"):
        credentials.refresh(GoogleAuthRequest())


def test_fcm_refuses_a_send_without_a_token_it_can_trust(google: GoogleEmulators) -> None:
    tokens = oauth_state(google).tokens
    expired = tokens.issue("someone", [FCM_SCOPE], lifetime=-1)
    valid = tokens.issue("someone", [FCM_SCOPE], lifetime=60)
    forged = valid[:-4] + ("AAAA" if not valid.endswith("AAAA") else "BBBB")
    for authorization in (None, "Bearer", "Bearer owner", f"Bearer {expired}", f"Bearer {forged}", f"Basic {valid}"):
        reply = send(google, authorization)
        assert reply.status_code == 401, authorization
        assert reply.json()["error"]["status"] == "UNAUTHENTICATED"
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    other_scope = tokens.issue("someone", ["https://www.googleapis.com/auth/devstorage.read_only"], lifetime=60)
    assert send(google, f"Bearer {other_scope}").status_code == 403
    cloud_platform = tokens.issue("someone", ["https://www.googleapis.com/auth/cloud-platform"], lifetime=60)
    assert send(google, f"Bearer {cloud_platform}").status_code == 200
    assert send(google, f"Bearer {valid}").status_code == 200


def test_short_lived_tokens_are_renewed_ahead_with_no_message_failed_or_repeated(
    google: GoogleEmulators, fcm: Any, fcm_google_credentials: service_account.Credentials
) -> None:
    """Tokens that live 5 seconds, 20,000 messages sent over several of them: each is renewed before FCM would
    refuse it, so every message goes once, on its first attempt."""
    oauth = oauth_state(google)
    oauth.token_lifetime = 5
    # 20,000 sends 32 at a time, each answered after 10 ms: at least 6.25 s, over two token lifetimes on any machine.
    fcm.app.state.fcm.latency = 0.01
    grants_before = oauth.grants
    sender = FcmSender(base_url=fcm.url, project_id=PROJECT, credentials=fcm_google_credentials, concurrency=32)
    started = time.monotonic()
    results = sender.send(statement_requests(20_000))
    elapsed = time.monotonic() - started
    assert elapsed > 5, f"20,000 sends took {elapsed:.1f} s: too fast to cross a token's lifetime"
    assert all(result.ok and result.attempts == 1 for result in results)
    state = fcm.app.state.fcm
    assert state.accepted == 20_000 and state.rejected == {}
    assert len({message["token"] for message in state.messages}) == 20_000
    renewals = oauth.grants - grants_before
    # Renewed at half its life: at least once per lifetime crossed, and not on every request either.
    assert renewals == sender.token_refreshes
    assert 1 + int(elapsed // 5) <= renewals <= 2 + elapsed / 2


def test_a_token_fcm_stops_taking_is_renewed_and_the_message_sent_again(
    google: GoogleEmulators, fcm: Any, fcm_google_credentials: service_account.Credentials
) -> None:
    """A key disabled and re-enabled, a clock that disagrees: FCM answers 401 to a token we thought good. The
    sender renews it once for everyone and sends those messages again; none fails."""
    oauth = oauth_state(google)
    revoked = False

    def revoke_once(_: Any) -> None:
        nonlocal revoked
        if not revoked:
            oauth.tokens.revoke_all()
            revoked = True

    sender = FcmSender(base_url=fcm.url, project_id=PROJECT, credentials=fcm_google_credentials, concurrency=8)
    results = sender.send(statement_requests(2_000), on_results=revoke_once, flush_size=100)
    assert all(result.ok for result in results)
    assert any(result.attempts == 2 for result in results)
    assert sender.token_refreshes == 2
    assert fcm.app.state.fcm.rejected.get(401, 0) >= 1
    assert fcm.app.state.fcm.accepted == 2_000


def test_no_service_account_is_a_clear_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    with pytest.raises(FcmCredentialsMissing, match="EXSTREAM_PUSH_FCM_SERVICE_ACCOUNT_FILE") as raised:
        FcmSender(base_url="http://127.0.0.1:9", project_id=PROJECT)
    assert raised.value.exit_code == 78
