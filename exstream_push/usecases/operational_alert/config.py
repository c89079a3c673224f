"""Operational alerts' configuration: the named segments of ``config/ops-alert-segments.yaml`` and the follow-up
channel's columns."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from exstream_push.settings import Settings
from exstream_push.status import UseCase

USE_CASE = UseCase.OPERATIONAL_ALERT.value
SEGMENTS_FILE = "ops-alert-segments.yaml"
FOLLOW_UP_HEADER = [
    "alert_id",
    "customer_id",
    "kind",
    "severity",
    "message_key",
    "occurred_at",
    "push_status",
    "devices_notified",
    "requested_at",
]


class SegmentError(LookupError):
    """A segment that is not defined, or defined wrongly; the message says which and why."""


class DeviceSelector(BaseModel):
    """Customers with at least one active device matching every attribute given; none given: every such customer."""

    model_config = ConfigDict(extra="forbid")

    platform: str | None = None
    locale: str | None = None
    timezone: str | None = None


class Segment(BaseModel):
    """A named audience: a short fixed list, a file of customer ids, or a device attribute."""

    model_config = ConfigDict(extra="forbid")

    customer_ids: list[str] | None = None
    file: Path | None = Field(None, description="one customer id per line, relative to the config folder")
    devices: DeviceSelector | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Segment:
        if sum(source is not None for source in (self.customer_ids, self.file, self.devices)) != 1:
            raise ValueError("a segment has exactly one of customer_ids, file or devices")
        return self


def load_segments(settings: Settings) -> dict[str, Segment]:
    """Read on every use, so an edited segment file applies to the next alert without a restart."""
    path = settings.config_dir / SEGMENTS_FILE
    if not path.exists():
        return {}
    raw = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("segments") or {}
    try:
        return {str(name): Segment.model_validate(definition or {}) for name, definition in raw.items()}
    except ValueError as exc:
        raise SegmentError(f"{path}: {exc}") from None
