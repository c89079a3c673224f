"""The one table that says what a push provider's error means for us: retry it, drop it, or call an operator.

Senders, flows and the ledger all ask this module, so "is UNREGISTERED permanent?" has exactly one answer.
Rows are keyed by (provider, provider error code) so APNs (``Unregistered``, ``BadDeviceToken``…) and Web Push
rows can join the same dict later without touching the FCM ones. Exstream and OTDS answers have no error codes
of their own: their HTTP status is classified by the same rules (``classify_http_status``), and
``classify_exception`` gives any raised error its class, which is what task retries ask (``exstream_push.retrying``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

import httpx
from firebase_admin import exceptions, messaging

from exstream_push.connectors.exstream import ExstreamError
from exstream_push.status import PushProvider


class PushErrorKind(StrEnum):
    RETRY = "retry"
    """Transient: the same request may succeed later (after backoff, honouring ``Retry-After``)."""
    PERMANENT = "permanent"
    """This message to this device will never succeed as sent: record it as failed, do not retry."""
    CONFIGURATION = "configuration"
    """Our side is misconfigured (credentials, project, APNs key): alert an operator; neither retry nor
    blame the device."""


@dataclass(frozen=True, slots=True)
class PushErrorClass:
    """What to do about one failed send."""

    kind: PushErrorKind
    deactivate_device: bool = False
    """The device address is dead (uninstalled app, expired token): stop sending to it."""

    @property
    def retryable(self) -> bool:
        return self.kind is PushErrorKind.RETRY

    @property
    def alert_operator(self) -> bool:
        return self.kind is PushErrorKind.CONFIGURATION


class PushConfigurationError(RuntimeError):
    """The provider refused our credentials or project: retrying the task cannot help, an operator must act."""


RETRY = PushErrorClass(PushErrorKind.RETRY)
PERMANENT = PushErrorClass(PushErrorKind.PERMANENT)
DEAD_DEVICE = PushErrorClass(PushErrorKind.PERMANENT, deactivate_device=True)
CONFIGURATION = PushErrorClass(PushErrorKind.CONFIGURATION)

PUSH_ERRORS: dict[tuple[PushProvider, str], PushErrorClass] = {
    # FCM HTTP v1 `details[].errorCode` (google.firebase.fcm.v1.FcmError).
    (PushProvider.FCM, "UNREGISTERED"): DEAD_DEVICE,  # 404
    (
        PushProvider.FCM,
        "INVALID_ARGUMENT",
    ): PERMANENT,  # 400: bad token or bad payload, the device may be fine
    (PushProvider.FCM, "SENDER_ID_MISMATCH"): PERMANENT,  # 403: the token belongs to another sender
    (PushProvider.FCM, "QUOTA_EXCEEDED"): RETRY,  # 429
    (PushProvider.FCM, "UNAVAILABLE"): RETRY,  # 503
    (PushProvider.FCM, "INTERNAL"): RETRY,  # 500
    (PushProvider.FCM, "THIRD_PARTY_AUTH_ERROR"): CONFIGURATION,  # 401: APNs certificate / Web Push key
    (
        PushProvider.FCM,
        "APNS_AUTH_ERROR",
    ): CONFIGURATION,  # older name of the same; firebase-admin still maps it
    # Failures firebase-admin reports without any HTTP response.
    (PushProvider.FCM, exceptions.DEADLINE_EXCEEDED): RETRY,
    (PushProvider.FCM, exceptions.UNAUTHENTICATED): CONFIGURATION,  # our OAuth token: refused or not issued
    # APNs: the `reason` of the JSON error body (Apple's "Handling notification responses from APNs").
    (PushProvider.APNS, "BadDeviceToken"): DEAD_DEVICE,  # 400
    (PushProvider.APNS, "Unregistered"): DEAD_DEVICE,  # 410
    (PushProvider.APNS, "ExpiredToken"): DEAD_DEVICE,  # 410
    (PushProvider.APNS, "DeviceTokenNotForTopic"): DEAD_DEVICE,  # 400: the token belongs to another app
    (PushProvider.APNS, "PayloadTooLarge"): PERMANENT,  # 413
    (PushProvider.APNS, "TooManyRequests"): RETRY,  # 429: too many to this one device
    (PushProvider.APNS, "InternalServerError"): RETRY,  # 500
    (PushProvider.APNS, "ServiceUnavailable"): RETRY,  # 503
    (PushProvider.APNS, "Shutdown"): RETRY,  # 503: the server is going away, use another connection
    (PushProvider.APNS, "TooManyProviderTokenUpdates"): RETRY,  # 429: the JWT was re-signed too often
    (PushProvider.APNS, "ExpiredProviderToken"): CONFIGURATION,  # 403: our JWT is older than an hour
    (PushProvider.APNS, "InvalidProviderToken"): CONFIGURATION,  # 403: key id, team id or signature wrong
    (PushProvider.APNS, "MissingProviderToken"): CONFIGURATION,  # 403
    (PushProvider.APNS, "BadCertificate"): CONFIGURATION,  # 403
    (PushProvider.APNS, "BadCertificateEnvironment"): CONFIGURATION,  # 403: sandbox key on production or back
    (PushProvider.APNS, "Forbidden"): CONFIGURATION,  # 403
    (PushProvider.APNS, "BadTopic"): CONFIGURATION,  # 400: our bundle id setting
    (PushProvider.APNS, "MissingTopic"): CONFIGURATION,  # 400
    (PushProvider.APNS, "TopicDisallowed"): CONFIGURATION,  # 400: the key may not push to this bundle id
    # Web Push (RFC 8030 §5-8 and the push services' documented answers): no error codes, the status is the code.
    (PushProvider.WEBPUSH, "404"): DEAD_DEVICE,  # the subscription does not exist
    (PushProvider.WEBPUSH, "410"): DEAD_DEVICE,  # the subscription expired or the user revoked it
    (PushProvider.WEBPUSH, "413"): PERMANENT,  # payload too large
    (PushProvider.WEBPUSH, "429"): RETRY,
    (PushProvider.WEBPUSH, "401"): CONFIGURATION,  # our VAPID JWT was refused
    (PushProvider.WEBPUSH, "403"): CONFIGURATION,  # VAPID key does not match the one the subscription names
    # ...and what the Web Push sender refuses before any request (connectors/webpush/message.py).
    (PushProvider.WEBPUSH, "payload_too_large"): PERMANENT,  # over one aes128gcm record of 4096 bytes
    (PushProvider.WEBPUSH, "invalid_subscription"): DEAD_DEVICE,  # no push service could deliver to it
    (PushProvider.WEBPUSH, "invalid_headers"): PERMANENT,  # a Topic, Urgency or TTL RFC 8030 forbids
    (PushProvider.WEBPUSH, "tls_untrusted"): CONFIGURATION,  # the push service's certificate: trust (ca_file)
}

# firebase-admin's FCM-specific exceptions carry the generic platform code (UnregisteredError.code is
# NOT_FOUND); this recovers the FCM error code they stand for (see _MessagingService.FCM_ERROR_TYPES).
_FCM_CODE_BY_EXCEPTION: dict[type[exceptions.FirebaseError], str] = {
    messaging.UnregisteredError: "UNREGISTERED",
    messaging.SenderIdMismatchError: "SENDER_ID_MISMATCH",
    messaging.QuotaExceededError: "QUOTA_EXCEEDED",
    messaging.ThirdPartyAuthError: "THIRD_PARTY_AUTH_ERROR",
}


def classify_http_status(http_status: int | None) -> PushErrorClass:
    """The fallback for codes the table does not know, decided by HTTP semantics alone.

    - no response at all (connection refused or reset, timeout), 408, 429, 5xx: transient, retry;
    - 401, 403, 404 without a known error code: the provider refused *us* (credentials, permissions, wrong
      project or URL), not the device, so an operator must look;
    - any other 4xx: the request itself is wrong and resending it cannot help: permanent, device left alone;
    - anything else (1xx, 3xx, an unexpected 2xx): we cannot interpret the answer: an operator must look.
    """
    if http_status is None or http_status in (408, 429) or 500 <= http_status <= 599:
        return RETRY
    if http_status in (401, 403, 404):
        return CONFIGURATION
    if 400 <= http_status <= 499:
        return PERMANENT
    return CONFIGURATION


def classify(provider: PushProvider, http_status: int | None, error_code: str | None) -> PushErrorClass:
    """A known provider error code wins; otherwise the HTTP status decides (see ``classify_http_status``)."""
    known = PUSH_ERRORS.get((provider, error_code)) if error_code else None
    return known if known is not None else classify_http_status(http_status)


def classify_fcm_error(http_status: int | None, error_code: str | None) -> PushErrorClass:
    """Classify an FCM HTTP v1 answer by its status and ``details[].errorCode`` (or ``error.status``)."""
    return classify(PushProvider.FCM, http_status, error_code)


def fcm_error_code(exc: exceptions.FirebaseError) -> str:
    """The most specific code firebase-admin's exception carries: the FCM error code when it has one."""
    for exception_type, code in _FCM_CODE_BY_EXCEPTION.items():
        if isinstance(exc, exception_type):
            return code
    return exc.code


BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
"""The detail FCM adds to a 400 naming the request fields it refused (``fieldViolations``)."""
MAX_REASON_FIELDS = 3
# A field path as FCM names it (message.android.ttl, message.data[from], message.apns.headers[apns-priority]);
# anything else an answer puts there is left out of the reason rather than stored.
_FIELD_PATH = re.compile(r"[A-Za-z0-9_.\[\]-]{1,120}")


def fcm_violated_fields(exc: exceptions.FirebaseError) -> list[str]:
    """The request fields FCM's ``google.rpc.BadRequest`` detail names: paths only, never the descriptions,
    which may quote the value refused."""
    response = exc.http_response
    if response is None:
        return []
    try:
        details = response.json()["error"]["details"]
        violations = [
            violation.get("field")
            for detail in details
            if detail.get("@type") == BAD_REQUEST_TYPE
            for violation in detail.get("fieldViolations", [])
        ]
    except (ValueError, KeyError, TypeError, AttributeError):
        return []
    fields = [field for field in violations if isinstance(field, str) and _FIELD_PATH.fullmatch(field)]
    return list(dict.fromkeys(fields))[:MAX_REASON_FIELDS]


def fcm_failure_reason(exc: exceptions.FirebaseError) -> str:
    """What the ledger keeps for a failed send: the FCM error code, and the fields FCM refused when it named
    them (``INVALID_ARGUMENT:message.android.ttl``), so a field rejection says where without quoting a value."""
    code = fcm_error_code(exc)
    fields = fcm_violated_fields(exc)
    return f"{code}:{','.join(fields)}" if fields else code


def classify_fcm_exception(exc: exceptions.FirebaseError) -> PushErrorClass:
    """Classify what ``messaging.send``/``send_each_async`` (or our ``FcmSender``) raised or returned."""
    response = exc.http_response
    http_status = response.status_code if response is not None else None
    return classify_fcm_error(http_status, fcm_error_code(exc))


def classify_exstream_error(exc: ExstreamError) -> PushErrorClass:
    """An Orchestration API or OTDS call that failed, by its HTTP status (no response at all: retry).

    A success status with a failure after it means the transfer broke off mid-answer (or the answer was cut short
    into something unreadable): transient, like a reset connection.
    """
    if exc.status_code is not None and 200 <= exc.status_code <= 299:
        return RETRY
    return classify_http_status(exc.status_code)


def classify_exception(exc: BaseException) -> PushErrorClass | None:
    """The class of a raised error that this table knows how to read; None for one it cannot tell about."""
    if isinstance(exc, PushConfigurationError):
        return CONFIGURATION
    if isinstance(exc, ExstreamError):
        return classify_exstream_error(exc)
    if isinstance(exc, exceptions.FirebaseError):
        return classify_fcm_exception(exc)
    if isinstance(exc, httpx.HTTPStatusError):
        return classify_http_status(exc.response.status_code)
    if isinstance(exc, httpx.TransportError | ConnectionError | TimeoutError):
        return classify_http_status(None)
    return None
