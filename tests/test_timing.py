"""Quiet hours, frequency caps and the reminder ladder as rules, away from any flow."""

from __future__ import annotations

from datetime import UTC, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from pydantic import ValidationError

from exstream_push.notify.timing import QuietHours, allowed_by_cap, quiet_hours_end, quiet_until
from exstream_push.usecases.payment_reminders.config import ReminderConfig, load_reminder_config
from exstream_push.usecases.payment_reminders.rules import parse_due_dates, stage_positions
from exstream_push.usecases.payment_reminders.tasks import read_payments

NIGHT = QuietHours()  # 21:00–08:00


@pytest.mark.parametrize(
    ("as_of", "zone", "expected"),
    [
        ("2026-11-29T12:00:00+00:00", "America/New_York", "2026-11-29T13:00:00+00:00"),  # 07:00 local
        ("2026-11-29T13:00:00+00:00", "America/New_York", None),  # 08:00 local: the window has ended
        ("2026-11-29T21:00:00+00:00", "Europe/London", "2026-11-30T08:00:00+00:00"),  # 21:00 local: it starts
        ("2026-11-29T20:59:59+00:00", "Europe/London", None),
        ("2026-11-29T11:59:59+00:00", "Asia/Tokyo", None),
        ("2026-11-29T12:00:00+00:00", "Asia/Tokyo", "2026-11-29T23:00:00+00:00"),  # 21:00 sharp is quiet
        # The night clocks go forward in New York: the window still ends at 08:00 local, now UTC-4.
        ("2026-03-08T06:30:00+00:00", "America/New_York", "2026-03-08T12:00:00+00:00"),
        ("2026-10-25T01:30:00+00:00", "Europe/Paris", "2026-10-25T07:00:00+00:00"),  # and back in Paris
    ],
)
def test_quiet_hours_end_in_the_devices_zone(as_of: str, zone: str, expected: str | None) -> None:
    end = quiet_hours_end(datetime.fromisoformat(as_of), ZoneInfo(zone), NIGHT)
    assert end == (datetime.fromisoformat(expected) if expected else None)


def test_windows_within_a_day_and_no_window() -> None:
    lunch = QuietHours(start=time(12), end=time(14))
    zone = ZoneInfo("UTC")
    assert quiet_hours_end(datetime(2026, 11, 29, 13, tzinfo=UTC), zone, lunch) == datetime(
        2026, 11, 29, 14, tzinfo=UTC
    )
    assert quiet_hours_end(datetime(2026, 11, 29, 23, tzinfo=UTC), zone, lunch) is None
    never = QuietHours(start=time(9), end=time(9))
    assert quiet_hours_end(datetime(2026, 11, 29, 9, tzinfo=UTC), zone, never) is None


def test_quiet_until_per_device_falls_back_to_the_default_zone() -> None:
    as_of = datetime(2026, 11, 29, 22, tzinfo=UTC)
    zones = pd.Series(["America/New_York", None, "", "Not/AZone", "Asia/Singapore"], dtype=object)
    until = quiet_until(as_of, zones, NIGHT)
    assert until.isna().tolist() == [True, False, False, False, False]
    assert until[1] == until[2] == until[3] == pd.Timestamp("2026-11-30T08:00:00Z")  # UTC, the default
    assert until[4] == pd.Timestamp("2026-11-30T00:00:00Z")  # 06:00 in Singapore → 08:00 local
    paris = quiet_until(as_of, zones, QuietHours(default_timezone="Europe/Paris"))
    assert paris[1] == pd.Timestamp("2026-11-30T07:00:00Z")


def test_cap_keeps_the_first_rows_of_each_customer_minus_what_they_already_had() -> None:
    customers = pd.Series(["a", "b", "a", "c", "a", "b"])
    already = pd.Series({"b": 1, "c": 2})
    assert allowed_by_cap(customers, already, 2).tolist() == [True, True, True, False, False, False]
    assert allowed_by_cap(customers, pd.Series(dtype="int64"), 1).tolist() == [True, True, False, True, False, False]


def test_ladder_places_each_document_in_its_latest_stage() -> None:
    config = load_reminder_config()
    as_of_day = config.business_date(datetime(2026, 11, 29, 23, 30, tzinfo=UTC))
    due = parse_due_dates(
        pd.Series(["2026-12-03", "2026-12-02", "2026-11-30", "2026-11-29", "2026-11-28", "2026-11-15", "2026-11-14"])
    )
    names = ["-", *[stage.name for stage in config.stages]]
    positions = stage_positions(due, as_of_day, config)
    assert [names[p + 1] for p in positions] == [
        "-",  # four days before
        "due_soon",  # three days before
        "due_soon",
        "due_today",
        "overdue",
        "overdue",  # fourteen days after
        "seriously_overdue",  # fifteen days after
    ]
    assert stage_positions(
        parse_due_dates(pd.Series(["2026-10-30", "2026-02-30", None, "29/11/2026"])), as_of_day, config
    ).tolist() == [4, -1, -1, -1]


def test_the_calendar_day_is_read_in_the_due_date_zone() -> None:
    config = load_reminder_config().model_copy(update={"due_date_timezone": "Pacific/Auckland"})
    assert config.business_date(datetime(2026, 11, 29, 12, tzinfo=UTC)) == pd.Timestamp("2026-11-30")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"stages": [{"name": "a", "days": 0, "template": "a"}, {"name": "b", "days": 0, "template": "b"}]}, "share"),
        ({"stages": []}, "at least one stage"),
        ({"quiet_hours": {"start": 1260, "end": "08:00"}}, "quoted"),
        ({"due_date_timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"stages": [{"name": "a", "days": 0, "template": "a", "priority": "urgent"}]}, "priority"),
        ({"frequency_cap": {"max_notifications": 0}}, "max_notifications"),
    ],
)
def test_config_mistakes_are_refused(change: dict, message: str) -> None:
    base = {"stages": [{"name": "due", "days": 0, "template": "due"}]}
    with pytest.raises(ValidationError, match=message):
        ReminderConfig.model_validate({**base, **change})


def test_the_shipped_config_is_the_issues_default() -> None:
    config = load_reminder_config()
    assert [(s.name, s.days) for s in config.stages] == [
        ("due_soon", -3),
        ("due_today", 0),
        ("overdue", 1),
        ("seriously_overdue", 15),
        ("final_demand", 30),
    ]
    assert (config.frequency_cap.max_notifications, config.frequency_cap.window_days) == (2, 7)
    assert (config.quiet_hours.start, config.quiet_hours.end) == (time(21), time(8))
    templates = Path(__file__).resolve().parent.parent / "templates" / "payment-reminders"
    for stage in config.stages:
        for locale in ("en", "fr"):
            assert (templates / f"{stage.template}.{locale}.j2").is_file()


def test_payments_file_rows_are_checked_by_line(tmp_path: Path) -> None:
    path = tmp_path / "payments.csv"
    path.write_text(
        "customer_id,document_id,paid_at\n"
        "C1,D1,2026-11-28T10:00:00+01:00\n"
        "C1,D1,2026-11-27\n"  # the same payment reported twice: the earliest counts
        ",D2,2026-11-28\n"
        "C3,,2026-11-28\n"
        "C4,D4,last week\n"
    )
    valid, errors = read_payments(path)
    assert valid[["customer_id", "document_id"]].values.tolist() == [["C1", "D1"]]
    assert valid["paid_at"].tolist() == [pd.Timestamp("2026-11-27T00:00:00Z")]
    assert errors == [
        (4, "customer_id is empty"),
        (5, "document_id is empty"),
        (6, "paid_at is not an ISO date or date-time"),
    ]
