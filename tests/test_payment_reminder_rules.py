"""The payment-reminder rules and the notify pipeline's frame schemas as pure functions, away from any flow."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd
import pytest

from exstream_push.notify.schemas import MESSAGES, NOTICES, RECIPIENTS, FrameMismatch, conform
from exstream_push.usecases.payment_reminders.config import load_reminder_config
from exstream_push.usecases.payment_reminders.rules import (
    check_payments,
    due_at,
    match_payments,
    outcome_table,
    ready_to_render,
    second_look,
    tally_outcomes,
)

CONFIG = load_reminder_config()  # due_soon -3, due_today 0, overdue 1, seriously_overdue 15, final_demand 30
AS_OF = datetime(2026, 11, 29, 12, tzinfo=UTC)


def _documents(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    """(document, customer, DueDate) → open documents as ``ledger.reminders.open_documents`` reads them."""
    return pd.DataFrame(
        {
            "document_id": [row[0] for row in rows],
            "job_id": "J",
            "customer_id": [row[1] for row in rows],
            "document_type": "REMINDER",
            "locale": None,
            "ref": [f"ref-{row[0]}" for row in rows],
            "attributes": [json.dumps({"DueDate": row[2], "AmountDue": "10.00"}) for row in rows],
        }
    )


def test_due_at_places_documents_on_the_ladder_most_pressing_first() -> None:
    documents = _documents(
        [
            ("soon", "C1", "2026-12-01"),  # 2 days ahead: due_soon
            ("late", "C1", "2026-11-10"),  # 19 days past: seriously_overdue
            ("future", "C2", "2026-12-31"),  # no stage yet
            ("decided", "C2", "2026-11-28"),  # overdue, already decided
            ("bad", "C3", "soon"),  # no date: never placed
        ]
    )
    decided = pd.DataFrame({"document_id": ["decided"], "stage": ["overdue"]})
    due = due_at(documents, decided, CONFIG, AS_OF)
    assert due[["document_id", "stage", "template", "priority"]].values.tolist() == [
        ["late", "seriously_overdue", "seriously_overdue", "high"],
        ["soon", "due_soon", "due_soon", "normal"],
    ]
    assert due["AmountDue"].tolist() == ["10.00", "10.00"]  # the keys stay for the content guard
    conform(due, NOTICES, "test")


def test_payments_are_checked_by_line_and_matched_to_the_documents_own_customer() -> None:
    frame = pd.DataFrame(
        {
            "customer_id": ["C1", "C1", "C2", "", "C3", "C1"],
            "document_id": ["D1", "D1", "D2", "D3", "D4", "D9"],
            "paid_at": [
                "2026-11-20T10:00:00+01:00",
                "2026-11-19",
                "2026-11-20",
                "2026-11-20",
                "yesterday",
                "2026-11-1",
            ],
        }
    )
    valid, errors = check_payments(frame, "payments.csv")
    assert errors == [(5, "customer_id is empty"), (6, "paid_at is not an ISO date or date-time")]
    assert valid.set_index("document_id")["paid_at"]["D1"] == pd.Timestamp("2026-11-19T00:00:00Z")  # the earliest
    known = pd.DataFrame(
        {"document_id": ["D1", "D2"], "known_customer": ["C1", "C7"], "job_id": "J", "state": ["open", "open"]}
    )
    match = match_payments(valid, known)
    assert match.newly_paid["document_id"].tolist() == ["D1"]
    assert sorted(match.unmatched["document_id"]) == ["D2", "D9"]  # another customer's document; an unknown one
    with pytest.raises(ValueError, match="header lacks paid_at"):
        check_payments(frame.drop(columns="paid_at"), "payments.csv")


def test_second_look_skips_what_changed_since_the_decision() -> None:
    owed = pd.DataFrame(
        {
            "key": list("abcdef"),
            "stage": ["overdue", "overdue", "overdue", "overdue", "overdue", "retired_stage"],
            "state": ["open", "paid", "cancelled", "open", "open", "open"],
            "active": [True, True, True, None, True, True],
            "push_opt_in": [True, True, True, None, False, True],
            "categories": ["", "", "", None, "", "statements"],
            "attributes": ["{}"] * 6,
        }
    )
    reasons = second_look(owed, "payments")
    assert reasons.fillna("").tolist() == ["", "paid", "closed", "no_device", "opted_out", "category_opted_out"]
    owed.loc[5, "categories"] = "payments"
    ready = ready_to_render(owed[second_look(owed, "payments").isna()], CONFIG)
    assert ready[["key", "template", "priority"]].values.tolist() == [
        ["a", "overdue", "high"],
        ["f", "retired_stage", "normal"],  # a stage since removed from the ladder goes out by its own name
    ]


def test_outcome_table_sums_pages_in_ladder_order() -> None:
    def page(stages: list[str]) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "stage": stages,
                "status": "sent",
                "reason": None,
                "attributes": [json.dumps({"RiskSegment": "high"})] * len(stages),
            }
        )

    table = outcome_table(
        [tally_outcomes(page(["overdue", ""])), tally_outcomes(page(["due_soon", "overdue"]))],
        [stage.name for stage in CONFIG.stages],
    )
    assert table.values.tolist() == [
        ["-", "high", "sent", "", 1],
        ["due_soon", "high", "sent", "", 1],
        ["overdue", "high", "sent", "", 2],
    ]
    assert outcome_table([], ["overdue"]).empty


def _recipients() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "document_id": ["D1"],
            "job_id": ["J"],
            "customer_id": ["C1"],
            "document_type": ["BILL"],
            "locale": [None],
            "ref": ["r"],
            "device_id": ["dev"],
            "provider": ["fcm"],
            "token": ["tok"],
            "device_locale": ["en"],
            "key": ["k"],
            "AmountDue": ["12.00"],
        }
    )


def test_frames_are_checked_at_the_pipeline_boundaries_without_showing_values() -> None:
    recipients = _recipients()
    assert conform(recipients, RECIPIENTS, "render-messages") is recipients  # extra columns are allowed
    with pytest.raises(FrameMismatch, match="send-push: the frame lacks payload"):
        conform(recipients, MESSAGES, "send-push")
    with pytest.raises(FrameMismatch, match=r"null: customer_id \(1 row\(s\)\)") as missing:
        conform(recipients.assign(customer_id=[None]), RECIPIENTS, "defer-quiet-hours")
    assert "C1" not in str(missing.value)
    with pytest.raises(FrameMismatch, match="wrong type: payload") as wrong:
        conform(recipients.assign(payload=[12.5]), MESSAGES, "send-push")
    assert "12.5" not in str(wrong.value)
    conform(recipients.assign(payload=[b"{}"]), MESSAGES, "send-push")
    empty = recipients.iloc[:0].assign(key=pd.Series(dtype=float))  # as pandas types an empty computed column
    conform(empty, RECIPIENTS, "defer-quiet-hours")
