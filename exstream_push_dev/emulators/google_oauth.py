"""A local ``oauth2.googleapis.com/token``: the RFC 7523 JWT-bearer grant Google answers for service accounts.

The product authenticates to FCM exactly as it would in production: google-auth's service-account credentials
sign a JWT with the account's RSA key and post it to the ``token_uri`` of the key file; here that URI points at
this emulator, which checks the JWT as Google does (signature with the account's public key, audience, scope,
issue and expiry times) and answers ``{access_token, expires_in, token_type}``. The FCM emulator then refuses any
send whose bearer token this emulator did not issue or that has expired.

Access tokens are self-contained and HMAC-signed (:class:`AccessTokens`), so FCM emulator worker processes check
them with the shared secret alone (``FCM_EMULATOR_TOKEN_SECRET``), without calling back here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from exstream_push_dev.emulators.server import ServerThread, free_port

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MAX_ASSERTION_LIFETIME = 3600
"""Google refuses a JWT whose ``exp`` is more than an hour after its ``iat``."""
CLOCK_SKEW_SECONDS = 60
DEFAULT_TOKEN_LIFETIME = 3600
TOKEN_PREFIX = "ya29.emulator."
GOOGLE_TOKEN_AUDIENCES = ("https://oauth2.googleapis.com/token", "https://www.googleapis.com/oauth2/v4/token")
"""What Google takes as a JWT's ``aud``: its token endpoint's canonical names, whatever URI the JWT was posted to
(google-auth always signs for the first)."""
TOKEN_SECRET_ENV = "FCM_EMULATOR_TOKEN_SECRET"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class AccessTokens:
    """Issues and checks the emulator's bearer tokens: ``ya29.emulator.<claims>.<hmac>``, with subject, scopes and
    expiry inside, so whoever holds the secret can check one without shared state."""

    def __init__(self, secret: bytes | None = None) -> None:
        self.secret = secret or secrets.token_bytes(32)
        self.issued = 0
        self._revoked_before = 0.0

    def issue(self, subject: str, scopes: list[str], lifetime: float) -> str:
        now = time.time()
        self.issued += 1
        claims = {"sub": subject, "scope": " ".join(scopes), "iat": now, "exp": now + lifetime}
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"{TOKEN_PREFIX}{body}.{self._signature(body)}"

    def revoke_all(self) -> None:
        """Every token issued so far stops working, as when a key is disabled: holders must fetch a new one."""
        self._revoked_before = time.time()

    def problem(self, token: str, accepted_scopes: Collection[str]) -> str | None:
        """Why FCM would refuse this bearer token, which needs one of ``accepted_scopes`` (``None`` when it would
        take it): ``"unauthenticated"`` for a token it cannot trust or that has expired, ``"insufficient_scope"``."""
        if not token.startswith(TOKEN_PREFIX):
            return "unauthenticated"
        body, _, signature = token[len(TOKEN_PREFIX) :].rpartition(".")
        if not body or not hmac.compare_digest(signature, self._signature(body)):
            return "unauthenticated"
        try:
            claims = json.loads(_unb64(body))
        except ValueError:
            return "unauthenticated"
        if claims["exp"] <= time.time() or claims["iat"] < self._revoked_before:
            return "unauthenticated"
        if set(claims["scope"].split()).isdisjoint(accepted_scopes):
            return "insufficient_scope"
        return None

    def _signature(self, body: str) -> str:
        return _b64(hmac.new(self.secret, body.encode("ascii"), hashlib.sha256).digest())


def _oauth_error(error: str, description: str, status_code: int = 400) -> JSONResponse:
    """The token endpoint's error shape (RFC 6749 §5.2), which google-auth turns into a ``RefreshError``."""
    return JSONResponse({"error": error, "error_description": description}, status_code=status_code)


class GoogleOAuthEmulator:
    """The token endpoint's state: the public keys of the service accounts it knows, the tokens it issues."""

    def __init__(
        self, token_uri: str, tokens: AccessTokens | None = None, token_lifetime: float = DEFAULT_TOKEN_LIFETIME
    ) -> None:
        if token_lifetime <= 0:
            raise ValueError(f"token lifetime is {token_lifetime!r}: it must be positive")
        self.token_uri = token_uri
        self.tokens = tokens or AccessTokens()
        self.token_lifetime = token_lifetime
        self.grants = 0
        self.refused = 0
        self._public_keys: dict[tuple[str, str], rsa.RSAPublicKey] = {}

    def register(self, client_email: str, key_id: str, public_key: rsa.RSAPublicKey) -> None:
        """What creating a key in the Cloud console does on Google's side: only the public half is kept."""
        self._public_keys[(client_email, key_id)] = public_key

    def grant(self, form: dict[str, str]) -> JSONResponse:
        response = self._grant(form)
        if response.status_code == 200:
            self.grants += 1
        else:
            self.refused += 1
        return response

    def _grant(self, form: dict[str, str]) -> JSONResponse:
        if form.get("grant_type") != JWT_BEARER_GRANT:
            return _oauth_error("unsupported_grant_type", "Invalid grant_type: " + form.get("grant_type", ""))
        assertion = form.get("assertion", "")
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            return _oauth_error("invalid_request", "Invalid JWT: the assertion is not a JWT.")
        if header.get("alg") != "RS256":
            return _oauth_error("invalid_grant", "Invalid JWT: only RS256 signatures are accepted.")
        public_key = self._public_keys.get((str(unverified.get("iss")), str(header.get("kid"))))
        if public_key is None:
            return _oauth_error("invalid_grant", "Invalid grant: account not found")
        try:
            claims = jwt.decode(
                assertion,
                public_key,
                algorithms=["RS256"],
                audience=[*GOOGLE_TOKEN_AUDIENCES, self.token_uri],
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["iss", "aud", "iat", "exp", "scope"]},
            )
        except jwt.InvalidSignatureError:
            return _oauth_error("invalid_grant", "Invalid JWT Signature.")
        except jwt.InvalidAudienceError:
            return _oauth_error("invalid_grant", "Invalid JWT: audience must be the token URI.")
        except jwt.PyJWTError as error:
            return _oauth_error("invalid_grant", f"Invalid JWT: {error}.")
        issued_at, expires_at = float(claims["iat"]), float(claims["exp"])
        if expires_at - issued_at > MAX_ASSERTION_LIFETIME or issued_at > time.time() + CLOCK_SKEW_SECONDS:
            return _oauth_error(
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. "
                "Check your iat and exp values in the JWT claim.",
            )
        scopes = str(claims["scope"]).split()
        if not scopes:
            return _oauth_error("invalid_scope", "Empty or missing scope not allowed.")
        token = self.tokens.issue(str(claims["iss"]), scopes, self.token_lifetime)
        return JSONResponse(
            {"access_token": token, "expires_in": int(self.token_lifetime), "token_type": "Bearer"},
            headers={"Cache-Control": "no-cache, no-store, max-age=0, must-revalidate"},
        )


async def token_endpoint(request: Request) -> Response:
    form = dict(parse_qsl((await request.body()).decode("utf-8", errors="replace"), keep_blank_values=True))
    return request.app.state.oauth.grant(form)


async def revoke_tokens(request: Request) -> Response:
    request.app.state.oauth.tokens.revoke_all()
    return Response(status_code=204)


async def show_stats(request: Request) -> Response:
    oauth: GoogleOAuthEmulator = request.app.state.oauth
    return JSONResponse({"grants": oauth.grants, "refused": oauth.refused})


def create_google_oauth_app(oauth: GoogleOAuthEmulator) -> Starlette:
    app = Starlette(
        routes=[
            Route("/token", token_endpoint, methods=["POST"]),
            Route("/_emulator/tokens", revoke_tokens, methods=["DELETE"]),
            Route("/_emulator/stats", show_stats, methods=["GET"]),
        ]
    )
    app.state.oauth = oauth
    return app


def new_service_account(project_id: str, token_uri: str) -> dict[str, Any]:
    """A service-account key file's contents, in the shape the Cloud console downloads, with a fresh RSA key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    client_email = f"exstream-push@{project_id}.iam.gserviceaccount.com"
    return {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": client_email,
        "client_id": str(secrets.randbelow(10**21)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "universe_domain": "googleapis.com",
    }


def public_key_of(info: dict[str, Any]) -> rsa.RSAPublicKey:
    private_key = serialization.load_pem_private_key(info["private_key"].encode("ascii"), password=None)
    assert isinstance(private_key, rsa.RSAPrivateKey)
    return private_key.public_key()


def service_account_file(path: Path, project_id: str, token_uri: str) -> dict[str, Any]:
    """The key file at ``path``, created on first use and kept (so running workers keep a valid key across an
    emulator restart), with its ``token_uri`` pointed at this run's emulator. Readable by its owner only."""
    info: dict[str, Any] | None = None
    if path.exists():
        info = json.loads(path.read_text())
        if info.get("project_id") != project_id:
            info = None
    if info is None:
        info = new_service_account(project_id, token_uri)
    info["token_uri"] = token_uri
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(info, indent=2))
    return info


@dataclass
class GoogleEmulators:
    """The FCM emulator and its token endpoint, started together, and the key file that signs in to them."""

    fcm: ServerThread
    oauth: ServerThread
    service_account_file: Path


def start_oauth_emulator(
    key_file: Path, project_id: str, *, port: int | None = None, token_lifetime: float = DEFAULT_TOKEN_LIFETIME
) -> ServerThread:
    """The token endpoint, started on a loopback thread, knowing the key in ``key_file`` (written or updated for
    it); ``stop()`` it when done."""
    port = port or free_port()  # known before the start: the key file names the token URI
    oauth = GoogleOAuthEmulator(f"http://127.0.0.1:{port}/token", AccessTokens(), token_lifetime)
    info = service_account_file(key_file, project_id, oauth.token_uri)
    oauth.register(info["client_email"], info["private_key_id"], public_key_of(info))
    return ServerThread(create_google_oauth_app(oauth), port=port).start()


@contextmanager
def oauth_emulator(
    key_file: Path, project_id: str, *, port: int | None = None, token_lifetime: float = DEFAULT_TOKEN_LIFETIME
) -> Iterator[ServerThread]:
    """``start_oauth_emulator`` for a ``with`` block."""
    thread = start_oauth_emulator(key_file, project_id, port=port, token_lifetime=token_lifetime)
    try:
        yield thread
    finally:
        thread.stop()


def fcm_process_env(oauth: ServerThread) -> dict[str, str]:
    """What FCM emulator processes (``create_fcm_app_from_env``) need to check this endpoint's tokens."""
    return {TOKEN_SECRET_ENV: oauth.app.state.oauth.tokens.secret.hex()}


@contextmanager
def google_emulators(
    key_file: Path,
    project_id: str,
    *,
    fcm_port: int | None = None,
    oauth_port: int | None = None,
    token_lifetime: float = DEFAULT_TOKEN_LIFETIME,
    **fcm_options: Any,
) -> Iterator[GoogleEmulators]:
    """``with google_emulators(home / "service-account.json", project) as google: google.fcm.url`` — both
    emulators on loopback threads, the key file written for this run, everything stopped on exit."""
    from exstream_push_dev.emulators.fcm import create_fcm_app

    with (
        oauth_emulator(key_file, project_id, port=oauth_port, token_lifetime=token_lifetime) as oauth,
        ServerThread(create_fcm_app(tokens=oauth.app.state.oauth.tokens, **fcm_options), port=fcm_port) as fcm,
    ):
        yield GoogleEmulators(fcm=fcm, oauth=oauth, service_account_file=key_file)
