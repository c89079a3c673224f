"""The one status vocabulary for notifications and input records, and the reasons that go with them."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"  # claimed in the ledger, not yet confirmed by the provider
    SENT = "sent"
    FAILED = "failed"  # permanent; reason holds the provider's error code
    SKIPPED = "skipped"
    QUARANTINED = "quarantined"


FINAL_STATUSES = frozenset({Status.SENT, Status.FAILED, Status.SKIPPED, Status.QUARANTINED})


class SkipReason(StrEnum):
    NO_DEVICE = "no_device"
    OPTED_OUT = "opted_out"
    CATEGORY_OPTED_OUT = "category_opted_out"
    DUPLICATE = "duplicate"


class QuarantineReason(StrEnum):
    MISSING_CUSTOMER_ID = "missing_customer_id"
    MISSING_DOCUMENT_TYPE = "missing_document_type"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    CONTENT_GUARD = "content_guard"
    MALFORMED_XML = "malformed_xml"


class UseCase(StrEnum):
    """Slugs used in the ledger, the CLI and reports."""

    STATEMENT_READY = "statement-ready"


class PushStatus(StrEnum):
    """What Exstream is told per document, so it can fall back to e-mail or print."""

    NOTIFIED = "notified"
    NOT_NOTIFIED = "not_notified"
