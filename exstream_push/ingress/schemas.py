"""What each ingress route accepts. FastAPI turns a failed check into a 422 whose ``loc`` names the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from exstream_push.devices import address_problem
from exstream_push.manifest import MAX_ID_LENGTH  # ids are index keys, bounded alike wherever they enter
from exstream_push.status import Channel, EngagementType, Platform, PushProvider, is_failed_delivery
from exstream_push.zones import TimeZoneName

# Keeps one request's statements well under SQLite's and PostgreSQL's bind-parameter limits.
MAX_EVENTS_PER_REQUEST = 10_000
# An alert's explicit audience; a larger one is a named segment (config/ops-alert-segments.yaml).
MAX_ALERT_CUSTOMERS = 10_000
# Tracking events nest a few levels; the limit stays far below Python's recursion limit and pydantic's own.
MAX_JSON_DEPTH = 32


class BodyError(ValueError):
    """A body that is not JSON the ingress will parse; the message is safe to return to the caller."""


def load_json(body: bytes) -> Any:
    """The body parsed as JSON, nested at most MAX_JSON_DEPTH levels; a syntax error stays a JSONDecodeError.

    Anything else that stops the parser (nesting beyond Python's recursion limit, a number with thousands of
    digits, bytes that are not UTF-8) is a BodyError with the reason, not an exception nobody expected.
    """
    try:
        document = json.loads(body)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise BodyError(f"the JSON body is nested more than {MAX_JSON_DEPTH} levels deep") from None
    except ValueError as exc:  # UnicodeDecodeError, or an integer beyond the digit limit of int()
        raise BodyError(f"the body is not JSON the ingress accepts: {exc}") from None
    containers: list[tuple[Any, int]] = [(document, 1)]
    while containers:
        value, depth = containers.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        if depth > MAX_JSON_DEPTH:
            raise BodyError(f"the JSON body is nested more than {MAX_JSON_DEPTH} levels deep")
        containers.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return document


def _printable(value: str) -> str:
    """PostgreSQL refuses NUL in text and a control character in an id is never meant; both are refused here."""
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        raise ValueError("must not contain control characters")
    return value


def _in_utc(moment: datetime) -> datetime:
    """The ledger stores UTC: a moment that has no UTC equivalent (year 1 or 9999 at an offset) is refused here."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("must be a date-time that exists in UTC") from None


Identifier = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_ID_LENGTH),
    AfterValidator(_printable),
]
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_in_utc)]
Category = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_-]{1,64}$")]


def _one_or_many(value: Any) -> Any:
    """A route that takes a list also takes one object, so a single event needs no wrapping."""
    return [value] if isinstance(value, dict) else value


Address = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4096)]
SubscriptionKey = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]


class SubscriptionKeysIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    p256dh: SubscriptionKey
    auth: SubscriptionKey


class WebPushSubscriptionIn(BaseModel):
    """A browser's subscription exactly as ``PushSubscription.toJSON()`` gives it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    endpoint: Address
    expiration_time: float | None = Field(None, alias="expirationTime", description="ignored: the browser's guess")
    keys: SubscriptionKeysIn


class DeviceIn(BaseModel):
    """A device as the app back end knows it now; the same device_id again replaces what was stored.

    An FCM or APNs device gives its ``token``; a Web Push one its ``subscription`` instead (``provider`` webpush).
    """

    model_config = ConfigDict(extra="forbid")

    customer_id: Identifier
    device_id: Identifier
    platform: Platform
    provider: PushProvider = PushProvider.FCM
    token: Address | None = Field(
        None, validate_default=True, description="FCM registration token or APNs device token (hex)"
    )
    subscription: WebPushSubscriptionIn | None = Field(
        None, validate_default=True, description="Web Push: what PushSubscription.toJSON() gives"
    )
    active: bool = Field(True, description="false unregisters the device: it is kept, but never pushed to again")
    push_opt_in: bool = True
    locale: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")] | None = None
    timezone: TimeZoneName | None = Field(None, description="IANA zone, e.g. Europe/Paris")
    categories: list[Category] = Field(default_factory=list, description="opted-in push categories; empty means all")

    @field_validator("token")
    @classmethod
    def _token_for_its_provider(cls, token: str | None, info: ValidationInfo) -> str | None:
        provider = info.data.get("provider")
        if provider is None:  # refused already
            return token
        if provider is PushProvider.WEBPUSH:
            if token is not None:
                raise ValueError("a webpush device gives its subscription instead")
            return token
        if token is None:
            raise ValueError(f"required for an {provider} device")
        problem = address_problem(provider, token, None, None)
        if problem is not None:
            raise ValueError(problem)
        return token

    @field_validator("subscription")
    @classmethod
    def _subscription_for_webpush(
        cls, subscription: WebPushSubscriptionIn | None, info: ValidationInfo
    ) -> WebPushSubscriptionIn | None:
        provider = info.data.get("provider")
        if provider is None or (provider is not PushProvider.WEBPUSH and subscription is None):
            return subscription
        if subscription is None:
            raise ValueError("required for a webpush device")
        if provider is not PushProvider.WEBPUSH:
            raise ValueError("only a webpush device has a subscription")
        problem = address_problem(provider, subscription.endpoint, subscription.keys.p256dh, subscription.keys.auth)
        if problem is not None:
            raise ValueError(problem)
        return subscription

    def address(self) -> tuple[str, str | None, str | None]:
        """(token, p256dh, auth) as the device registry stores them: a subscription's endpoint is its token."""
        if self.subscription is not None:
            keys = self.subscription.keys
            return self.subscription.endpoint, keys.p256dh, keys.auth
        return str(self.token), None, None


class PreferenceIn(BaseModel):
    """A customer's stated preferences; a field left out keeps what was stated before."""

    model_config = ConfigDict(extra="forbid")

    customer_id: Identifier
    push_opt_in: bool | None = None
    categories: list[Category] | None = Field(None, description="opted-in push categories; empty means all")
    preferred_channels: dict[Category, Channel] | None = Field(None, description="category → preferred channel")

    @model_validator(mode="after")
    def _states_something(self) -> PreferenceIn:
        if self.push_opt_in is None and self.categories is None and self.preferred_channels is None:
            raise ValueError("give at least one of push_opt_in, categories, preferred_channels")
        return self


class EngagementEventIn(BaseModel):
    """The schema of ``exstream-push events import``, one JSON Lines record."""

    model_config = ConfigDict(extra="forbid")

    event_id: Identifier
    type: EngagementType
    document_id: Identifier | None = None
    document_ref: Identifier | None = Field(None, description="the opaque reference the push carried")
    customer_id: Identifier
    device_id: Identifier | None = None
    occurred_at: UtcDatetime

    @model_validator(mode="after")
    def _names_a_document(self) -> EngagementEventIn:
        if self.document_id is None and self.document_ref is None:
            raise ValueError("document_id or document_ref is required")
        return self


EngagementEvents = Annotated[
    list[EngagementEventIn], BeforeValidator(_one_or_many), Field(min_length=1, max_length=MAX_EVENTS_PER_REQUEST)
]


class TrackingHeader(BaseModel):
    """``expctr``: what kind of tracking event this is. Other keys are kept as sent."""

    model_config = ConfigDict(extra="allow")

    schemaType: Annotated[str, StringConstraints(min_length=1, max_length=200)]  # field names are Exstream's
    eventId: Identifier | None = None
    eventDate: str | None = None  # kept as sent, checked to be a date-time with a zone

    @field_validator("eventDate")
    @classmethod
    def _aware_date(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                raise ValueError("must be an ISO date-time") from None
            if moment.tzinfo is None:
                raise ValueError("must carry a time zone")
            _in_utc(moment)
        return value


class TrackingEventIn(BaseModel):
    """An Exstream tracking event; ``user{}`` and every other block are stored whole, never logged."""

    model_config = ConfigDict(extra="allow")

    expctr: TrackingHeader
    exstreamJob: dict[str, Any] | None = None

    @property
    def failed(self) -> bool:
        """A delivery that did not happen: ``Exstream-<channel>-Failed`` or an e-mail not delivered."""
        return is_failed_delivery(self.expctr.schemaType)


TrackingEvents = Annotated[
    list[TrackingEventIn], BeforeValidator(_one_or_many), Field(min_length=1, max_length=MAX_EVENTS_PER_REQUEST)
]


class OpsAlertIn(BaseModel):
    """An operational event; ``customer_ids`` or a named ``segment`` (config/ops-alert-segments.yaml) says who."""

    model_config = ConfigDict(extra="forbid")

    alert_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]
    kind: Literal["outage", "claim_status", "security"]
    severity: Literal["critical", "error", "warning", "info"]
    customer_ids: Annotated[list[Identifier], Field(min_length=1, max_length=MAX_ALERT_CUSTOMERS)] | None = Field(
        None, description=f"at most {MAX_ALERT_CUSTOMERS:,}; a larger audience is a segment"
    )
    segment: Identifier | None = None
    message_key: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,64}$")] = Field(
        description="template templates/operational-alert/{message_key}.{locale}.j2, else generic"
    )
    occurred_at: UtcDatetime

    @model_validator(mode="after")
    def _one_audience(self) -> OpsAlertIn:
        if (self.customer_ids is None) == (self.segment is None):
            raise ValueError("give exactly one of customer_ids or segment")
        return self

    def audience(self) -> dict[str, Any]:
        """As stored in ``OpsAlert.audience``: each customer once, in a stable order."""
        if self.customer_ids is not None:
            return {"customer_ids": sorted(set(self.customer_ids))}
        return {"segment": self.segment}
