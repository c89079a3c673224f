"""The follow-up rules as pure functions on frames, away from any flow, ledger or Prefect."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from exstream_push.usecases.follow_up.config import ActionRequiredConfig, PolicyChangeConfig
from exstream_push.usecases.follow_up.rules import (
    Standing,
    completion_table,
    in_scope,
    parse_deadlines,
    plan,
    screen,
)

POLICY = PolicyChangeConfig().rules()
ACTION = ActionRequiredConfig().rules()
AS_OF = datetime(2026, 12, 10, 9, tzinfo=UTC)
HISTORY_COLUMNS = ["document_id", "stage", "first_as_of", "pending"]


def test_deadlines_a_bare_date_is_the_end_of_that_day_in_the_zone() -> None:
    values = pd.Series(["2026-12-14", "2026-12-14T10:00:00", "2026-12-14T10:00:00+00:00", "14/12/2026", None])
    moments = parse_deadlines(values, "Europe/Paris")
    assert moments[0] == pd.Timestamp("2026-12-14T23:00:00Z")  # midnight after the 14th, Paris
    assert moments[1] == pd.Timestamp("2026-12-14T09:00:00Z")  # no zone: read in Paris
    assert moments[2] == pd.Timestamp("2026-12-14T10:00:00Z")
    assert moments[3:].isna().all()


def test_screen_says_why_a_record_is_out_of_scope() -> None:
    records = pd.DataFrame(
        {
            "RequiresAcknowledgement": ["Y", "N", None, "maybe", "yes", "Y"],
            "AcknowledgeBy": ["2026-12-14", "2026-12-14", "2026-12-14", "2026-12-14", None, "next week"],
        }
    )
    verdict = screen(records, POLICY)
    verdict = verdict.fillna("")
    assert verdict["status"].tolist() == ["", "skipped", "quarantined", "quarantined", "quarantined", "quarantined"]
    assert verdict["reason"].tolist() == [
        "",
        "not_required",
        "missing_key:RequiresAcknowledgement",
        "invalid_value:RequiresAcknowledgement",
        "missing_key:AcknowledgeBy",
        "invalid_date:AcknowledgeBy",
    ]


def _snapshot(rows: list[tuple[str, str, str, str]], rules_keys: dict[str, str] | None = None) -> pd.DataFrame:
    """(document, customer, deadline, state) rows, as ``snapshot-active-documents`` spools them."""
    return pd.DataFrame(
        {
            "id": range(1, len(rows) + 1),
            "document_id": [row[0] for row in rows],
            "job_id": "J",
            "customer_id": [row[1] for row in rows],
            "document_type": "POLICY",
            "locale": "en",
            "ref": [f"ref-{row[0]}" for row in rows],
            "attributes": [
                json.dumps({"RequiresAcknowledgement": "Y", "AcknowledgeBy": row[2], **(rules_keys or {})})
                for row in rows
            ],
            "state": [row[3] for row in rows],
        }
    )


def _history(rows: list[tuple[str, str, datetime, int]]) -> pd.DataFrame:
    history = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    history["first_as_of"] = pd.to_datetime(history["first_as_of"], utc=True)
    return history


def test_plan_splits_notices_reminders_and_left_overs() -> None:
    documents = in_scope(
        _snapshot(
            [
                ("new", "C1", "2026-12-31", "open"),  # never notified: the notice
                ("third-day", "C2", "2026-12-31", "open"),  # noticed 3 days ago: reminder+3d, newly reached
                ("seventh-day", "C2", "2026-12-20", "open"),  # noticed 7 days ago: reminder+7d, the last one
                ("retry", "C3", "2026-12-31", "open"),  # reminder+3d decided, one row still pending
                ("done", "C4", "2026-12-31", "open"),  # reminder+3d decided and sent: nothing owed
                ("closed", "C5", "2026-12-31", "open"),  # acknowledged
                ("overdue", "C6", "2026-12-09", "open"),  # past the deadline: back to Exstream
            ]
        ),
        POLICY,
    )
    three, seven = AS_OF - timedelta(days=3), AS_OF - timedelta(days=7)
    history = _history(
        [
            ("third-day", "notice", three, 0),
            ("seventh-day", "notice", seven, 0),
            ("seventh-day", "reminder+3d", seven + timedelta(days=3), 0),
            ("retry", "notice", three, 0),
            ("retry", "reminder+3d", AS_OF - timedelta(hours=1), 1),
            ("done", "notice", three, 0),
            ("done", "reminder+3d", AS_OF - timedelta(hours=1), 0),
            ("closed", "notice", three, 0),
            ("overdue", "notice", seven, 0),
        ]
    )
    closed_at = pd.Series([AS_OF - timedelta(days=1)], index=["closed"], dtype="datetime64[ns, UTC]")
    result = plan(documents, POLICY, AS_OF, closed_at, history, set())

    assert dict(zip(result.immediate["document_id"], result.immediate["stage"], strict=True)) == {
        "new": "notice",
        "retry": "reminder+3d",
    }
    # Newly reached reminders, the customer's earliest deadline first, for the frequency cap to rank.
    assert result.reminders[["document_id", "stage", "priority"]].values.tolist() == [
        ["seventh-day", "reminder+7d", "high"],
        ["third-day", "reminder+3d", "normal"],
    ]
    assert set(result.reminders["template"]) == {"reminder"} and result.immediate["template"].tolist() == [
        "notice",
        "reminder",
    ]
    assert result.closing == ["closed"] and result.expiring == []  # a policy does not expire
    assert result.hand_back["document_id"].tolist() == ["overdue"]
    assert result.stage_counts() == {"notice": 1, "reminder+3d": 2, "reminder+7d": 1}
    assert "RequiresAcknowledgement" in result.reminders.columns  # kept for the content guard


def test_plan_expires_actions_and_picks_templates_by_action_type() -> None:
    documents = in_scope(
        _snapshot(
            [("sign", "C1", "2026-12-20", "open"), ("late", "C2", "2026-12-01", "open")],
            {"ActionType": "Sign document", "ActionDeadline": "2026-12-20"},
        ).assign(
            attributes=[
                json.dumps({"ActionType": "Sign document", "ActionDeadline": "2026-12-20"}),
                json.dumps({"ActionType": "Sign document", "ActionDeadline": "2026-12-01"}),
            ]
        ),
        ACTION,
    )
    empty = _history([])
    result = plan(documents, ACTION, AS_OF, pd.Series(dtype="datetime64[ns, UTC]"), empty, {"sign_document_notice"})
    assert result.immediate["template"].tolist() == ["sign_document_notice"]
    assert result.expiring == ["late"] and result.reminders.empty


def test_completion_table_counts_by_action_type_then_overall() -> None:
    standing = Standing(Counter(), Counter())
    page = pd.DataFrame(
        {
            "attributes": [json.dumps({"ActionType": kind}) for kind in ("SIGN", "SIGN", "VERIFY", "VERIFY")],
            "state": ["action_completed", "open", "expired", "print_fallback"],
            "handed_back": [False, False, True, True],
        }
    )
    standing.add(page, "ActionType")
    rows = {row["action_type"]: row for row in completion_table(ACTION, standing)}
    assert rows["SIGN"] == {
        "action_type": "SIGN",
        "documents": 2,
        "completed": 1,
        "in_progress": 1,
        "expired": 0,
        "print_fallback_sent": 0,
        "completion_rate": "50.0%",
    }
    assert rows["VERIFY"]["in_progress"] == 1 and rows["VERIFY"]["print_fallback_sent"] == 2
    assert rows["(all)"]["documents"] == 4 and rows["(all)"]["completion_rate"] == "25.0%"


@pytest.mark.parametrize("model", [PolicyChangeConfig, ActionRequiredConfig])
def test_reminder_policies_are_off_unless_configured(model: type[PolicyChangeConfig]) -> None:
    assert model().rules().frequency_cap is None and model().rules().quiet_hours is None
    rules = model.model_validate({"frequency_cap": {"max_notifications": 1}, "quiet_hours": {"start": "22:00"}}).rules()
    assert rules.frequency_cap is not None and rules.frequency_cap.max_notifications == 1
    assert rules.quiet_hours is not None and str(rules.quiet_hours.start) == "22:00:00"
