"""A local Web Push service and the browser behind it, so the Web Push sender is exercised end to end over TLS.

As the browser it subscribes (``POST /_emulator/subscriptions``: a P-256 key pair and an auth secret per
subscription, the private half kept here, the rest returned as ``PushSubscription.toJSON()`` gives it); as the push
service it takes ``POST /push/{id}`` as RFC 8030/8291/8292 describe and a real one checks: the VAPID token (ES256
signature with the ``k`` key, ``aud`` this origin, ``exp`` in the future and at most 24 hours away, ``sub``
``mailto:``/``https:``), ``TTL`` present, ``Urgency`` and ``Topic`` well formed, one ``aes128gcm`` record of at most
4096 bytes; and then, as the browser again, decrypts the body with the subscription's private key and auth secret,
so ``GET /_emulator/messages`` shows the plaintext the service worker would get: a test proves the encryption.

Verification is written here with ``cryptography`` directly, not with py-vapid (the sender's signer), so one
library's mistake cannot agree with itself. Decryption is ``http_ece`` (the reference implementation of RFC 8188).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import re
import secrets
import struct
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import http_ece
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from exstream_push_dev.emulators.server import ServerThread
from exstream_push_dev.emulators.tls import DevelopmentTls, development_tls

MAX_BODY_BYTES = 4096
"""RFC 8291 §4: what every push service must accept; Mozilla's and Google's refuse more with 413."""
MAX_TOKEN_LIFETIME_SECONDS = 24 * 3600
URGENCIES = frozenset({"very-low", "low", "normal", "high"})
_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")
_TTL = re.compile(r"[0-9]{1,10}")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")
_HOST = r"(localhost|[\w-]+(\.[\w-]+)+)"
_SUBJECT = re.compile(rf"mailto:[^@\s/]+@{_HOST}|https://{_HOST}(/\S*)?", re.IGNORECASE)
FAULTS = frozenset({"retry"})
"""``retry``: the first push to the subscription gets 429 with ``Retry-After: 1``."""
RETRY_AFTER_SECONDS = 1
RECORDED_HEADERS = ("ttl", "urgency", "topic", "content-encoding")


def b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    if not _BASE64URL.fullmatch(text):
        raise binascii.Error("not base64url")
    stripped = text.rstrip("=")
    return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))


def public_point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


class Reply(NamedTuple):
    status: int
    body: bytes = b""
    headers: Mapping[str, str] | None = None


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Reply:
    """Mozilla autopush's error shape: ``{code, error, message}``."""
    reasons = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 410: "Gone"}
    reasons |= {413: "Payload Too Large", 415: "Unsupported Media Type", 429: "Too Many Requests"}
    return Reply(status, orjson.dumps({"code": status, "error": reasons[status], "message": message}), headers)


@dataclass
class Subscription:
    """The browser's half: what it keeps to decrypt, and how the push service treats this endpoint."""

    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    gone: bool = False
    fault: str | None = None
    application_server_key: bytes | None = None
    """The VAPID public key the page subscribed with (``applicationServerKey``): a push signed by another → 403."""
    attempted: bool = field(default=False)


class WebPushEmulatorState:
    """Subscriptions, accepted messages and counters, in one object so tests can inspect it in-process."""

    def __init__(self, clock: Any = time.time) -> None:
        self.subscriptions: dict[str, Subscription] = {}
        self._clock = clock
        self._run_id = secrets.token_hex(4)
        self._message_numbers = itertools.count(1)
        self.latency = 0.0
        """Seconds each push waits before it is decided, as a distant push service would."""
        self.keep_messages = True
        """False: accepted messages are counted (and still decrypted), not kept: the bench sends a great many."""
        self.reset()

    def reset(self) -> None:
        """Forget messages, counters and first attempts; subscriptions stay, as a browser keeps them."""
        self.messages: list[dict[str, Any]] = []
        self.accepted = 0
        self.requests = 0
        self.rejected: dict[int, int] = {}
        self.vapid_tokens: set[str] = set()
        for subscription in self.subscriptions.values():
            subscription.attempted = False

    def stats(self) -> dict[str, Any]:
        return {
            "subscriptions": len(self.subscriptions),
            "accepted": self.accepted,
            "rejected": {str(status): count for status, count in sorted(self.rejected.items())},
            "requests": self.requests,
            "vapid_tokens": len(self.vapid_tokens),
        }

    def subscribe(self, origin: str, options: Mapping[str, Any]) -> Reply:
        """A new subscription as ``PushSubscription.toJSON()`` gives it; options ``gone``, ``fault``,
        ``applicationServerKey`` (base64url of the VAPID public key)."""
        unknown = set(options) - {"gone", "fault", "applicationServerKey"}
        if unknown:
            return _error(400, f"unknown subscription options: {', '.join(sorted(unknown))}")
        fault = options.get("fault")
        if fault is not None and fault not in FAULTS:
            return _error(400, f"unknown fault {fault!r}: known are {', '.join(sorted(FAULTS))}")
        server_key = options.get("applicationServerKey")
        if server_key is not None:
            try:
                server_key = public_point(_point(server_key))
            except (binascii.Error, ValueError, TypeError):
                return _error(400, "applicationServerKey is not a base64url P-256 public key")
        private_key = ec.generate_private_key(ec.SECP256R1())
        subscription = Subscription(
            private_key=private_key,
            auth=secrets.token_bytes(16),
            gone=bool(options.get("gone", False)),
            fault=fault,
            application_server_key=server_key,
        )
        subscription_id = secrets.token_urlsafe(16)
        self.subscriptions[subscription_id] = subscription
        body = {
            "endpoint": f"{origin}/push/{subscription_id}",
            "expirationTime": None,
            "keys": {
                "p256dh": b64url_encode(public_point(private_key.public_key())),
                "auth": b64url_encode(subscription.auth),
            },
        }
        return Reply(201, orjson.dumps(body), {"Content-Type": "application/json"})

    def handle_push(self, origin: str, subscription_id: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """Decide one push synchronously, so concurrent requests cannot interleave inside it."""
        self.requests += 1
        reply = self._decide(origin, subscription_id, headers, body)
        if reply.status != 201:
            self.rejected[reply.status] = self.rejected.get(reply.status, 0) + 1
        return reply

    def _decide(self, origin: str, subscription_id: str, headers: Mapping[str, str], body: bytes) -> Reply:
        subscription = self.subscriptions.get(subscription_id)
        if subscription is None:
            return _error(404, "No such subscription")
        if subscription.gone:
            return _error(410, "Subscription is no longer valid")
        refusal = self._authorization_problem(origin, subscription, headers.get("authorization"))
        if refusal is not None:
            return refusal
        refusal = _header_problem(headers, body)
        if refusal is not None:
            return refusal
        if len(body) > MAX_BODY_BYTES:
            return _error(413, f"Body of {len(body)} bytes exceeds {MAX_BODY_BYTES}")
        payload: Any = None
        if body:
            try:
                plaintext = _decrypt(subscription, body)
            except ValueError as error:
                return _error(400, f"Cannot decrypt the body: {error}")
            try:
                payload = orjson.loads(plaintext)
            except orjson.JSONDecodeError:
                payload = plaintext.decode("utf-8", errors="replace")
        if subscription.fault == "retry" and not subscription.attempted:
            subscription.attempted = True
            return _error(429, "Too many messages", {"Retry-After": str(RETRY_AFTER_SECONDS)})
        self.accepted += 1
        if self.keep_messages:
            self.messages.append(
                {
                    "endpoint": f"{origin}/push/{subscription_id}",
                    "headers": {name: headers[name] for name in RECORDED_HEADERS if name in headers},
                    "payload": payload,
                }
            )
        return Reply(201, headers={"Location": f"{origin}/message/{self._run_id}-{next(self._message_numbers)}"})

    def _authorization_problem(
        self, origin: str, subscription: Subscription, authorization: str | None
    ) -> Reply | None:
        """RFC 8292 §3-4: ``vapid t=<JWT>, k=<key>``, the JWT ES256-signed by that key for this origin."""
        scheme, _, parameters = (authorization or "").partition(" ")
        if scheme.lower() != "vapid":
            return _error(401, "Missing or non-VAPID Authorization header")
        values: dict[str, str] = {}
        for item in parameters.split(","):
            name, separator, value = item.strip().partition("=")
            if not separator or name.lower() in values:
                return _error(401, "Malformed VAPID parameters")
            values[name.lower()] = value.strip()
        if set(values) != {"t", "k"}:
            return _error(401, "VAPID needs exactly the t and k parameters")
        try:
            key = _point(values["k"])
        except (binascii.Error, ValueError):
            return _error(401, "k is not a base64url P-256 public key")
        claims = _verified_claims(values["t"], key)
        if claims is None:
            return _error(401, "The VAPID token is not an ES256 JWT signed by k")
        problem = _claims_problem(claims, origin, self._clock())
        if problem is not None:
            return _error(401, problem)
        if subscription.application_server_key is not None and public_point(key) != subscription.application_server_key:
            return _error(403, "k is not the applicationServerKey this subscription was created with")
        self.vapid_tokens.add(values["t"])
        return None


def _point(text: str) -> ec.EllipticCurvePublicKey:
    raw = b64url_decode(text)
    if len(raw) != 65 or raw[0] != 0x04:
        raise ValueError("not an uncompressed P-256 point")
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)


def _verified_claims(token: str, key: ec.EllipticCurvePublicKey) -> dict[str, Any] | None:
    """The JWT's claims when its header says ES256 and its signature verifies with ``key``; None otherwise."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        header = orjson.loads(b64url_decode(parts[0]))
        claims = orjson.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except (binascii.Error, ValueError):
        return None
    if not isinstance(header, dict) or header.get("alg") != "ES256" or not isinstance(claims, dict):
        return None
    if len(signature) != 64:
        return None
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        key.verify(der, f"{parts[0]}.{parts[1]}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return None
    return claims


def _claims_problem(claims: Mapping[str, Any], origin: str, now: float) -> str | None:
    if claims.get("aud") != origin:
        return "aud is not this push service's origin"
    expires = claims.get("exp")
    if not isinstance(expires, int) or isinstance(expires, bool):
        return "exp is missing or not an integer"
    if expires <= now:
        return "The VAPID token has expired"
    if expires > now + MAX_TOKEN_LIFETIME_SECONDS:
        return "exp is more than 24 hours away"
    subject = claims.get("sub")
    if not isinstance(subject, str) or not _SUBJECT.fullmatch(subject):
        return "sub is not a mailto: or https: URI"
    return None


def _header_problem(headers: Mapping[str, str], body: bytes) -> Reply | None:
    ttl = headers.get("ttl")
    if ttl is None:
        return _error(400, "Missing TTL header")
    if not _TTL.fullmatch(ttl.strip()):
        return _error(400, "TTL is not a number of seconds")
    urgency = headers.get("urgency")
    if urgency is not None and urgency not in URGENCIES:
        return _error(400, "Urgency is not one of very-low, low, normal, high")
    topic = headers.get("topic")
    if topic is not None and not _TOPIC.fullmatch(topic):
        return _error(400, "Topic is not 1-32 characters of the URL-safe base64 alphabet")
    if body and headers.get("content-encoding", "").lower() != "aes128gcm":
        return _error(415, "Content-Encoding must be aes128gcm (RFC 8291)")
    return None


def _decrypt(subscription: Subscription, body: bytes) -> bytes:
    """RFC 8291: one record, a 65-byte ephemeral key as key id, then RFC 8188 decryption (``ValueError`` if not)."""
    if len(body) < 21 + 65 + 17:
        raise ValueError("shorter than an aes128gcm header and one record")
    record_size = struct.unpack("!L", body[16:20])[0]
    if body[20] != 65:
        raise ValueError("the key id is not a 65-byte P-256 point")
    if record_size < 18 or len(body) - 21 - 65 > record_size:
        raise ValueError("not a single aes128gcm record")
    try:
        return http_ece.decrypt(
            body, private_key=subscription.private_key, auth_secret=subscription.auth, version="aes128gcm"
        )
    except Exception as error:  # http_ece raises ECEException, cryptography's InvalidTag, ValueError...
        raise ValueError(type(error).__name__) from None


def _origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def _json(reply: Reply) -> Response:
    media_type = "application/json" if reply.body else None
    return Response(reply.body, status_code=reply.status, headers=reply.headers, media_type=media_type)


async def subscribe(request: Request) -> Response:
    raw = await request.body()
    try:
        options = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return _json(_error(400, "The body is not JSON"))
    if not isinstance(options, dict):
        return _json(_error(400, "The body is not a JSON object"))
    return _json(request.app.state.webpush.subscribe(_origin(request), options))


async def push(request: Request) -> Response:
    body = await request.body()
    state: WebPushEmulatorState = request.app.state.webpush
    if state.latency:
        await asyncio.sleep(state.latency)
    return _json(state.handle_push(_origin(request), request.path_params["id"], request.headers, body))


async def list_messages(request: Request) -> Response:
    return Response(orjson.dumps(request.app.state.webpush.messages), media_type="application/json")


async def clear_messages(request: Request) -> Response:
    request.app.state.webpush.reset()
    return Response(status_code=204)


async def show_stats(request: Request) -> Response:
    return Response(orjson.dumps(request.app.state.webpush.stats()), media_type="application/json")


def create_webpush_app(clock: Any = time.time) -> Starlette:
    """The emulator as an ASGI app; serve it over TLS (``start_webpush_emulator``), as push services are."""
    app = Starlette(
        routes=[
            Route("/_emulator/subscriptions", subscribe, methods=["POST"]),
            Route("/push/{id}", push, methods=["POST"]),
            Route("/_emulator/messages", list_messages, methods=["GET"]),
            Route("/_emulator/messages", clear_messages, methods=["DELETE"]),
            Route("/_emulator/stats", show_stats, methods=["GET"]),
        ]
    )
    app.state.webpush = WebPushEmulatorState(clock)
    return app


def start_webpush_emulator(tls_folder: Path, *, port: int | None = None) -> ServerThread:
    """The emulator on a loopback thread over TLS, with the development certificate in ``tls_folder`` (made
    there if missing): clients trust ``server.tls.ca_file``. ``stop()`` it when done."""
    tls: DevelopmentTls = development_tls(tls_folder)
    return ServerThread(create_webpush_app(), port=port, tls=tls).start()


@contextmanager
def webpush_emulator(tls_folder: Path, *, port: int | None = None) -> Iterator[ServerThread]:
    """``start_webpush_emulator`` for a ``with`` block."""
    server = start_webpush_emulator(tls_folder, port=port)
    try:
        yield server
    finally:
        server.stop()


def development_vapid_key(folder: Path) -> Path:
    """A VAPID private key (PEM) for development in ``folder``, made once: what ``emulate`` and the demo point
    ``EXSTREAM_PUSH_WEBPUSH_VAPID_PRIVATE_KEY_FILE`` at. Never in the repository."""
    key_file = folder / "vapid-private.pem"
    if not key_file.exists():
        folder.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        key_file.touch(mode=0o600)
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return key_file
