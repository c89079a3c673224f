"""``config/payment-reminders.yaml``: the escalation ladder, the frequency cap and quiet hours."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from exstream_push.notify.timing import FrequencyCap, QuietHours
from exstream_push.settings import get_settings
from exstream_push.zones import TimeZoneName

# Manifest keys of a reminder document, kept in Document.attributes. None of them may appear in a push.
REMINDER_KEYS = ("DueDate", "AmountDue", "RiskSegment")


class ReminderStage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    days: int = Field(description="days after the due date the stage starts; negative: before it")
    template: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    priority: Literal["normal", "high"] = "normal"


class ReminderConfig(BaseModel):
    """``config/payment-reminders.yaml``: the escalation ladder, the frequency cap and quiet hours."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    due_date_timezone: TimeZoneName = Field("UTC", description="due dates are calendar days in this zone")
    stages: tuple[ReminderStage, ...]
    frequency_cap: FrequencyCap = FrequencyCap()
    quiet_hours: QuietHours = QuietHours()

    @field_validator("stages")
    @classmethod
    def _ladder(cls, stages: tuple[ReminderStage, ...]) -> tuple[ReminderStage, ...]:
        if not stages:
            raise ValueError("the ladder needs at least one stage")
        for what, values in (("name", [s.name for s in stages]), ("days", [s.days for s in stages])):
            if len(set(values)) != len(values):
                raise ValueError(f"two stages share a {what}")
        return tuple(sorted(stages, key=lambda stage: stage.days))

    def business_date(self, as_of: datetime) -> pd.Timestamp:
        """The calendar day ``as_of`` falls on where due dates are set."""
        return pd.Timestamp(as_of.astimezone(ZoneInfo(self.due_date_timezone)).date())


def load_reminder_config(path: Path | None = None) -> ReminderConfig:
    path = path or get_settings().config_dir / "payment-reminders.yaml"
    return ReminderConfig.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
