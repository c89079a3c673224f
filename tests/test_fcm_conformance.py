"""The FCM emulator against Google's own client and description of FCM v1: what real FCM refuses, it refuses.

Requests go through google-api-python-client's discovery client built from the ``fcm.v1.json`` it ships, so the
URL, the body and the error parsing are Google's, not ours. Each invalid message below is one FCM documents as
refused (sources: the FCM v1 reference for ``projects.messages`` and its ``Message`` resource, "About FCM messages"
for reserved keys and size limits, "Send messages to topics" for topic names and conditions, and the discovery
document's own types, enums and formats); each must get 400 ``INVALID_ARGUMENT`` with a ``google.rpc.BadRequest``
detail naming the field. Valid messages in camelCase (proto3 JSON names) and snake_case must get 200.
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Iterator
from typing import Any, NamedTuple

import google.auth.credentials
import pytest
from googleapiclient.discovery import Resource, build_from_document
from googleapiclient.errors import HttpError

from exstream_push_dev.emulators.fcm_validation import (
    DISCOVERY_DOCUMENT,
    DISCOVERY_PACKAGE,
    discovery_schemas,
    snake_case,
)
from exstream_push_dev.emulators.server import ServerThread
from tests.conftest import fcm_messages

PROJECT = "conformance-project"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"


@pytest.fixture
def fcm_client(fcm: ServerThread, fcm_google_credentials: google.auth.credentials.Credentials) -> Iterator[Resource]:
    """Google's FCM v1 client, generated from the discovery document it ships, pointed at the emulator."""
    document = importlib.resources.files(DISCOVERY_PACKAGE).joinpath(DISCOVERY_DOCUMENT).read_text("utf-8")
    client = build_from_document(
        document, credentials=fcm_google_credentials, client_options={"api_endpoint": fcm.url + "/"}
    )
    try:
        yield client
    finally:
        client.close()


def send(client: Resource, body: dict[str, Any]) -> dict[str, Any]:
    return client.projects().messages().send(parent=f"projects/{PROJECT}", body=body).execute()


class Invalid(NamedTuple):
    name: str
    body: dict[str, Any]
    field: str
    """The field FCM's BadRequest detail names."""
    why: str
    """What FCM documents that this message breaks."""


def token(**fields: Any) -> dict[str, Any]:
    return {"message": {"token": "device-1", **fields}}


INVALID = [
    Invalid("no target", {"message": {"notification": {"title": "T"}}}, "message",
            "Message: exactly one of token, topic, condition (or fid) is required"),
    Invalid("two targets", token(topic="news"), "message", "Message: the target is a union field, one only"),
    Invalid("data value not a string", token(data={"count": 3}), "message.data[count]",
            "Message.data is map<string, string>"),
    Invalid("reserved data key from", token(data={"from": "bank"}), "message.data[from]",
            "About FCM messages: 'from' is reserved in data payloads"),
    Invalid("reserved data key message_type", token(data={"message_type": "x"}), "message.data[message_type]",
            "About FCM messages: 'message_type' is reserved"),
    Invalid("reserved data key google.", token(data={"google.c.a.e": "1"}), "message.data[google.c.a.e]",
            "About FCM messages: keys starting with 'google' are reserved"),
    Invalid("reserved data key gcm.", token(data={"gcm.n.e": "1"}), "message.data[gcm.n.e]",
            "About FCM messages: keys starting with 'gcm' are reserved"),
    Invalid("android.ttl without unit", token(android={"ttl": "3600"}), "message.android.ttl",
            "AndroidConfig.ttl is a google-duration such as \"3.5s\""),
    Invalid("android.ttl as a number", token(android={"ttl": 3.5}), "message.android.ttl",
            "AndroidConfig.ttl is a google-duration string"),
    Invalid("unknown android.priority", token(android={"priority": "urgent"}), "message.android.priority",
            "AndroidConfig.priority is the enum NORMAL | HIGH"),
    Invalid("unknown field inside android", token(android={"badge": "1"}), "message.android",
            "AndroidConfig has no field 'badge'"),
    Invalid("unknown field in message", token(priority="high"), "message", "Message has no field 'priority'"),
    Invalid("unknown notification visibility", token(android={"notification": {"visibility": "HIDDEN"}}),
            "message.android.notification.visibility", "AndroidNotification.visibility is an enum"),
    Invalid("notification count not an integer", token(android={"notification": {"notificationCount": "many"}}),
            "message.android.notification.notificationCount", "AndroidNotification.notificationCount is int32"),
    Invalid("android colour not #rrggbb", token(android={"notification": {"color": "red"}}),
            "message.android.notification.color", "AndroidNotification.color is in #rrggbb format"),
    Invalid("apns-priority 7", token(apns={"headers": {"apns-priority": "7"}}), "message.apns.headers[apns-priority]",
            "APNs apns-priority is 10 or 5"),
    Invalid("apns header not a string", token(apns={"headers": {"apns-expiration": 0}}),
            "message.apns.headers[apns-expiration]", "ApnsConfig.headers is map<string, string>"),
    Invalid("webpush header not a string", token(webpush={"headers": {"TTL": 60}}), "message.webpush.headers[TTL]",
            "WebpushConfig.headers is map<string, string>"),
    Invalid("webpush link not https", token(webpush={"fcmOptions": {"link": "http://portal.example.com/d/1"}}),
            "message.webpush.fcmOptions.link", "WebpushFcmOptions.link must be an HTTPS URL"),
    Invalid("webpush link not https, snake_case", token(webpush={"fcm_options": {"link": "ftp://x"}}),
            "message.webpush.fcm_options.link", "WebpushFcmOptions.link must be an HTTPS URL"),
    Invalid("notification title not a string", token(notification={"title": 42}), "message.notification.title",
            "Notification.title is a string"),
    Invalid("notification body not a string", token(notification={"body": ["a"]}), "message.notification.body",
            "Notification.body is a string"),
    Invalid("topic with /topics/ prefix", {"message": {"topic": "/topics/news"}}, "message.topic",
            "Message.topic is the name alone, without '/topics/'"),
    Invalid("topic outside the name pattern", {"message": {"topic": "news alerts!"}}, "message.topic",
            "topic names match [a-zA-Z0-9-_.~%]+"),
    Invalid("condition cut short", {"message": {"condition": "'a' in topics &&"}}, "message.condition",
            "conditions are topics joined by && and ||"),
    Invalid("condition unbalanced", {"message": {"condition": "('a' in topics || 'b' in topics"}},
            "message.condition", "conditions may group with balanced parentheses"),
    Invalid("condition of six topics", {"message": {"condition": " || ".join(f"'t{n}' in topics" for n in range(6))}},
            "message.condition", "a condition may name at most five topics"),
    Invalid("condition without 'in topics'", {"message": {"condition": "'a' && 'b'"}}, "message.condition",
            "each operand is 'TOPIC' in topics"),
    Invalid("validateOnly not a boolean", {**token(), "validateOnly": "yes"}, "validateOnly",
            "SendMessageRequest.validateOnly is a boolean"),
    Invalid("the same field in both spellings", token(android={"collapse_key": "a", "collapseKey": "b"}),
            "message.android", "a field may appear once"),
    Invalid("topic message over 2,048 bytes", {"message": {"topic": "news", "data": {"x": "y" * 2048}}}, "message",
            "About FCM messages: 2,048 bytes for topic messages"),
    Invalid("condition message over 2,048 bytes",
            {"message": {"condition": "'a' in topics", "data": {"x": "y" * 2048}}}, "message",
            "About FCM messages: 2,048 bytes for topic (and condition) messages"),
    Invalid("device message over 4,096 bytes", token(data={"x": "y" * 4096}), "message",
            "About FCM messages: 4,096 bytes for other messages"),
]  # fmt: skip


@pytest.mark.parametrize("case", INVALID, ids=[case.name for case in INVALID])
def test_documented_invalid_messages_get_invalid_argument_naming_the_field(fcm_client: Resource, case: Invalid) -> None:
    with pytest.raises(HttpError) as raised:
        send(fcm_client, case.body)

    assert raised.value.status_code == 400, case.why
    error = json.loads(raised.value.content)["error"]
    assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT"), case.why
    bad_requests = [detail for detail in error["details"] if detail["@type"] == BAD_REQUEST_TYPE]
    assert [violation["field"] for detail in bad_requests for violation in detail["fieldViolations"]] == [case.field]


def test_the_table_covers_at_least_twenty_documented_messages() -> None:
    assert len({case.name for case in INVALID}) == len(INVALID) >= 20


# --- valid messages -----------------------------------------------------------------------------------------------

# Values the schema cannot describe but FCM's rules constrain; every other field gets a value of its type.
SPECIAL_VALUES = {"color": "#336699", "link": "https://portal.example.com/d/1"}
OTHER_TARGETS = ("topic", "condition", "fid")


def sample(description: dict[str, Any], name: str, spell: Any) -> Any:
    """A valid value for one field of Google's description, its nested field names spelled by ``spell``."""
    if "$ref" in description:
        return sample_object(description["$ref"], spell)
    kind, value_format = description.get("type"), description.get("format")
    if name in SPECIAL_VALUES and kind == "string":
        return SPECIAL_VALUES[name]
    if kind == "object":
        entries = description.get("additionalProperties", {})
        return {"key": {"nested": [1, True]}} if entries.get("type") == "any" else {"key": "value"}
    if kind == "array":
        return [sample(description["items"], name, spell)]
    if "enum" in description:
        return description["enum"][-1]
    return {
        "boolean": True,
        "integer": 3,
        "number": 0.5,
        "string": {"google-duration": "3.5s", "google-datetime": "2026-12-01T09:00:00.5Z"}.get(value_format, "text"),
    }[kind]


def sample_object(schema_name: str, spell: Any) -> dict[str, Any]:
    properties = discovery_schemas()[schema_name].get("properties", {})
    return {spell(name): sample(description, name, spell) for name, description in properties.items()}


def every_field_message(spell: Any) -> dict[str, Any]:
    """A message with every field Google's description defines (one target: the token), spelled by ``spell``."""
    message = sample_object("Message", spell)
    for target in OTHER_TARGETS:
        del message[spell(target)]
    message[spell("token")] = "device-every-field"
    return message


def camel_case(name: str) -> str:
    return name


@pytest.mark.parametrize("spell", [camel_case, snake_case], ids=["camelCase", "snake_case"])
def test_a_message_with_every_field_of_googles_description_is_accepted(
    fcm_client: Resource, fcm: ServerThread, spell: Any
) -> None:
    message = every_field_message(spell)
    assert (spell is snake_case) == ("fcm_options" in message and "fcmOptions" not in message)

    answer = send(fcm_client, {"message": message})

    assert answer["name"].startswith(f"projects/{PROJECT}/messages/")
    assert fcm_messages(fcm) == [message]


TOPIC_FRAME = json.dumps({"topic": "news", "data": {"x": ""}}, separators=(",", ":"))
VALID = [
    ("validateOnly", {"validateOnly": True, **token()}),
    ("validate_only", {"validate_only": True, **token()}),
    ("camelCase platform options", token(
        android={"collapseKey": "stmt-1", "ttl": "86400s", "priority": "HIGH", "directBootOk": False,
                 "notification": {"channelId": "statements", "notificationPriority": "PRIORITY_HIGH"}},
        apns={"headers": {"apns-priority": "5", "apns-collapse-id": "stmt-1"}, "fcmOptions": {"analyticsLabel": "s"}},
        webpush={"headers": {"TTL": "86400", "Urgency": "normal"}, "fcmOptions": {"link": "https://p.example.com/"}},
        fcmOptions={"analyticsLabel": "statements"},
    )),
    ("snake_case platform options", token(
        android={"collapse_key": "stmt-1", "ttl": "0.5s", "priority": "normal", "direct_boot_ok": True,
                 "notification": {"channel_id": "statements", "notification_priority": "PRIORITY_LOW"}},
        apns={"headers": {"apns-priority": "10"}, "fcm_options": {"analytics_label": "s"}},
        webpush={"fcm_options": {"link": "https://p.example.com/", "analytics_label": "s"}},
        fcm_options={"analytics_label": "statements"},
    )),
    ("firebase-admin's lowercase priority", token(android={"priority": "high"})),
    ("installation id", {"message": {"fid": "cFid22charsBase64url_-"}}),
    ("topic", {"message": {"topic": "ops-delivery-exceptions", "notification": {"title": "Job failed"}}}),
    ("topic message at 2,048 bytes", {"message": {"topic": "news", "data": {"x": "y" * (2048 - len(TOPIC_FRAME))}}}),
    ("condition", {"message": {"condition": "'a' in topics && ('b' in topics || !('c' in topics))"}}),
    ("condition of five topics", {"message": {"condition": " || ".join(f'"t{n}" in topics' for n in range(5))}}),
]  # fmt: skip


@pytest.mark.parametrize(("name", "body"), VALID, ids=[name for name, _ in VALID])
def test_valid_messages_in_either_spelling_are_accepted(fcm_client: Resource, name: str, body: dict[str, Any]) -> None:
    answer = send(fcm_client, body)
    assert answer["name"].startswith(f"projects/{PROJECT}/messages/"), name
