"""Time-zone names, checked once for every model and import that takes one; and a run's moment, checked once."""

from __future__ import annotations

from datetime import UTC, datetime
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


def run_moment(as_of: datetime | None) -> datetime:
    """The moment a run acts at, in UTC (so the ledger stores it so): ``as_of`` as given, with its zone, or now.

    The one wall-clock read of a run. A naive ``as_of`` is refused: read in the server's zone, a replayed run would
    decide otherwise than the original.
    """
    if as_of is None:
        return datetime.now(UTC)
    if as_of.tzinfo is None:
        raise ValueError(f"as_of needs a time zone, e.g. {as_of.isoformat()}+00:00")
    return as_of.astimezone(UTC)
