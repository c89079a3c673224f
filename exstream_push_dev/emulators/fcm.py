"""A local FCM HTTP v1 endpoint, so senders and the firebase-admin SDK can be exercised without Google.

Requests are checked as FCM v1 checks them (``fcm_validation``, from Google's own description of the API).
Failures are reproducible on purpose: device tokens with a known prefix always fail the same way (like a
payment provider's test cards), and random faults are drawn from a seeded generator.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import random
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from exstream_push.connectors.fcm import FCM_SCOPE
from exstream_push_dev.emulators.fcm_validation import DEVICE_TARGETS, Violation, validate_only, violations
from exstream_push_dev.emulators.google_oauth import TOKEN_SECRET_ENV, AccessTokens

FAULT_CODES = (429, 500, 503)
RETRY_AFTER = {"Retry-After": "1"}

UNREGISTERED_PREFIX = "unregistered-"
INVALID_PREFIX = "invalid-"
FLAKY_PREFIX = "flaky-"
QUOTA_PREFIX = "quota-"
QUOTA_BARE_PREFIX = "quota-bare-"
SENDER_MISMATCH_PREFIX = "sender-mismatch-"
AUTH_ERROR_PREFIX = "auth-error-"
ONCE_PREFIXES = (FLAKY_PREFIX, QUOTA_PREFIX)
"""Tokens that fail their first attempt only (``quota-bare-`` is a ``quota-`` token)."""

FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"


def _error_body(
    code: int,
    status: str,
    message: str,
    fcm_error_code: str | None = None,
    field_violations: Sequence[Violation] = (),
) -> bytes:
    """FCM's error shape: backend errors carry an ``FcmError`` detail (firebase-admin picks its exception class
    from ``details[].errorCode``), field errors a ``google.rpc.BadRequest`` with ``fieldViolations``."""
    details: list[dict[str, Any]] = []
    if fcm_error_code is not None:
        details.append({"@type": FCM_ERROR_TYPE, "errorCode": fcm_error_code})
    if field_violations:
        entries = [
            {"field": violation.field, "description": violation.description}
            if violation.field
            # proto3 JSON leaves out an empty string: a body that is not JSON names no field.
            else {"description": violation.description}
            for violation in field_violations
        ]
        details.append({"@type": BAD_REQUEST_TYPE, "fieldViolations": entries})
    return orjson.dumps({"error": {"code": code, "message": message, "status": status, "details": details}})


class Reply(NamedTuple):
    status: int
    body: bytes
    headers: Mapping[str, str] | None = None


UNREGISTERED = Reply(404, _error_body(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED"))
_INVALID_TOKEN_TEXT = "The registration token is not a valid FCM registration token"
INVALID_TOKENS = {
    field: Reply(
        400,
        _error_body(
            400,
            "INVALID_ARGUMENT",
            _INVALID_TOKEN_TEXT,
            "INVALID_ARGUMENT",
            [Violation(f"message.{field}", _INVALID_TOKEN_TEXT)],
        ),
    )
    for field in DEVICE_TARGETS
}
SENDER_ID_MISMATCH = Reply(403, _error_body(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH"))
THIRD_PARTY_AUTH_ERROR = Reply(
    401,
    _error_body(401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service", "THIRD_PARTY_AUTH_ERROR"),
)
_QUOTA_BODY = _error_body(
    429, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Send messages'.", "QUOTA_EXCEEDED"
)
QUOTA_EXCEEDED = Reply(429, _QUOTA_BODY, RETRY_AFTER)
QUOTA_EXCEEDED_BARE = Reply(429, _QUOTA_BODY)
UNAVAILABLE = Reply(
    503, _error_body(503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE"), RETRY_AFTER
)
INTERNAL = Reply(500, _error_body(500, "INTERNAL", "Internal error encountered.", "INTERNAL"))
RANDOM_FAULT_REPLIES = {429: QUOTA_EXCEEDED, 503: UNAVAILABLE, 500: INTERNAL}


def invalid_argument(found: Sequence[Violation]) -> Reply:
    """FCM's answer to a request it cannot take: the first violation is the message, all are details."""
    return Reply(400, _error_body(400, "INVALID_ARGUMENT", found[0].description, field_violations=found))


def check_faults(faults: Mapping[int, float]) -> dict[int, float]:
    """Reject rates that could not be drawn from one uniform number per request."""
    for code, rate in faults.items():
        if code not in FAULT_CODES:
            raise ValueError(f"unknown fault code {code!r}: allowed codes are {', '.join(map(str, FAULT_CODES))}")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate for {code} is {rate!r}: it must be between 0 and 1")
    total = math.fsum(faults.values())
    if total > 1.0 + 1e-9:
        raise ValueError(f"fault rates add up to {total:g}: their sum must not exceed 1")
    return dict(faults)


def parse_fault_spec(spec: str) -> dict[int, float]:
    """Parse `"429=0.05,503=0.05,500=0.01"` (as given on a command line); an empty spec means no faults."""
    faults: dict[int, float] = {}
    if not spec.strip():
        return faults
    for item in spec.split(","):
        code_text, separator, rate_text = item.partition("=")
        if not separator:
            raise ValueError(f"bad fault {item.strip()!r} in {spec!r}: expected CODE=RATE, e.g. 503=0.05")
        try:
            code = int(code_text)
            rate = float(rate_text)
        except ValueError:
            raise ValueError(
                f"bad fault {item.strip()!r} in {spec!r}: CODE must be an integer and RATE a number"
            ) from None
        if code in faults:
            raise ValueError(f"fault code {code} appears twice in {spec!r}")
        faults[code] = rate
    return check_faults(faults)


class FcmEmulatorState:
    """Everything the emulator remembers, kept in one object so tests can inspect it in-process."""

    def __init__(
        self,
        faults: Mapping[int, float] | None = None,
        latency: float = 0.0,
        seed: int | None = None,
        keep_messages: bool = True,
    ) -> None:
        """``keep_messages=False`` only counts accepted messages: a benchmark sends millions."""
        if latency < 0:
            raise ValueError(f"latency is {latency!r}: it must not be negative")
        self.faults = check_faults(faults or {})
        self.latency = latency
        self.seed = seed
        self.keep_messages = keep_messages
        self._fault_thresholds = list(zip(itertools.accumulate(self.faults.values()), self.faults.keys(), strict=True))
        # Message ids stay unique across resets and emulator restarts, as a ledger keyed by them expects.
        self._run_id = secrets.token_hex(4)
        self._message_numbers = itertools.count(1)
        self.reset()

    def reset(self) -> None:
        """Forget messages, counters and first attempts; re-seed so each test sees the same fault sequence."""
        self.messages: list[dict[str, Any]] = []
        self.accepted = 0
        self.validated = 0
        self.requests = 0
        self.rejected: dict[int, int] = {}
        self._attempted_tokens: set[str] = set()
        self._random = random.Random(self.seed)

    def stats(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "validated": self.validated,
            "rejected": {str(status): count for status, count in sorted(self.rejected.items())},
            "requests": self.requests,
        }

    def handle_send(self, project: str, raw_body: bytes) -> Reply:
        """Decide one send synchronously, so concurrent requests cannot interleave inside it."""
        self.requests += 1
        reply = self._decide(raw_body)
        if reply is None:
            return Reply(200, orjson.dumps({"name": f"projects/{project}/messages/{self._next_message_id()}"}))
        self.rejected[reply.status] = self.rejected.get(reply.status, 0) + 1
        return reply

    def _decide(self, raw_body: bytes) -> Reply | None:
        try:
            body = orjson.loads(raw_body)
        except orjson.JSONDecodeError as error:
            return invalid_argument([Violation("", f"Invalid JSON payload received. {error}")])
        found = violations(body)
        if found:
            return invalid_argument(found)
        message = body["message"]
        field = next((field for field in DEVICE_TARGETS if message.get(field) is not None), None)
        if field is not None:
            fault = self._device_fault(field, message[field])
            if fault is not None:
                return fault
        if self._fault_thresholds:
            draw = self._random.random()
            for threshold, code in self._fault_thresholds:
                if draw < threshold:
                    return RANDOM_FAULT_REPLIES[code]
        if validate_only(body):
            self.validated += 1
        else:
            self.accepted += 1
            if self.keep_messages:
                self.messages.append(message)
        return None

    def _device_fault(self, field: str, device: str) -> Reply | None:
        if device.startswith(UNREGISTERED_PREFIX):
            return UNREGISTERED
        if device.startswith(INVALID_PREFIX):
            return INVALID_TOKENS[field]
        if device.startswith(SENDER_MISMATCH_PREFIX):
            return SENDER_ID_MISMATCH
        if device.startswith(AUTH_ERROR_PREFIX):
            return THIRD_PARTY_AUTH_ERROR
        if device.startswith(ONCE_PREFIXES) and device not in self._attempted_tokens:
            self._attempted_tokens.add(device)
            if device.startswith(FLAKY_PREFIX):
                return UNAVAILABLE
            return QUOTA_EXCEEDED_BARE if device.startswith(QUOTA_BARE_PREFIX) else QUOTA_EXCEEDED
        return None

    def _next_message_id(self) -> str:
        return f"0:{self._run_id}%{next(self._message_numbers)}"


def _json(content: bytes, status_code: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(content, status_code=status_code, headers=headers, media_type="application/json")


CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
ACCEPTED_SCOPES = frozenset({FCM_SCOPE, CLOUD_PLATFORM_SCOPE})
UNAUTHENTICATED = Reply(
    401,
    orjson.dumps(
        {
            "error": {
                "code": 401,
                "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
                "cookie or other valid authentication credential.",
                "status": "UNAUTHENTICATED",
            }
        }
    ),
    {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
)
INSUFFICIENT_SCOPE = Reply(
    403,
    orjson.dumps(
        {
            "error": {
                "code": 403,
                "message": "Request had insufficient authentication scopes.",
                "status": "PERMISSION_DENIED",
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                        "domain": "googleapis.com",
                    }
                ],
            }
        }
    ),
    {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="insufficient_scope"'},
)


def authorization_problem(tokens: AccessTokens, authorization: str | None) -> Reply | None:
    """FCM checks who is calling before it reads the message: a bearer token the OAuth2 emulator issued, unexpired,
    with the messaging (or cloud-platform) scope."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return UNAUTHENTICATED
    problem = tokens.problem(token, ACCEPTED_SCOPES)
    if problem is None:
        return None
    return INSUFFICIENT_SCOPE if problem == "insufficient_scope" else UNAUTHENTICATED


async def send_message(request: Request) -> Response:
    state: FcmEmulatorState = request.app.state.fcm
    raw_body = await request.body()
    refusal = authorization_problem(request.app.state.tokens, request.headers.get("authorization"))
    if refusal is not None:
        state.requests += 1
        state.rejected[refusal.status] = state.rejected.get(refusal.status, 0) + 1
        return _json(refusal.body, refusal.status, refusal.headers)
    if state.latency:
        await asyncio.sleep(state.latency)
    reply = state.handle_send(request.path_params["project"], raw_body)
    return _json(reply.body, reply.status, reply.headers)


async def list_messages(request: Request) -> Response:
    return _json(orjson.dumps(request.app.state.fcm.messages))


async def clear_messages(request: Request) -> Response:
    request.app.state.fcm.reset()
    return Response(status_code=204)


async def show_stats(request: Request) -> Response:
    return _json(orjson.dumps(request.app.state.fcm.stats()))


def create_fcm_app(
    faults: dict[int, float] | None = None,
    latency: float = 0.0,
    seed: int | None = None,
    keep_messages: bool = True,
    *,
    tokens: AccessTokens | None = None,
) -> Starlette:
    """The emulator as an ASGI app; run it with `exstream_push_dev.emulators.server.ServerThread` or uvicorn.

    Every send needs a bearer token from ``tokens``: the OAuth2 emulator's (``google_oauth.google_emulators``
    starts both). Without one given, only tokens minted from ``app.state.tokens`` get in."""
    app = Starlette(
        routes=[
            Route("/v1/projects/{project}/messages:send", send_message, methods=["POST"]),
            Route("/_emulator/messages", list_messages, methods=["GET"]),
            Route("/_emulator/messages", clear_messages, methods=["DELETE"]),
            Route("/_emulator/stats", show_stats, methods=["GET"]),
        ]
    )
    app.state.fcm = FcmEmulatorState(faults=faults, latency=latency, seed=seed, keep_messages=keep_messages)
    app.state.tokens = tokens or AccessTokens()
    return app


def create_fcm_app_from_env() -> Starlette:
    """Factory for ``uvicorn --factory`` (several worker processes): options come from the environment, the
    OAuth2 emulator's token secret (hex) in ``FCM_EMULATOR_TOKEN_SECRET``, a round trip in
    ``FCM_EMULATOR_LATENCY`` (seconds)."""
    faults = os.environ.get("FCM_EMULATOR_FAULTS")
    return create_fcm_app(
        faults=parse_fault_spec(faults) if faults else None,
        latency=float(os.environ.get("FCM_EMULATOR_LATENCY", "0")),
        keep_messages=os.environ.get("FCM_EMULATOR_KEEP_MESSAGES", "1") != "0",
        tokens=AccessTokens(bytes.fromhex(os.environ[TOKEN_SECRET_ENV])),
    )
