"""Synthetic Exstream failures: a job in status error with thousands of failed documents, its engine message file and
the tracking events its channels sent (development tool).

Like the real ones they carry personal data (names, e-mail addresses, account numbers) so tests can prove none of it
reaches an operations push, and they mix every layout the lenient readers must take: lines with and without
timestamps, message codes in several styles, identities on continuation lines, repeated lines and events, events of
no interest and lines that are not events at all.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

DOCUMENT_TYPES = ["STATEMENT", "STATEMENT", "STATEMENT", "BILL", "POLICY"]
FIRST_NAMES = ["Alice", "Bruno", "Chloe", "Dmitri", "Elena", "Farah", "Goran", "Hana"]
ENDED_AT = "2026-11-29T06:52:40.000Z"


@dataclass
class FailureScenario:
    """What was generated, for tests to check against: failed documents by kind, document id → customer id."""

    job_id: str
    folder: Path
    events: Path | None
    print_failed: dict[str, str] = field(default_factory=dict)
    email_undelivered: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    document_types: dict[str, str] = field(default_factory=dict)
    personal_data: set[str] = field(default_factory=set)

    @property
    def failed(self) -> dict[str, str]:
        return {**self.print_failed, **self.email_undelivered, **self.rejected}


def _stamp(moment: datetime) -> str:
    return moment.strftime("%m/%d/%Y %H:%M:%S")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _person(rng: random.Random, number: int, customer_id: str, document_id: str, document_type: str) -> dict[str, str]:
    """A tracking event's ``user{}``: manifest metadata, personal data included."""
    first = rng.choice(FIRST_NAMES)
    return {
        "CustomerFirstname": first,
        "CustomerLastname": f"Customer{number}",
        "CustomerEmail": f"{first.lower()}.customer{number}@example.com",
        "AccountNumber": f"{rng.randrange(10**11, 10**12)}",
        "CustomerId": customer_id,
        "DocumentId": document_id,
        "DocumentType": document_type,
        "CustomerInRun": str(number),
    }


def _print_lines(moment: datetime, style: int, document_id: str, customer_id: str, document_type: str) -> list[str]:
    if style == 0:
        return [
            f"{_stamp(moment)} ERROR  PRT-0417 Print queue PDF rejected document {document_id} "
            f"for customer {customer_id} (DocumentType {document_type})"
        ]
    if style == 1:
        return [
            f"ERROR: PRT0420 - print output failed, DocumentId={document_id} CustomerId={customer_id} "
            f"DocumentType={document_type}"
        ]
    return [
        f"{_stamp(moment)} SEVERE (E0417) Print stream could not be written",
        f"    document {document_id}",
        f"    customer {customer_id}",
    ]


def write_failed_job(
    jobs_dir: Path,
    job_id: str,
    failed_documents: int,
    *,
    events_path: Path | None = None,
    seed: int = 3,
    ended_at: str = ENDED_AT,
    print_share: float = 0.6,
    email_share: float = 0.3,
) -> FailureScenario:
    """A job folder in status error, as the Exstream emulator reads it, and (given a path) its tracking events.

    Of the failed documents, ``print_share`` failed printing (in the message file; half of them also in a
    ``Exstream-Print-Failed`` event), ``email_share`` were e-mails not delivered (``Exstream-Email-NDLV`` events
    only) and the rest were rejected at composition (message file). With no failed document the job failed as a
    whole: its message file names no document.
    """
    rng = random.Random(seed)
    folder = jobs_dir / job_id
    folder.mkdir(parents=True, exist_ok=True)
    end = datetime.fromisoformat(ended_at.replace("Z", "+00:00"))
    start = end - timedelta(minutes=50)
    scenario = FailureScenario(job_id=job_id, folder=folder, events=events_path)
    message = f"Completed with {failed_documents} errors" if failed_documents else "Engine aborted"
    (folder / "job.json").write_text(
        json.dumps(
            {
                "status": "error",
                "msg": message,
                "channel": "statements",
                "mode": "BATCH",
                "flowModelType": "COMMUNICATION",
                "startDate": _iso(start),
                "endDate": ended_at,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    lines = [f"{_stamp(start)} INFO  Engine started for job {job_id}", f"{_stamp(start)} INFO  Reading driver file"]
    events: list[str] = []
    if not failed_documents:
        lines += [
            f"{_stamp(start + timedelta(seconds=9))} SEVERE E0101 License check failed: engine aborted",
            "ERROR E0102 Run terminated before composition",
        ]
    print_count = int(failed_documents * print_share)
    email_count = int(failed_documents * email_share)
    for number in range(1, failed_documents + 1):
        document_id = f"{job_id}-D{number:07d}"
        customer_id = f"C{number:08d}"
        document_type = rng.choice(DOCUMENT_TYPES)
        moment = start + timedelta(seconds=number)
        person = _person(rng, number, customer_id, document_id, document_type)
        scenario.document_types[document_id] = document_type
        scenario.personal_data.update(
            {customer_id, person["CustomerEmail"], person["AccountNumber"], person["CustomerLastname"]}
        )
        if number <= print_count:
            scenario.print_failed[document_id] = customer_id
            lines += _print_lines(moment, number % 3, document_id, customer_id, document_type)
            if number % 50 == 0:  # the engine retried and failed again: the same document twice
                lines += _print_lines(moment, 0, document_id, customer_id, document_type)
            if number % 2 == 0:
                path = f"/mnt/nfs/prod/default/jobs/{job_id}/{uuid.UUID(int=rng.getrandbits(128))}/docgen/out/Print"
                events.append(
                    json.dumps(
                        {
                            "expctr": {
                                "schemaVersion": "1.0",
                                "schemaType": "Exstream-PrintChannel-Failed",
                                "schemaSource": "Statements_Print",
                                "tenant": "tenant-1",
                                "eventId": str(uuid.UUID(int=rng.getrandbits(128))),
                                "eventDate": _iso(moment),
                            },
                            "exstreamJob": {
                                "campaignId": "Statements",
                                "communicationId": "statements-print",
                                "contentType": "application/pdf",
                                "creationTime": _iso(moment),
                                "domain": "default",
                                "status": "failed",
                            },
                            "user": {**person, "QueueFilename": path},
                        }
                    )
                )
        elif number <= print_count + email_count:
            scenario.email_undelivered[document_id] = customer_id
            event = json.dumps(
                {
                    "expctr": {
                        "schemaVersion": "1.0",
                        "schemaType": "Exstream-Email-NDLV",
                        "schemaSource": "Statements_Email",
                        "tenant": "tenant-1",
                        "eventId": str(uuid.UUID(int=rng.getrandbits(128))),
                        "eventDate": _iso(moment + timedelta(minutes=5)),
                    },
                    "user": {**person, "JobId": job_id},
                    "exstreamEmailStatistics": {
                        "creationTime": _iso(moment),
                        "emailProvider": "OpenText Notifications",
                        "customerEmailId": person["CustomerEmail"],
                        "communicationId": "statements-email",
                        "domain": "default",
                        "eventType": "NDLV",
                    },
                }
            )
            events.append(event)
            if number % 40 == 0:  # delivered twice by the event feed
                events.append(event)
        else:
            scenario.rejected[document_id] = customer_id
            lines.append(
                f"{_stamp(moment)} ERROR DOC-1102 Document {document_id} for customer {customer_id} rejected: "
                "mandatory field AccountNumber missing"
            )
        if number % 100 == 0:
            lines.append(f"{_stamp(moment)} WARNING  slow output device")
        if number % 250 == 0:
            events.append(json.dumps(_ignored_event(rng, person, moment)))
    if failed_documents:
        lines += [
            "",
            "ERROR E0999 3 resources could not be loaded",
            "\x00\x7f garbage from a truncated write",
            f"{_stamp(end)} INFO  {failed_documents} customers failed",
        ]
        events += ["not an event {", json.dumps({"user": {"CustomerEmail": "nobody@example.com"}})]
    (folder / "ExstreamMessages.dat").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if events_path is not None:
        events_path.parent.mkdir(parents=True, exist_ok=True)
        events_path.write_text("\n".join(events) + "\n", encoding="utf-8")
    return scenario


def _ignored_event(rng: random.Random, person: dict[str, str], moment: datetime) -> dict[str, Any]:
    """An event of no interest to delivery exceptions: an e-mail opened."""
    return {
        "expctr": {
            "schemaVersion": "1.0",
            "schemaType": "Exstream-Email-OPEN",
            "schemaSource": "Statements_Email",
            "tenant": "tenant-1",
            "eventId": str(uuid.UUID(int=rng.getrandbits(128))),
            "eventDate": _iso(moment),
        },
        "user": person,
        "exstreamEmailStatistics": {"customerEmailId": person["CustomerEmail"], "eventType": "OPEN"},
    }


def failure_events(
    path: Path, job_id: str, documents: dict[str, str], *, schema_type: str = "Exstream-PrintChannel-Failed"
) -> Path:
    """Tracking events for more failures of a job arriving later: one per document id → customer id."""
    rng = random.Random(len(documents))
    with path.open("w", encoding="utf-8") as out:
        for number, (document_id, customer_id) in enumerate(sorted(documents.items()), start=1):
            event = {
                "expctr": {
                    "schemaType": schema_type,
                    "eventId": str(uuid.UUID(int=rng.getrandbits(128))),
                    "eventDate": "2026-11-29T07:10:00.000Z",
                },
                "exstreamJob": {"status": "failed", "jobId": job_id},
                "user": _person(rng, number, customer_id, document_id, "BILL"),
            }
            out.write(json.dumps(event) + "\n")
    return path
