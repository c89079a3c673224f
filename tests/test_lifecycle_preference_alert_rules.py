"""The lifecycle, preference-sync and operational-alert rules as pure functions on frames, without Prefect or a
ledger."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pandas as pd

from exstream_push.status import Channel, Platform
from exstream_push.usecases.lifecycle_tracking.rules import (
    candidates,
    fallback_rows,
    forward,
    funnel_display,
    funnel_table,
    furthest,
    status_rows,
    steps_of,
)
from exstream_push.usecases.operational_alert.rules import (
    Alert,
    alert_of,
    audience_frame,
    customer_lines,
    follow_up_rows,
    report,
    report_rows,
    unique,
)
from exstream_push.usecases.preference_sync.rules import changed_customers, preference_rows

AS_OF = datetime(2026, 11, 5, 9, tzinfo=UTC)
CURRENT_COLUMNS = ["use_case", "document_id", "customer_id", "document_type", "engagement", "engagement_at"]


def test_the_furthest_step_wins_and_a_document_never_moves_backwards() -> None:
    sent = pd.DataFrame(
        [("u", "D1", "2026-11-01 08:00:00"), ("u", "D2", datetime(2026, 11, 1, 8, tzinfo=UTC))],
        columns=["use_case", "document_id", "at"],
    )
    seen = pd.DataFrame(
        [
            ("u", "D1", "opened", datetime(2026, 11, 2, 8, tzinfo=UTC)),
            ("u", "D1", "delivered", datetime(2026, 11, 3, 8, tzinfo=UTC)),  # later, but behind opened
            ("u", "D3", "delivered", datetime(2026, 11, 2, 8, tzinfo=UTC)),  # D3 already opened
            ("u", "D4", "acknowledged", datetime(2026, 11, 2, 8, tzinfo=UTC)),
            ("u", "D4", "action_completed", datetime(2026, 11, 2, 9, tzinfo=UTC)),  # same rank, later: wins
        ],
        columns=["use_case", "document_id", "step", "at"],
    )
    best = furthest(candidates(sent, seen))
    current = pd.DataFrame(
        [
            ("u", "D1", "C1", "statement", None, None),
            ("u", "D2", "C2", "statement", None, None),
            ("u", "D3", "C3", "statement", "opened", None),
            ("u", "D4", "C4", "statement", "opened", None),
        ],
        columns=CURRENT_COLUMNS,
    )
    rows = status_rows(forward(best, current), AS_OF)
    assert sorted(rows) == [
        ["D1", "C1", "u", "opened", "2026-11-02T08:00:00Z", "2026-11-05T09:00:00Z"],
        ["D2", "C2", "u", "sent", "2026-11-01T08:00:00Z", "2026-11-05T09:00:00Z"],
        ["D4", "C4", "u", "action_completed", "2026-11-02T09:00:00Z", "2026-11-05T09:00:00Z"],
    ]
    assert steps_of(rows[:1])[0]["at"].tzinfo is not None  # a naive text aggregate is read as UTC


def test_nothing_to_fold_is_no_row() -> None:
    empty = pd.DataFrame(columns=["use_case", "document_id", "at"])
    best = furthest(candidates(empty, pd.DataFrame(columns=["use_case", "document_id", "step", "at"])))
    assert best.empty
    assert status_rows(forward(best, pd.DataFrame(columns=CURRENT_COLUMNS)), AS_OF) == []


def test_fallback_rows_name_the_wait_in_hours() -> None:
    unopened = pd.DataFrame(
        [("D1", "C1", "u", "statement", datetime(2026, 11, 1, 8, tzinfo=UTC))],
        columns=["document_id", "customer_id", "use_case", "document_type", "engagement_at"],
    )
    assert fallback_rows(unopened, AS_OF, timedelta(hours=72)) == [
        ["D1", "C1", "u", "statement", "2026-11-01T08:00:00Z", "not_opened_within_72h", "2026-11-05T09:00:00Z"]
    ]


def test_the_funnel_counts_documents_reaching_at_least_each_step_per_job_with_shares() -> None:
    counts = pd.DataFrame(
        [
            ("u", "J1", "t", None, 1),
            ("u", "J1", "t", "sent", 2),
            ("u", "J1", "t", "opened", 3),
            ("u", "J1", "t", "action_completed", 4),
            ("u", "J2", "t", "sent", 3),
        ],
        columns=["use_case", "job_id", "document_type", "engagement", "documents"],
    )
    table = funnel_table(counts)
    assert table[0] == {
        "use_case": "u",
        "job_id": "J1",
        "document_type": "t",
        "documents": 10,
        "sent": 9,
        "sent_pct": 90.0,
        "delivered": 7,
        "delivered_pct": 70.0,
        "opened": 7,
        "opened_pct": 70.0,
        "document_accessed": 4,
        "document_accessed_pct": 40.0,
        "acknowledged_or_completed": 4,
        "acknowledged_or_completed_pct": 40.0,
    }
    assert (table[1]["job_id"], table[1]["documents"], table[1]["sent_pct"], table[1]["opened_pct"]) == (
        "J2",
        3,
        100.0,
        0.0,
    )
    shown = funnel_display(table)
    assert shown[0]["opened"] == "7 (70.0%)"
    assert "opened_pct" not in shown[0]


def test_the_latest_change_is_the_next_watermark() -> None:
    early, late = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)
    assert changed_customers([("C2", late), ("C1", early), ("C2", early)]) == (["C1", "C2"], late)
    assert changed_customers([]) == ([], None)


def test_a_stated_opt_out_overrides_an_opted_in_device() -> None:
    moment = datetime(2026, 11, 1, 8, tzinfo=UTC)
    devices = pd.DataFrame(
        [
            ("C1", "d1", True, True, "bills;statements", moment),
            ("C2", "d2", True, True, "", moment),
            ("C3", "d3", False, True, "", moment),
        ],
        columns=["customer_id", "device_id", "active", "push_opt_in", "categories", "updated_at"],
    )
    stated = {
        "C2": {
            "push_opt_in": False,
            "categories": None,
            "preferred_channels": json.dumps({"default": "email"}),
            "updated_at": moment + timedelta(hours=1),
        }
    }
    rows = list(preference_rows(["C1", "C2", "C3"], devices, stated))
    assert rows == [
        ["C1", "true", 1, "push", "bills;statements", "2026-11-01T08:00:00Z"],
        ["C2", "false", 1, "email", "", "2026-11-01T09:00:00Z"],
        ["C3", "false", 0, "print", "", "2026-11-01T08:00:00Z"],  # an inactive device counts for nothing
    ]


def test_platforms_and_channels_have_one_vocabulary() -> None:
    assert {member.value for member in Platform} == {"android", "ios", "web"}
    assert {member.value for member in Channel} == {"push", "email", "print", "web", "sms"}


ALERT_ROW = {
    "alert_id": "OPS-1",
    "kind": "outage",
    "severity": "critical",
    "message_key": "outage",
    "audience": json.dumps({"segment": "pilot"}),
    "occurred_at": datetime(2026, 11, 5, 8),  # SQLite: no zone
    "received_at": datetime(2026, 11, 5, 8, 1),
    "pushed_at": None,
    "follow_up_posted_at": None,
    "state": "received",
}


def test_an_alert_row_is_read_as_utc() -> None:
    alert = alert_of(ALERT_ROW)
    assert alert.audience == {"segment": "pilot"}
    assert alert.occurred_at == datetime(2026, 11, 5, 8, tzinfo=UTC)


def test_the_audience_carries_no_customer_in_its_reference() -> None:
    alert = alert_of(ALERT_ROW)
    frame = audience_frame(alert, ["C1", "C2"], "REF")
    assert frame["document_id"].tolist() == ["alert:OPS-1/C1", "alert:OPS-1/C2"]
    assert set(frame["ref"]) == {"REF"} and set(frame["job_id"]) == {"OPS-1"}
    assert frame["locale"].isna().all()


def test_segment_files_list_each_customer_once() -> None:
    assert list(unique(customer_lines(["C2\n", "# note\n", "\n", " C1 \n", "C2\n"]))) == ["C2", "C1"]


def test_follow_up_rows_say_whether_the_push_reached_the_customer() -> None:
    alert = Alert("OPS-1", "outage", "critical", "outage", {}, datetime(2026, 11, 5, 8, tzinfo=UTC), "pushed")
    rows = list(follow_up_rows(alert, [("C1", 2), ("C2", 0)], AS_OF))
    assert [row[6:8] for row in rows] == [["notified", 2], ["not_notified", 0]]
    assert rows[0][5] == "2026-11-05T08:00:00Z" and rows[0][8] == "2026-11-05T09:00:00Z"


def test_the_report_groups_outcomes_by_status_and_counts_the_last_post() -> None:
    result = report(ALERT_ROW, (3, 2, 4), [3, 2], {("sent", None): 4, ("skipped", "no_device"): 1}, "ops-follow-up")
    assert result["push"]["by_status"] == {"sent": {"": 4}, "skipped": {"no_device": 1}}
    assert result["follow_up"] == {"channel": "ops-follow-up", "posted_at": None, "posts": 2, "rows": 2}
    assert result["occurred_at"] == "2026-11-05T08:00:00Z"


def test_the_report_reads_as_rows_one_level_deep_leaving_out_what_is_not_a_number_or_a_text() -> None:
    result = report(ALERT_ROW, (3, 2, 4), [3, 2], {("sent", None): 4}, "ops-follow-up")
    rows = {row["of the alert"]: row["value"] for row in report_rows(result)}
    assert rows["alert_id"] == result["alert_id"] and rows["push customers_notified"] == 2
    assert rows["follow_up channel"] == "ops-follow-up" and rows["follow_up rows"] == 2
    assert "push by_status" not in rows and "follow_up posted_at" not in rows  # a mapping, and no post yet
