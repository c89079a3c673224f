"""The error table decides whether a device is deactivated, a message retried or an operator paged."""

from __future__ import annotations

import dataclasses

import httpx
import pytest
from firebase_admin import exceptions, messaging

from exstream_push.connectors.exstream import ExstreamError
from exstream_push.connectors.fcm import PushResult
from exstream_push.connectors.push_errors import (
    BAD_REQUEST_TYPE,
    CONFIGURATION,
    DEAD_DEVICE,
    MAX_REASON_FIELDS,
    PERMANENT,
    PUSH_ERRORS,
    RETRY,
    PushErrorKind,
    PushProvider,
    classify_exception,
    classify_fcm_error,
    classify_fcm_exception,
    classify_http_status,
    fcm_error_code,
    fcm_failure_reason,
    fcm_violated_fields,
)
from exstream_push.status import Status
from exstream_push.tasks.send import _classify as send_outcome


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (404, "UNREGISTERED", DEAD_DEVICE),
        (400, "INVALID_ARGUMENT", PERMANENT),
        (403, "SENDER_ID_MISMATCH", PERMANENT),
        (429, "QUOTA_EXCEEDED", RETRY),
        (503, "UNAVAILABLE", RETRY),
        (500, "INTERNAL", RETRY),
        (401, "THIRD_PARTY_AUTH_ERROR", CONFIGURATION),
        (401, "APNS_AUTH_ERROR", CONFIGURATION),
    ],
)
def test_documented_fcm_codes(status: int, code: str, expected: object) -> None:
    assert classify_fcm_error(status, code) == expected


def test_only_a_dead_token_deactivates_the_device() -> None:
    dead = [key for key, error_class in PUSH_ERRORS.items() if error_class.deactivate_device]
    assert sorted(dead) == sorted(
        [
            (PushProvider.FCM, "UNREGISTERED"),
            (PushProvider.APNS, "BadDeviceToken"),
            (PushProvider.APNS, "Unregistered"),
            (PushProvider.APNS, "ExpiredToken"),
            (PushProvider.APNS, "DeviceTokenNotForTopic"),
            (PushProvider.WEBPUSH, "404"),
            (PushProvider.WEBPUSH, "410"),
            (PushProvider.WEBPUSH, "invalid_subscription"),  # refused unsent: keys no push service can use
        ]
    )
    assert not classify_fcm_error(400, "INVALID_ARGUMENT").deactivate_device
    assert not classify_fcm_error(401, "THIRD_PARTY_AUTH_ERROR").deactivate_device


def test_the_error_code_outranks_the_http_status() -> None:
    """403 alone means "not allowed to send" (ours to fix); 403 SENDER_ID_MISMATCH is about that one token."""
    assert classify_fcm_error(403, None) == CONFIGURATION
    assert classify_fcm_error(403, "SENDER_ID_MISMATCH") == PERMANENT
    assert classify_fcm_error(404, "NOT_FOUND") == CONFIGURATION
    assert classify_fcm_error(404, "UNREGISTERED") == DEAD_DEVICE


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (None, PushErrorKind.RETRY),
        (408, PushErrorKind.RETRY),
        (429, PushErrorKind.RETRY),
        (500, PushErrorKind.RETRY),
        (502, PushErrorKind.RETRY),
        (504, PushErrorKind.RETRY),
        (401, PushErrorKind.CONFIGURATION),
        (403, PushErrorKind.CONFIGURATION),
        (404, PushErrorKind.CONFIGURATION),
        (400, PushErrorKind.PERMANENT),
        (409, PushErrorKind.PERMANENT),
        (413, PushErrorKind.PERMANENT),
        (302, PushErrorKind.CONFIGURATION),
        (200, PushErrorKind.CONFIGURATION),
    ],
)
def test_unknown_codes_fall_back_to_the_http_status(status: int | None, kind: PushErrorKind) -> None:
    assert classify_fcm_error(status, "SOMETHING_NEW").kind is kind
    assert classify_fcm_error(status, None) == classify_http_status(status)


def test_error_classes_are_immutable_and_say_what_to_do() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        RETRY.kind = PushErrorKind.PERMANENT  # type: ignore[misc]
    assert RETRY.retryable and not RETRY.alert_operator
    assert CONFIGURATION.alert_operator and not CONFIGURATION.retryable
    assert not DEAD_DEVICE.retryable and not DEAD_DEVICE.alert_operator


def _http_error(exception_type: type[exceptions.FirebaseError], status: int) -> exceptions.FirebaseError:
    response = httpx.Response(status, request=httpx.Request("POST", "http://127.0.0.1/"))
    return exception_type("refused", http_response=response)


def test_sdk_exceptions_are_classified_by_what_they_stand_for() -> None:
    unregistered = _http_error(messaging.UnregisteredError, 404)
    assert unregistered.code == exceptions.NOT_FOUND  # the SDK's generic code would say "configuration"
    assert fcm_error_code(unregistered) == "UNREGISTERED"
    assert classify_fcm_exception(unregistered) == DEAD_DEVICE
    assert classify_fcm_exception(_http_error(messaging.SenderIdMismatchError, 403)) == PERMANENT
    assert classify_fcm_exception(_http_error(messaging.QuotaExceededError, 429)) == RETRY
    assert classify_fcm_exception(_http_error(messaging.ThirdPartyAuthError, 401)) == CONFIGURATION
    assert classify_fcm_exception(_http_error(exceptions.InvalidArgumentError, 400)) == PERMANENT
    assert classify_fcm_exception(_http_error(exceptions.UnauthenticatedError, 401)) == CONFIGURATION


def test_transport_failures_without_a_response_are_retried() -> None:
    assert classify_fcm_exception(exceptions.UnavailableError("connection refused")) == RETRY
    assert classify_fcm_exception(exceptions.DeadlineExceededError("timed out")) == RETRY
    assert classify_fcm_exception(exceptions.UnknownError("connection reset")) == RETRY


def test_an_oauth_token_we_cannot_get_is_a_configuration_error() -> None:
    assert classify_fcm_exception(exceptions.UnauthenticatedError("invalid_grant")) == CONFIGURATION


@pytest.mark.parametrize(
    ("status", "expected"),
    [(404, CONFIGURATION), (401, CONFIGURATION), (403, CONFIGURATION), (400, PERMANENT), (503, RETRY), (None, RETRY)],
)
def test_exstream_and_otds_answers_classify_by_the_same_rules(status: int | None, expected: object) -> None:
    assert classify_exception(ExstreamError("GET", "/jobs/J", status, "x")) == expected
    assert classify_exception(ValueError("not ours to read")) is None


def _bad_request(fields: list[object]) -> exceptions.FirebaseError:
    details = [{"@type": BAD_REQUEST_TYPE, "fieldViolations": [{"field": f, "description": "x"} for f in fields]}]
    body = {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "x", "details": details}}
    response = httpx.Response(400, json=body, request=httpx.Request("POST", "http://127.0.0.1/"))
    return exceptions.InvalidArgumentError("refused", http_response=response)


def test_a_field_rejection_is_recorded_failed_with_the_fields_named() -> None:
    refused = _bad_request(["message.android.ttl", "message.data[from]", "message.android.ttl", 7, "a b"])
    assert fcm_violated_fields(refused) == ["message.android.ttl", "message.data[from]"]
    assert fcm_failure_reason(refused) == "INVALID_ARGUMENT:message.android.ttl,message.data[from]"
    assert fcm_failure_reason(_bad_request([f"message.f{n}" for n in range(9)])).count(",") == MAX_REASON_FIELDS - 1
    assert fcm_failure_reason(_http_error(messaging.UnregisteredError, 404)) == "UNREGISTERED"
    assert fcm_failure_reason(exceptions.UnavailableError("connection refused")) == exceptions.UNAVAILABLE

    result = PushResult(
        key="k",
        message_id=None,
        error=refused,
        error_code=fcm_error_code(refused),
        error_class=classify_fcm_exception(refused),
        attempts=1,
        reason=fcm_failure_reason(refused),
    )
    assert send_outcome(result) == (Status.FAILED, "INVALID_ARGUMENT:message.android.ttl,message.data[from]", "failed")
