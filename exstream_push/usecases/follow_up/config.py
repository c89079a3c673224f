"""The follow-up use cases' configuration (``config/policy-change.yaml``, ``config/action-required.yaml``) and the
``FollowUpRules`` each turns into: everything that makes one follow-up use case differ from the other."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, NegativeInt, NonNegativeInt, PositiveInt, field_validator

from exstream_push.notify.timing import FrequencyCap, QuietHours
from exstream_push.settings import get_settings
from exstream_push.status import NOTICE_STAGE, Category, DocumentState, EngagementType, UseCase
from exstream_push.zones import TimeZoneName

NOTICE = NOTICE_STAGE
REMINDER = "reminder"


class Attribute(NamedTuple):
    """A use-case manifest key: the stable column name we report it under, and the key's name in the manifest."""

    name: str
    key: str


@dataclass(frozen=True)
class HandBack:
    """When and where a document goes back to Exstream, and what that does to its follow-up."""

    stage: str
    channel: str
    days_before_deadline: int
    state: DocumentState
    closes: bool  # an escalation ends the follow-up; a print fallback leaves the last reminders to come
    at_column: str


@dataclass(frozen=True)
class FollowUpRules:
    """Everything that makes one follow-up use case differ from another."""

    use_case: str
    category: str
    deadline: Attribute
    attributes: tuple[Attribute, ...]  # reported in the hand-back file and the audit, in this order
    required_flag: Attribute | None  # a Y/N key that must be Y for the document to be in scope
    template_attribute: Attribute | None  # picks "{value}_{notice|reminder}" templates when they exist
    closing_event: EngagementType
    closed_state: DocumentState
    closed_at_column: str
    reminders_count_from_notice: bool  # otherwise from the deadline
    reminder_offsets_days: tuple[int, ...]
    hand_back: HandBack
    expires: bool
    deadline_timezone: str
    frequency_cap: FrequencyCap | None = None  # for reminders; None: no cap
    quiet_hours: QuietHours | None = None  # for reminders; None: sent at any hour

    @property
    def extra_keys(self) -> tuple[str, ...]:
        """The manifest keys to extract; their values are also what the content guard keeps out of a push."""
        keys = [attribute.key for attribute in self.attributes]
        if self.required_flag is not None:
            keys.insert(0, self.required_flag.key)
        return tuple(keys)

    @property
    def active_states(self) -> tuple[str, ...]:
        """States still followed up: open, and handed back when the hand-back does not end the follow-up."""
        if self.hand_back.closes:
            return (DocumentState.OPEN.value,)
        return (DocumentState.OPEN.value, self.hand_back.state.value)


class _FollowUpConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    deadline_timezone: TimeZoneName = Field(
        "UTC", description="zone of deadlines given without one; a date means its end"
    )
    # The keys of config/payment-reminders.yaml; absent, a follow-up's reminders are neither capped nor held back.
    frequency_cap: FrequencyCap | None = None
    quiet_hours: QuietHours | None = None

    @field_validator("reminder_offsets_days", check_fields=False)
    @classmethod
    def _distinct_sorted(cls, offsets: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(offsets)) != len(offsets):
            raise ValueError("reminder offsets must be distinct")
        return tuple(sorted(offsets))


class PolicyChangeConfig(_FollowUpConfig):
    """``config/policy-change.yaml``."""

    requires_acknowledgement_key: str = "RequiresAcknowledgement"
    acknowledge_by_key: str = "AcknowledgeBy"
    reminder_offsets_days: tuple[PositiveInt, ...] = (3, 7)  # days after the first notice

    def rules(self) -> FollowUpRules:
        deadline = Attribute("acknowledge_by", self.acknowledge_by_key)
        return FollowUpRules(
            use_case=UseCase.POLICY_CHANGE.value,
            category=Category.POLICIES.value,
            deadline=deadline,
            attributes=(deadline,),
            required_flag=Attribute("requires_acknowledgement", self.requires_acknowledgement_key),
            template_attribute=None,
            closing_event=EngagementType.ACKNOWLEDGED,
            closed_state=DocumentState.ACKNOWLEDGED,
            closed_at_column="acknowledged_at",
            reminders_count_from_notice=True,
            reminder_offsets_days=self.reminder_offsets_days,
            hand_back=HandBack(
                stage="escalation",
                channel=get_settings().channels.policy_ack_overdue,
                days_before_deadline=0,
                state=DocumentState.ESCALATED,
                closes=True,
                at_column="escalated_at",
            ),
            expires=False,
            deadline_timezone=self.deadline_timezone,
            frequency_cap=self.frequency_cap,
            quiet_hours=self.quiet_hours,
        )


class ActionRequiredConfig(_FollowUpConfig):
    """``config/action-required.yaml``."""

    action_type_key: str = "ActionType"
    action_deadline_key: str = "ActionDeadline"
    reminder_offsets_days: tuple[NegativeInt, ...] = (-7, -3, -1)  # days before the deadline
    print_fallback_days_before: NonNegativeInt = 2

    def rules(self) -> FollowUpRules:
        action_type = Attribute("action_type", self.action_type_key)
        deadline = Attribute("action_deadline", self.action_deadline_key)
        return FollowUpRules(
            use_case=UseCase.ACTION_REQUIRED.value,
            category=Category.ACTIONS.value,
            deadline=deadline,
            attributes=(action_type, deadline),
            required_flag=None,
            template_attribute=action_type,
            closing_event=EngagementType.ACTION_COMPLETED,
            closed_state=DocumentState.ACTION_COMPLETED,
            closed_at_column="completed_at",
            reminders_count_from_notice=False,
            reminder_offsets_days=self.reminder_offsets_days,
            hand_back=HandBack(
                stage="print_fallback",
                channel=get_settings().channels.action_print_fallback,
                days_before_deadline=self.print_fallback_days_before,
                state=DocumentState.PRINT_FALLBACK,
                closes=False,
                at_column="print_fallback_at",
            ),
            expires=True,
            deadline_timezone=self.deadline_timezone,
            frequency_cap=self.frequency_cap,
            quiet_hours=self.quiet_hours,
        )


CONFIG_MODELS: dict[str, type[PolicyChangeConfig] | type[ActionRequiredConfig]] = {
    UseCase.POLICY_CHANGE.value: PolicyChangeConfig,
    UseCase.ACTION_REQUIRED.value: ActionRequiredConfig,
}


def reminder_stage(offset_days: int) -> str:
    return f"{REMINDER}{offset_days:+d}d"


def load_rules(use_case: str, config_dir: Path | None = None) -> FollowUpRules:
    """The use case's rules from ``{config_dir}/{use_case}.yaml``; a missing file means the documented defaults."""
    model = CONFIG_MODELS[use_case]
    path = (config_dir or get_settings().config_dir) / f"{use_case}.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    return model.model_validate(raw or {}).rules()
