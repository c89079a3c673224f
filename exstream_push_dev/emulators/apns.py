"""A local APNs provider API (``POST /3/device/<token>`` over HTTP/2 and TLS), as strict as Apple's.

It checks each request as Apple documents ("Sending notification requests to APNs", "Establishing a token-based
connection", "Handling notification responses"): the provider JWT's ES256 signature with the key its ``kid``
names, its ``iss`` (the team) and its age; the ``apns-*`` headers; the device token; the payload. Device tokens
with a known prefix (all valid hex) fail the same way every time, like a payment provider's test cards:
``dead…`` 410 ``Unregistered``, ``bad0…`` 400 ``BadDeviceToken``; ``fa11…`` (503) and ``0429…`` (429 with
``Retry-After``) fail only their first attempt. Accepted notifications are listed at ``GET /_emulator/messages``.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import string
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from exstream_push_dev.emulators.http2 import Http2ServerThread
from exstream_push_dev.emulators.tls import development_tls

DEFAULT_TEAM_ID = "EXSTRMDEV1"
DEFAULT_BUNDLE_ID = "com.example.exstream-push"
MAX_PAYLOAD_BYTES = 4096
MAX_COLLAPSE_ID_BYTES = 64
TOKEN_HEX_CHARS = 64
"""What Apple issues today (32 bytes)."""
PROVIDER_TOKEN_MAX_AGE = 3600
"""Apple refuses a provider token whose ``iat`` is more than an hour old: ``ExpiredProviderToken``."""
PROVIDER_TOKEN_MIN_INTERVAL = 20 * 60
"""...and one re-signed sooner than this after the last on the same connection: ``TooManyProviderTokenUpdates``."""
CLOCK_SKEW_SECONDS = 60
RETRY_AFTER_SECONDS = 1

DEAD_PREFIX = "dead"
BAD_PREFIX = "bad0"
FLAKY_PREFIX = "fa11"
THROTTLED_PREFIX = "0429"
ONCE_PREFIXES = (FLAKY_PREFIX, THROTTLED_PREFIX)

PUSH_TYPES: Mapping[str, str] = {
    # apns-push-type → what apns-topic must be, beside the bundle id (Apple's header table).
    "alert": "",
    "background": "",
    "controls": ".push-type.controls",
    "complication": ".complication",
    "fileprovider": ".pushkit.fileprovider",
    "liveactivity": ".push-type.liveactivity",
    "location": ".location-query",
    "mdm": "",
    "pushtotalk": ".voip-ptt",
    "voip": ".voip",
    "widgets": ".push-type.widgets",
}
PRIORITIES = frozenset({"1", "5", "10"})
SINGLE_HEADERS = ("authorization", "apns-id", "apns-topic", "apns-push-type", "apns-priority", "apns-expiration",
                  "apns-collapse-id")  # fmt: skip
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEX = re.compile(r"[0-9a-fA-F]*")
_BUNDLE_ID = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")


@dataclass(frozen=True, slots=True)
class ApnsSigningKey:
    """A development stand-in for the ``.p8`` key, key id and team id Apple's developer site hands out."""

    team_id: str
    key_id: str
    key_file: Path

    @property
    def pem(self) -> bytes:
        return self.key_file.read_bytes()

    def public_key(self) -> ec.EllipticCurvePublicKey:
        key = serialization.load_pem_private_key(self.pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key.public_key()


def new_signing_key(folder: Path, team_id: str = DEFAULT_TEAM_ID) -> ApnsSigningKey:
    """A fresh P-256 key as ``folder/AuthKey_<KEYID>.p8`` (PKCS#8 PEM, Apple's file name), readable by its owner
    only, with a new 10-character key id."""
    key_id = "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(10))
    key = ec.generate_private_key(ec.SECP256R1())
    folder.mkdir(parents=True, exist_ok=True)
    key_file = folder / f"AuthKey_{key_id}.p8"
    key_file.touch(mode=0o600)
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ApnsSigningKey(team_id, key_id, key_file)


def signing_key(folder: Path, team_id: str = DEFAULT_TEAM_ID) -> ApnsSigningKey:
    """The key kept in ``folder`` (so running workers keep a valid key across an emulator restart), made once."""
    existing = sorted(folder.glob("AuthKey_*.p8"))
    if existing:
        return ApnsSigningKey(team_id, existing[0].stem.removeprefix("AuthKey_"), existing[0])
    return new_signing_key(folder, team_id)


class Reply(NamedTuple):
    status: int
    reason: str | None = None
    headers: Mapping[str, str] | None = None


class ApnsEmulatorState:
    """Everything the emulator remembers, in one object so tests can inspect it in-process."""

    def __init__(self, bundle_id: str, keys: Iterable[ApnsSigningKey] = ()) -> None:
        self.bundle_id = bundle_id
        self.latency = 0.0
        """Seconds each push waits before it is decided, as a distant APNs would: a crash test's kill lands mid-send."""
        self.keep_messages = True
        """False: accepted notifications are counted, not kept (the bench sends hundreds of thousands)."""
        self._keys: dict[str, tuple[str, ec.EllipticCurvePublicKey]] = {}
        for key in keys:
            self.register(key)
        self.reset()

    def register(self, key: ApnsSigningKey) -> None:
        """Only the public half is kept, as Apple keeps it."""
        self._keys[key.key_id] = (key.team_id, key.public_key())

    def reset(self) -> None:
        """Forget messages, counters, tokens seen and first attempts."""
        self.messages: list[dict[str, Any]] = []
        self.accepted = 0
        self.requests = 0
        self.rejected: dict[str, int] = {}
        self.provider_tokens: set[str] = set()
        self._connection_tokens: dict[tuple[Any, str], tuple[str, int]] = {}
        self._attempted_tokens: set[str] = set()

    def stats(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "rejected": dict(sorted(self.rejected.items())),
            "requests": self.requests,
            "provider_tokens": len(self.provider_tokens),
        }

    def handle(self, request: PushRequestSeen) -> Reply:
        """Decide one request synchronously, so concurrent streams cannot interleave inside it."""
        self.requests += 1
        reply = self._decide(request)
        if reply.status != 200:
            self.rejected[reply.reason or str(reply.status)] = (
                self.rejected.get(reply.reason or str(reply.status), 0) + 1
            )
        return reply

    def _decide(self, request: PushRequestSeen) -> Reply:
        if request.method != "POST":
            return Reply(405, "MethodNotAllowed")
        if not request.path.startswith("device/"):
            return Reply(404, "BadPath")
        device_token = request.path.removeprefix("device/")
        for name in SINGLE_HEADERS:
            if len(request.headers.get(name, ())) > 1:
                return Reply(400, "DuplicateHeaders")
        header = {name: values[0] for name, values in request.headers.items() if values}
        refusal = self._token_problem(header.get("authorization"), request.connection)
        if refusal is not None:
            return refusal
        refusal = self._header_problem(header)
        if refusal is not None:
            return refusal
        if not device_token:
            return Reply(400, "MissingDeviceToken")
        if len(device_token) != TOKEN_HEX_CHARS or not _HEX.fullmatch(device_token):
            return Reply(400, "BadDeviceToken")
        payload, refusal = self._payload_problem(request.body, header.get("apns-push-type", ""))
        if refusal is not None:
            return refusal
        refusal = self._device_fault(device_token.lower())
        if refusal is not None:
            return refusal
        self.accepted += 1
        if self.keep_messages:
            self.messages.append(
                {
                    "device_token": device_token,
                    "headers": {name: value for name, value in header.items() if name.startswith("apns-")},
                    "payload": payload,
                }
            )
        return Reply(200)

    def _token_problem(self, authorization: str | None, connection: Any) -> Reply | None:
        """Who is sending, before what is sent: a bearer ES256 JWT from a registered key of its team, not stale,
        not from the future, not re-signed too often on this connection. Apple documents the 20-minute rule but
        not its scope; counting per connection lets several worker processes share one key, as banks run them."""
        scheme, _, token = (authorization or "").partition(" ")
        if not token:
            return Reply(403, "MissingProviderToken")
        if scheme.lower() != "bearer":
            return Reply(403, "InvalidProviderToken")
        try:
            header = jwt.get_unverified_header(token)
            team_id, public_key = self._keys[header.get("kid", "")]
            claims = jwt.decode(
                token,
                public_key,
                algorithms=["ES256"],
                options={"require": ["iss", "iat"], "verify_iat": False, "verify_exp": False},
            )
        except (jwt.InvalidTokenError, KeyError, TypeError):
            return Reply(403, "InvalidProviderToken")
        issued_at = claims["iat"]
        if claims["iss"] != team_id or not isinstance(issued_at, int) or header.get("alg") != "ES256":
            return Reply(403, "InvalidProviderToken")
        now = time.time()
        if issued_at > now + CLOCK_SKEW_SECONDS:
            return Reply(403, "InvalidProviderToken")
        if now - issued_at > PROVIDER_TOKEN_MAX_AGE:
            return Reply(403, "ExpiredProviderToken")
        seen_key = (connection, header["kid"])
        previous = self._connection_tokens.get(seen_key)
        if previous is not None and previous[0] != token and issued_at - previous[1] < PROVIDER_TOKEN_MIN_INTERVAL:
            return Reply(429, "TooManyProviderTokenUpdates")
        self._connection_tokens[seen_key] = (token, issued_at)
        self.provider_tokens.add(token)
        return None

    def _header_problem(self, header: Mapping[str, str]) -> Reply | None:
        push_type = header.get("apns-push-type")
        if push_type not in PUSH_TYPES:
            return Reply(400, "InvalidPushType")  # stricter than Apple, which infers a missing one
        topic = header.get("apns-topic")
        if topic is None:
            return Reply(400, "MissingTopic")
        if not _BUNDLE_ID.fullmatch(topic):
            return Reply(400, "BadTopic")
        if topic != self.bundle_id + PUSH_TYPES[push_type]:
            return Reply(400, "TopicDisallowed")
        apns_id = header.get("apns-id")
        if apns_id is not None and not _UUID.fullmatch(apns_id):
            return Reply(400, "BadMessageId")
        priority = header.get("apns-priority", "10")
        if priority not in PRIORITIES or (push_type == "background" and priority == "10"):
            return Reply(400, "BadPriority")
        expiration = header.get("apns-expiration")
        if expiration is not None and not re.fullmatch(r"[0-9]{1,19}", expiration):
            return Reply(400, "BadExpirationDate")
        collapse_id = header.get("apns-collapse-id")
        if collapse_id is not None and len(collapse_id.encode()) > MAX_COLLAPSE_ID_BYTES:
            return Reply(400, "BadCollapseId")
        return None

    def _payload_problem(self, body: bytes, push_type: str) -> tuple[Any, Reply | None]:
        """A JSON object with an ``aps`` dictionary, an alert for an alert push, at most 4,096 bytes. Apple names
        no reason for a body that is not JSON or lacks ``aps``: ``BadPayload`` is this emulator's."""
        if not body:
            return None, Reply(400, "PayloadEmpty")
        if len(body) > MAX_PAYLOAD_BYTES:
            return None, Reply(413, "PayloadTooLarge")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None, Reply(400, "BadPayload")
        aps = payload.get("aps") if isinstance(payload, dict) else None
        if not isinstance(aps, dict) or (push_type == "alert" and not aps.get("alert")):
            return None, Reply(400, "BadPayload")
        return payload, None

    def _device_fault(self, device_token: str) -> Reply | None:
        if device_token.startswith(DEAD_PREFIX):
            return Reply(410, "Unregistered")
        if device_token.startswith(BAD_PREFIX):
            return Reply(400, "BadDeviceToken")
        if device_token.startswith(ONCE_PREFIXES) and device_token not in self._attempted_tokens:
            self._attempted_tokens.add(device_token)
            if device_token.startswith(FLAKY_PREFIX):
                return Reply(503, "ServiceUnavailable")
            return Reply(429, "TooManyRequests", {"retry-after": str(RETRY_AFTER_SECONDS)})
        return None


@dataclass(frozen=True, slots=True)
class PushRequestSeen:
    method: str
    path: str
    """What follows ``/3/``."""
    headers: Mapping[str, list[str]]
    body: bytes
    connection: Any
    """The client's address and port: one TCP connection."""


def _json(content: bytes, status_code: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(content, status_code=status_code, headers=headers, media_type="application/json")


async def provider_api(request: Request) -> Response:
    """``/3/...``: only over HTTP/2, as Apple's servers speak nothing else (they would not answer HTTP/1.1 at all;
    505 here, so a test can tell)."""
    if request.scope.get("http_version") != "2":
        return Response(status_code=505)
    state: ApnsEmulatorState = request.app.state.apns
    headers: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        headers.setdefault(name, []).append(value)
    seen = PushRequestSeen(
        request.method, request.path_params["rest"], headers, await request.body(), request.scope.get("client")
    )
    apns_id = headers.get("apns-id", [None])[0]
    if state.latency:
        await asyncio.sleep(state.latency)
    reply = state.handle(seen)
    response_headers = {"apns-id": apns_id if apns_id and _UUID.fullmatch(apns_id) else str(uuid.uuid4())}
    response_headers.update(reply.headers or {})
    if reply.status == 200:
        return Response(status_code=200, headers=response_headers)
    body: dict[str, Any] = {"reason": reply.reason}
    if reply.status == 410:
        body["timestamp"] = int(time.time() * 1000)
    return _json(orjson.dumps(body), reply.status, response_headers)


async def list_messages(request: Request) -> Response:
    return _json(orjson.dumps(request.app.state.apns.messages))


async def clear_messages(request: Request) -> Response:
    request.app.state.apns.reset()
    return Response(status_code=204)


async def show_stats(request: Request) -> Response:
    return _json(orjson.dumps(request.app.state.apns.stats()))


def create_apns_app(bundle_id: str = DEFAULT_BUNDLE_ID, keys: Iterable[ApnsSigningKey] = ()) -> Starlette:
    """The emulator as an ASGI app, knowing the public halves of ``keys``; serve it with ``Http2ServerThread``."""
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    app = Starlette(
        routes=[
            Route("/3/{rest:path}", provider_api, methods=methods),
            Route("/_emulator/messages", list_messages, methods=["GET"]),
            Route("/_emulator/messages", clear_messages, methods=["DELETE"]),
            Route("/_emulator/stats", show_stats, methods=["GET"]),
        ]
    )
    app.state.apns = ApnsEmulatorState(bundle_id, keys)
    return app


@dataclass
class ApnsEmulator:
    """The running emulator, the key that signs in to it, and what the product must be told."""

    server: Http2ServerThread
    key: ApnsSigningKey
    bundle_id: str

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def ca_file(self) -> Path:
        return self.server.ca_file

    @property
    def state(self) -> ApnsEmulatorState:
        return self.server.app.state.apns  # type: ignore[attr-defined]

    def environment(self) -> dict[str, str]:
        """The ``EXSTREAM_PUSH_*`` settings that point the product at this emulator."""
        return {
            "EXSTREAM_PUSH_APNS_URL": self.url,
            "EXSTREAM_PUSH_APNS_TEAM_ID": self.key.team_id,
            "EXSTREAM_PUSH_APNS_KEY_ID": self.key.key_id,
            "EXSTREAM_PUSH_APNS_KEY_FILE": str(self.key.key_file),
            "EXSTREAM_PUSH_APNS_BUNDLE_ID": self.bundle_id,
            "EXSTREAM_PUSH_CA_FILE": str(self.ca_file),
        }

    def stop(self) -> None:
        self.server.stop()


def start_apns_emulator(
    folder: Path,
    *,
    bundle_id: str = DEFAULT_BUNDLE_ID,
    key: ApnsSigningKey | None = None,
    port: int | None = None,
) -> ApnsEmulator:
    """The emulator on a loopback thread, with the development TLS certificate and signing key kept in
    ``folder`` (made once; ``key`` instead of the kept one); ``stop()`` it when done."""
    folder = folder.resolve()
    key = key or signing_key(folder / "apns")
    server = Http2ServerThread(create_apns_app(bundle_id, [key]), development_tls(folder), port=port).start()
    return ApnsEmulator(server, key, bundle_id)


@contextmanager
def apns_emulator(
    folder: Path, *, bundle_id: str = DEFAULT_BUNDLE_ID, key: ApnsSigningKey | None = None, port: int | None = None
) -> Iterator[ApnsEmulator]:
    """``start_apns_emulator`` for a ``with`` block."""
    emulator = start_apns_emulator(folder, bundle_id=bundle_id, key=key, port=port)
    try:
        yield emulator
    finally:
        emulator.stop()
