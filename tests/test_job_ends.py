"""The pure parts of what delivery-exceptions consumes: failed job ends and stored tracking events."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from exstream_push.settings import ManifestKeys
from exstream_push.usecases.delivery_exceptions.config import load_config
from exstream_push.usecases.job_ends import jobs_to_check
from exstream_push.usecases.tracking_events import failures_in

AS_OF = datetime(2026, 11, 29, 7, 0, tzinfo=UTC)


def test_a_job_with_several_unhandled_ends_is_checked_once_in_the_order_of_its_first() -> None:
    ends = [("A", AS_OF), ("B", AS_OF + timedelta(minutes=1)), ("A", AS_OF + timedelta(minutes=2))]
    assert jobs_to_check(ends) == ["A", "B"]
    assert jobs_to_check([]) == []


def test_stored_events_count_as_a_file_does_and_make_one_record_per_document() -> None:
    failed = {
        "expctr": {"schemaType": "Exstream-FileOutputChannel-Failed", "eventDate": "2020-09-30T14:00:26.161Z"},
        "exstreamJob": {"communicationId": "07c9316a", "status": "failed"},
        "user": {"QueueFilename": "/mnt/nfs/jobs/JOB-1/ee6fe671/docgen/output/Queue/Letter"},
    }
    opened = {"expctr": {"schemaType": "Exstream-Email-OPEN"}, "user": {}}
    payloads = [json.dumps(failed), json.dumps(failed), json.dumps(opened), json.dumps({"user": {}}), "not json"]
    records, counts = failures_in(payloads, load_config(), ManifestKeys(), AS_OF)
    assert dict(counts) == {"events_read": 5, "events_failed": 2, "events_ignored": 1, "events_malformed": 2}
    assert [(row["job_id"], row["failure_class"]) for row in records] == [("JOB-1", "output_failure")]
