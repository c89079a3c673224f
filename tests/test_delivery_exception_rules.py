"""The delivery-exception rules as pure functions, away from any flow, ledger or Prefect; and the one failure
predicate the ingress and the use case share."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import yaml
from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template

from exstream_push.content.guard import pattern_leak
from exstream_push.ingress.schemas import TrackingEventIn
from exstream_push.ledger.exceptions import UNALERTED_COLUMNS
from exstream_push.ledger.store import notification_key
from exstream_push.status import is_failed_delivery
from exstream_push.usecases.delivery_exceptions.config import USE_CASE, DeliveryExceptionsConfig
from exstream_push.usecases.delivery_exceptions.rules import (
    OPERATIONS,
    REISSUE_HEADER,
    operations_alerts,
    redact,
    reissue_rows,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = DeliveryExceptionsConfig.model_validate(
    yaml.safe_load((ROOT / "config" / "delivery-exceptions.yaml").read_text(encoding="utf-8"))
)
AS_OF = datetime(2026, 11, 29, 7, 0, tzinfo=UTC)
TOPIC = "ops-delivery-exceptions"


@pytest.mark.parametrize(
    ("schema_type", "failed"),
    [
        ("Exstream-Email-Failed", True),
        ("Exstream-FileOutputChannel-Failed", True),
        ("Exstream-Email-NDLV", True),
        ("exstream-email-ndlv", True),
        ("EXSTREAM-PRINT-FAILED", True),
        ("Exstream-Email", False),
        ("Exstream-Email-OPEN", False),
        ("Exstream-Email-Submit", False),
        ("Exstream-Generated", False),
        ("Exstream-Email-NDLV-Retry", False),
    ],
)
def test_a_failed_delivery_is_told_by_its_schema_type_whatever_its_case(schema_type: str, failed: bool) -> None:
    assert is_failed_delivery(schema_type) is failed


def test_the_ingress_and_the_use_case_agree_on_which_events_failed() -> None:
    """The ingress used to compare case-sensitively: a lower-case ``-failed`` event was stored but never emitted
    ``exstream.delivery.failed``, while the delivery-exceptions flow recorded it."""
    for schema_type in ("exstream-email-failed", "Exstream-Email-ndlv", "Exstream-Email-Failed", "Exstream-Email"):
        event = TrackingEventIn.model_validate({"expctr": {"schemaType": schema_type}})
        assert event.failed is is_failed_delivery(schema_type)
    assert TrackingEventIn.model_validate({"expctr": {"schemaType": "exstream-email-failed"}}).failed


def test_redaction_blanks_what_the_content_guard_would_catch() -> None:
    text = "ERROR customer jane.doe+x@example.com account 4111 1111-1111 1111 code 12"
    redacted = redact(text)
    assert redacted == "ERROR customer [e-mail] account [number] code 12"
    assert pattern_leak(text, "") is not None and pattern_leak(redacted, "") is None
    assert len(redact("x" * 1_000)) == 300


@pytest.mark.timeout(20)  # a guard against a quadratic pattern (seconds at 40,000 characters), not a speed check
def test_redaction_reads_only_what_it_keeps_of_a_long_hostile_line() -> None:
    """An engine message line of 200,000 candidate characters: only what can reach the kept part is read."""
    hostile = "a." * 100_000
    assert redact(hostile) == hostile[:300]
    assert redact("x" * 250 + " jane@example.com" + "a." * 100_000).startswith("x" * 250 + " [e-mail]")


def _records(rows: list[tuple[str, str, str, str | None, str | None, str | None]]) -> pd.DataFrame:
    """Ledger-shaped records: (dedup_key, job, channel, failure class, customer_ref, alert_key)."""
    return pd.DataFrame(
        [
            [key, job, channel, failure, ref, "STATEMENT", "Check the address.", AS_OF, alert]
            for key, job, channel, failure, ref, alert in rows
        ],
        columns=UNALERTED_COLUMNS,
    )


def _template() -> Template:
    environment = Environment(
        loader=FileSystemLoader(str(ROOT / "templates")), undefined=StrictUndefined, autoescape=False
    )
    environment.filters["thousands"] = lambda number: f"{number:,}"
    return environment.get_template(f"{USE_CASE}/alert.en.j2")


def test_one_operations_push_per_failure_group_covering_only_its_new_records() -> None:
    records = _records(
        [
            ("k1", "J1", "email", "bounced", "****0001", "earlier-alert"),
            ("k2", "J1", "email", "bounced", "****0002", None),
            ("k3", "J1", "email", "bounced", None, None),
            ("k4", "J1", "print", "no_output", None, None),
        ]
    )
    alerts = operations_alerts(records, _template(), TOPIC)
    messages = alerts.messages.set_index("failure_class")
    assert list(messages.index) == ["bounced", "no_output"]
    bounced = messages.loc["bounced"]
    assert bounced["documents"] == 3 and bounced["new_documents"] == 2
    assert bounced["customer_id"] == OPERATIONS and bounced["device_id"] == f"topic:{TOPIC}"
    key = notification_key(USE_CASE, "J1/email/bounced", f"topic:{TOPIC}", "documents:3")
    assert bounced["key"] == key and alerts.covered[key] == ["k2", "k3"]
    payload = bounced["payload"]
    assert payload.topic == TOPIC and payload.data["customer_ref"] == "****0002"
    assert "2 new since the last alert" in payload.notification.body and "1 more" in payload.notification.body
    assert payload.android.collapse_key == notification_key(USE_CASE, "J1/email/bounced", f"topic:{TOPIC}")


def test_no_records_no_pushes() -> None:
    alerts = operations_alerts(pd.DataFrame(columns=UNALERTED_COLUMNS), _template(), TOPIC)
    assert alerts.messages.empty and alerts.covered == {}


def test_reissue_rows_name_each_document_and_its_rule_s_route() -> None:
    rule = CONFIG.rules[0]
    documents = [
        {"document_id": "D1", "channel": rule.channel, "failure_class": rule.failure_class, "document_type": None},
        {"document_id": "D2", "channel": "x", "failure_class": "not-in-the-table", "document_type": "STATEMENT"},
    ]
    rows = reissue_rows(documents, "J1", CONFIG, datetime(2026, 11, 29, 8, 0, 30, 500, tzinfo=UTC))
    assert [dict(zip(REISSUE_HEADER, row, strict=True)) for row in rows] == [
        {
            "document_id": "D1",
            "job_id": "J1",
            "channel": rule.channel,
            "failure_class": rule.failure_class,
            "document_type": "",
            "reissue_via": rule.reissue_via,
            "requested_at": "2026-11-29T08:00:30Z",
        },
        {
            "document_id": "D2",
            "job_id": "J1",
            "channel": "x",
            "failure_class": "not-in-the-table",
            "document_type": "STATEMENT",
            "reissue_via": CONFIG.unmatched.reissue_via,
            "requested_at": "2026-11-29T08:00:30Z",
        },
    ]
