"""``config/delivery-exceptions.yaml``: the rule table (what a failure is called, on which channel, what operations
do next) and the few tunables of the use case."""

from __future__ import annotations

import fnmatch
from re import Pattern
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from exstream_push.message_file import EngineMessage
from exstream_push.settings import Settings, get_settings
from exstream_push.status import UseCase
from exstream_push.zones import TimeZoneName

USE_CASE = UseCase.DELIVERY_EXCEPTIONS.value
CONFIG_FILE = "delivery-exceptions.yaml"
IDENTITY_GROUPS = ("document_id", "customer_id", "document_type")
_NAME = r"^[a-z0-9][a-z0-9_-]*$"
_TOPIC = r"^[a-zA-Z0-9\-_.~%]+$"  # what FCM accepts as a topic name


class FailureRule(BaseModel):
    """One row of the rule table: what a failure is called, on which channel, and what operations do next."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    failure_class: str = Field(pattern=_NAME)
    channel: str = Field(pattern=_NAME)
    next_action: str = Field(min_length=1, max_length=300)
    reissue_via: str = "original"
    schema_types: tuple[str, ...] = ()
    message_patterns: tuple[Pattern[str], ...] = ()

    def matches_event(self, schema_type: str) -> bool:
        lowered = schema_type.lower()
        return any(fnmatch.fnmatchcase(lowered, glob.lower()) for glob in self.schema_types)

    def matches_message(self, text: str) -> bool:
        return any(pattern.search(text) for pattern in self.message_patterns)


class DeliveryExceptionsConfig(BaseModel):
    """``config/delivery-exceptions.yaml``: the rule table and the few tunables of the use case."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    operations_topic: str = Field("ops-delivery-exceptions", pattern=_TOPIC)
    masked_reference_chars: int = Field(4, ge=0, le=8)
    message_file_timezone: TimeZoneName = "UTC"
    tracking_event_job_key: str = "JobId"
    message_identity_patterns: tuple[Pattern[str], ...] = ()
    rules: tuple[FailureRule, ...] = Field(min_length=1)
    unmatched: FailureRule
    job_failed: FailureRule

    @field_validator("message_identity_patterns")
    @classmethod
    def _names_an_identity(cls, patterns: tuple[Pattern[str], ...]) -> tuple[Pattern[str], ...]:
        for pattern in patterns:
            if not set(pattern.groupindex) & set(IDENTITY_GROUPS):
                raise ValueError(f"{pattern.pattern!r} names none of the groups {', '.join(IDENTITY_GROUPS)}")
        return patterns

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.message_file_timezone)

    def rule_for_event(self, schema_type: str) -> FailureRule:
        return next((rule for rule in self.rules if rule.matches_event(schema_type)), self.unmatched)

    def rule_for_message(self, message: EngineMessage) -> FailureRule:
        text = f"{message.code or ''} {message.text}".strip()
        return next((rule for rule in self.rules if rule.matches_message(text)), self.unmatched)

    def rule_named(self, failure_class: str) -> FailureRule:
        every = (*self.rules, self.unmatched, self.job_failed)
        return next((rule for rule in every if rule.failure_class == failure_class), self.unmatched)

    def identity_in(self, text: str) -> dict[str, str]:
        """The document id, customer id and document type a message names, each from the first pattern finding it."""
        found: dict[str, str] = {}
        for pattern in self.message_identity_patterns:
            match = pattern.search(text)
            if match is None:
                continue
            for name, value in match.groupdict().items():
                if name in IDENTITY_GROUPS and value and name not in found:
                    found[name] = value
        return found


def load_config(settings: Settings | None = None) -> DeliveryExceptionsConfig:
    """The rule table of the configuration directory; there is no default, since its rules are the business's."""
    settings = settings or get_settings()
    path = settings.config_dir / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"delivery exceptions need their rule table at {path} (EXSTREAM_PUSH_CONFIG_DIR)")
    return DeliveryExceptionsConfig.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
