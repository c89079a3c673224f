"""What FCM v1 refuses in a send request, taken from Google's own description of the API.

The schema (known fields per object, their types, enum values, durations) is read from the static discovery
document ``fcm.v1.json`` that google-api-python-client ships, so a field Google adds or an enum value it defines
is known here without anyone copying it. Field names are proto3 JSON: the camelCase JSON name and the original
snake_case name are both accepted. The rules FCM enforces beyond the schema (one target, reserved data keys, the
condition grammar, header values, colours, size limits) follow, each with FCM's documentation as its source.

Every violation names the field as FCM's ``google.rpc.BadRequest`` detail does (``message.android.ttl``).
"""

from __future__ import annotations

import importlib.resources
import json
import re
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from typing import Any, NamedTuple

import orjson

DISCOVERY_PACKAGE = "googleapiclient"
DISCOVERY_DOCUMENT = "discovery_cache/documents/fcm.v1.json"
REQUEST_SCHEMA = "SendMessageRequest"

MAX_MESSAGE_BYTES = 4096
MAX_FANOUT_MESSAGE_BYTES = 2048
"""FCM's limit for a message to a topic or a condition; messages to one device may have 4,096 bytes."""

DEVICE_TARGETS = ("token", "fid")
TARGET_FIELDS = (*DEVICE_TARGETS, "topic", "condition")
FANOUT_TARGETS = ("topic", "condition")
TOPIC_PATTERN = re.compile(r"[a-zA-Z0-9\-_.~%]{1,900}")
RESERVED_DATA_KEYS = frozenset({"from", "message_type"})
RESERVED_DATA_PREFIXES = ("google.", "gcm.")
APNS_PRIORITIES = frozenset({"5", "10"})
COLOR_PATTERN = re.compile(r"#[0-9a-fA-F]{6}")
MAX_CONDITION_TOPICS = 5
# google.protobuf.Duration in JSON: seconds with up to nine fractional digits and an "s".
DURATION_PATTERN = re.compile(r"\d+(?:\.\d{1,9})?s")
# google.protobuf.Timestamp in JSON: RFC 3339, "Z" or an offset.
DATETIME_PATTERN = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d)")
INT32_RANGE = range(-(2**31), 2**31)


class Violation(NamedTuple):
    """One ``fieldViolations`` entry of a ``google.rpc.BadRequest`` detail."""

    field: str
    description: str


@cache
def discovery_schemas() -> dict[str, Any]:
    """The ``schemas`` of Google's FCM v1 discovery document, read once from the installed client library."""
    try:
        document = importlib.resources.files(DISCOVERY_PACKAGE).joinpath(DISCOVERY_DOCUMENT).read_text("utf-8")
    except ModuleNotFoundError:
        raise RuntimeError(
            "the FCM emulator checks messages against google-api-python-client's fcm.v1.json: "
            "install the project's dev extra (pip install -e '.[dev]')"
        ) from None
    return json.loads(document)["schemas"]


@cache
def snake_case(json_name: str) -> str:
    """The proto field name behind a proto3 JSON name: ``collapseKey`` → ``collapse_key``, ``androidV2`` →
    ``android_v2``."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", json_name).lower()


@cache
def _fields(schema_name: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every accepted spelling of each field of one object type → (its JSON name, its description)."""
    names: dict[str, tuple[str, dict[str, Any]]] = {}
    for json_name, description in discovery_schemas()[schema_name].get("properties", {}).items():
        names[json_name] = names[snake_case(json_name)] = (json_name, description)
    return names


def _check_value(value: Any, description: Mapping[str, Any], path: str) -> Iterator[Violation]:
    """Schema checks for one field's value, walking into objects, maps and lists."""
    if "$ref" in description:
        yield from _check_object(value, description["$ref"], path)
        return
    kind = description.get("type")
    if kind == "any":
        return
    if kind == "object":
        if not isinstance(value, dict):
            yield Violation(path, f"Invalid value at '{path}': expected a JSON object (a map).")
            return
        entries = description.get("additionalProperties", {"type": "any"})
        for key, entry in value.items():
            if entry is None and entries.get("type") != "any":
                yield Violation(f"{path}[{key}]", f"Invalid value at '{path}[{key}]': map values may not be null.")
            elif entry is not None:
                yield from _check_value(entry, entries, f"{path}[{key}]")
        return
    if kind == "array":
        if not isinstance(value, list):
            yield Violation(path, f"Invalid value at '{path}': expected a JSON array.")
            return
        for index, item in enumerate(value):
            yield from _check_value(item, description.get("items", {"type": "any"}), f"{path}[{index}]")
        return
    problem = _scalar_problem(value, kind, description)
    if problem is not None:
        yield Violation(path, f"Invalid value at '{path}' ({problem}).")


def _scalar_problem(value: Any, kind: str | None, description: Mapping[str, Any]) -> str | None:
    """Why a scalar does not parse as the proto3 JSON type described, or None when it does."""
    if kind == "boolean":
        return None if isinstance(value, bool) else "TYPE_BOOL"
    if kind == "integer":
        # proto3 JSON takes an integer as a number or as a decimal string.
        number = value if isinstance(value, int) and not isinstance(value, bool) else None
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
            number = int(value)
        return None if number is not None and number in INT32_RANGE else "TYPE_INT32"
    if kind == "number":
        return None if isinstance(value, int | float) and not isinstance(value, bool) else "TYPE_FLOAT"
    if kind != "string":
        return None
    enum = description.get("enum")
    if enum is not None:
        # Google's JSON parser reads enum names without regard to case (firebase-admin sends android.priority as
        # "high"), and accepts their numbers.
        if isinstance(value, int) and not isinstance(value, bool):
            return None if 0 <= value < len(enum) else "TYPE_ENUM: no such value"
        if isinstance(value, str) and value.upper() in enum:
            return None
        return f"TYPE_ENUM: expected one of {', '.join(enum)}"
    if not isinstance(value, str):
        return "TYPE_STRING"
    if description.get("format") == "google-duration" and not DURATION_PATTERN.fullmatch(value):
        return 'type.googleapis.com/google.protobuf.Duration: a duration such as "3.5s"'
    if description.get("format") == "google-datetime" and not DATETIME_PATTERN.fullmatch(value):
        return "type.googleapis.com/google.protobuf.Timestamp: an RFC 3339 date-time"
    return None


def _check_object(value: Any, schema_name: str, path: str) -> Iterator[Violation]:
    if not isinstance(value, dict):
        yield Violation(path, f"Invalid value at '{path}': expected a JSON object ({schema_name}).")
        return
    known = _fields(schema_name)
    seen: dict[str, str] = {}
    where = f" at '{path}'" if path else ""
    for name, field_value in value.items():
        if name not in known:
            description = f'Invalid JSON payload received. Unknown name "{name}"{where}: Cannot find field.'
            yield Violation(path or name, description)
            continue
        json_name, description = known[name]
        if json_name in seen:
            yield Violation(
                path or name,
                f'Invalid JSON payload received. Field "{json_name}"{where} is given twice '
                f"(as {seen[json_name]!r} and {name!r}).",
            )
            continue
        seen[json_name] = name
        if field_value is not None:
            yield from _check_value(field_value, description, f"{path}.{name}" if path else name)


# --- the same schema checks compiled, for the common case of a valid request ---------------------------------------


Checker = Callable[[Any], bool]


@cache
def _object_checker(schema_name: str) -> Checker:
    """Whether a value is a valid object of this type, without saying why: ~10x faster than ``_check_object``,
    which runs only on a request this refuses. Both read the same descriptions."""
    fields = {
        name: (json_name, _value_checker(description))
        for name, (json_name, description) in _fields(schema_name).items()
    }

    def check(value: Any) -> bool:
        if type(value) is not dict:
            return False
        seen: set[str] = set()
        for name, field_value in value.items():
            entry = fields.get(name)
            if entry is None or entry[0] in seen:
                return False
            seen.add(entry[0])
            if field_value is not None and not entry[1](field_value):
                return False
        return True

    return check


def _value_checker(description: Mapping[str, Any]) -> Checker:
    if "$ref" in description:
        name = description["$ref"]
        return lambda value: _object_checker(name)(value)
    kind = description.get("type")
    if kind == "any":
        return lambda value: True
    if kind == "object":
        entries = description.get("additionalProperties", {"type": "any"})
        if entries.get("type") == "any":
            return lambda value: type(value) is dict
        entry_ok = _value_checker(entries)
        return lambda value: type(value) is dict and all(v is not None and entry_ok(v) for v in value.values())
    if kind == "array":
        item_ok = _value_checker(description.get("items", {"type": "any"}))
        return lambda value: type(value) is list and all(item_ok(item) for item in value)
    if kind == "string" and "enum" not in description and "format" not in description:
        return lambda value: type(value) is str
    if kind == "boolean":
        return lambda value: type(value) is bool
    return lambda value: _scalar_problem(value, kind, description) is None


# --- rules the schema does not express ---------------------------------------------------------------------------


_CONDITION_TOKEN = re.compile(r"\s*(?:(?P<topic>'[^']*'|\"[^\"]*\")\s+in\s+topics\b|(?P<op>&&|\|\||!|\(|\)))")


def condition_problem(condition: str) -> str | None:
    """Why FCM would not parse this condition, or None: ``'a' in topics && ('b' in topics || !('c' in topics))``,
    at most five topics, each a valid topic name."""
    tokens: list[tuple[str, str]] = []
    position, text = 0, condition.rstrip()
    while position < len(text):
        match = _CONDITION_TOKEN.match(text, position)
        if match is None:
            return f"unexpected text at character {position + 1}"
        if match["topic"] is not None:
            name = match["topic"][1:-1]
            if not TOPIC_PATTERN.fullmatch(name):
                return "a topic name outside [a-zA-Z0-9-_.~%]"
            tokens.append(("topic", name))
        else:
            tokens.append(("op", match["op"]))
        position = match.end()
    topics = sum(kind == "topic" for kind, _ in tokens)
    if topics == 0:
        return "no topic"
    if topics > MAX_CONDITION_TOPICS:
        return f"{topics} topics, at most {MAX_CONDITION_TOPICS} are allowed"
    return None if _parse_or(tokens, 0) == len(tokens) else "not a well-formed expression"


def _parse_or(tokens: list[tuple[str, str]], at: int) -> int | None:
    """Recursive descent over ``or := and ('||' and)*``, ``and := unary ('&&' unary)*``, ``unary := '!' unary |
    topic | '(' or ')'``; each returns where it stopped, None when the tokens do not fit."""
    at_or_none = _parse_and(tokens, at)
    while at_or_none is not None and at_or_none < len(tokens) and tokens[at_or_none] == ("op", "||"):
        at_or_none = _parse_and(tokens, at_or_none + 1)
    return at_or_none


def _parse_and(tokens: list[tuple[str, str]], at: int) -> int | None:
    at_or_none = _parse_unary(tokens, at)
    while at_or_none is not None and at_or_none < len(tokens) and tokens[at_or_none] == ("op", "&&"):
        at_or_none = _parse_unary(tokens, at_or_none + 1)
    return at_or_none


def _parse_unary(tokens: list[tuple[str, str]], at: int) -> int | None:
    if at >= len(tokens):
        return None
    kind, text = tokens[at]
    if kind == "topic":
        return at + 1
    if text == "!":
        return _parse_unary(tokens, at + 1)
    if text == "(":
        end = _parse_or(tokens, at + 1)
        return end + 1 if end is not None and end < len(tokens) and tokens[end] == ("op", ")") else None
    return None


def _check_targets(message: Mapping[str, Any]) -> Iterator[Violation]:
    targets = [field for field in TARGET_FIELDS if message.get(field) is not None]  # null is absent in proto3
    if len(targets) != 1:
        yield Violation("message", f"Exactly one of {', '.join(TARGET_FIELDS)} must be specified; got {len(targets)}.")
        return
    field = targets[0]
    target = message[field]
    if not isinstance(target, str):
        return  # the schema walk has reported it
    if field in DEVICE_TARGETS and not target:
        yield Violation(f"message.{field}", "The registration token is not a valid FCM registration token")
    elif field == "topic" and target.startswith("/topics/"):
        yield Violation("message.topic", "Topic name must not start with the '/topics/' prefix.")
    elif field == "topic" and not TOPIC_PATTERN.fullmatch(target):
        yield Violation("message.topic", "Topic name must match [a-zA-Z0-9-_.~%]{1,900}.")
    elif field == "condition":
        problem = condition_problem(target)
        if problem is not None:
            yield Violation("message.condition", f"Invalid condition expression: {problem}.")


def _check_data_keys(data: Any, path: str) -> Iterator[Violation]:
    if not isinstance(data, dict):
        return
    for key in data:
        if key in RESERVED_DATA_KEYS or key.startswith(RESERVED_DATA_PREFIXES):
            yield Violation(f"{path}[{key}]", f"Invalid data payload key: {key!r} is reserved.")


def _field(fields: Mapping[str, Any], json_name: str) -> tuple[str, Any]:
    """(the name the client used, the value) of one field that may be spelled either way; the value None if
    absent. The schema walk has already refused a field given in both spellings."""
    if json_name in fields:
        return json_name, fields[json_name]
    name = snake_case(json_name)
    return name, fields.get(name)


def _check_platforms(message: Mapping[str, Any]) -> Iterator[Violation]:
    """The semantic rules on the platform blocks; paths use the names the client sent."""
    yield from _check_data_keys(message.get("data"), "message.data")
    android = message.get("android")
    if isinstance(android, dict):
        yield from _check_data_keys(android.get("data"), "message.android.data")
        notification = android.get("notification")
        if isinstance(notification, dict):
            color = notification.get("color")
            if isinstance(color, str) and not COLOR_PATTERN.fullmatch(color):
                yield Violation("message.android.notification.color", "Color must be in the form #RRGGBB.")
    apns = message.get("apns")
    headers = apns.get("headers") if isinstance(apns, dict) else None
    if isinstance(headers, dict):
        for name, header in headers.items():
            if name.lower() == "apns-priority" and header not in APNS_PRIORITIES:
                yield Violation(f"message.apns.headers[{name}]", "apns-priority must be 5 or 10.")
    webpush = message.get("webpush")
    if isinstance(webpush, dict):
        yield from _check_data_keys(webpush.get("data"), "message.webpush.data")
        options_name, options = _field(webpush, "fcmOptions")
        link = options.get("link") if isinstance(options, dict) else None
        if isinstance(link, str) and not link.lower().startswith("https://"):
            yield Violation(f"message.webpush.{options_name}.link", "The link must be an HTTPS URL.")


def violations(body: Any) -> list[Violation]:
    """Every reason FCM would refuse this request body (parsed JSON), or an empty list when it would take it."""
    if not isinstance(body, dict):
        return [Violation("", "Invalid JSON payload received. The request body must be a JSON object.")]
    if not _object_checker(REQUEST_SCHEMA)(body):
        found = list(_check_object(body, REQUEST_SCHEMA, ""))
        if found:
            return found
    message = body.get("message")
    if message is None:
        return [Violation("message", "'message' must be a JSON object.")]
    found = [*_check_targets(message), *_check_platforms(message)]
    if found:
        return found
    limit = message_limit(message)
    size = len(orjson.dumps(message))
    if size > limit:
        return [Violation("message", f"Message is too big: {size} bytes serialized, the limit is {limit} bytes.")]
    return []


def message_limit(message: Mapping[str, Any]) -> int:
    """FCM's size limit for a message: smaller for topic and condition messages."""
    fanout = any(message.get(field) is not None for field in FANOUT_TARGETS)
    return MAX_FANOUT_MESSAGE_BYTES if fanout else MAX_MESSAGE_BYTES


def validate_only(body: Mapping[str, Any]) -> bool:
    """Whether a valid request only asks FCM to check the message (``validateOnly`` or ``validate_only``)."""
    return bool(_field(body, "validateOnly")[1])
