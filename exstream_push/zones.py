"""Time-zone names, checked once for every model and import that takes one."""

from __future__ import annotations

from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator


def check_time_zone(name: str) -> str:
    """The name unchanged if the IANA database knows it; a clear ValueError otherwise."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None
    return name


TimeZoneName = Annotated[str, AfterValidator(check_time_zone)]
