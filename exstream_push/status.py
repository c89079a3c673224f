"""The one status vocabulary for notifications and input records, and the reasons that go with them."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """A notification's (or a rejected input record's) status."""

    PENDING = "pending"  # claimed in the ledger, not yet confirmed by the provider
    SENT = "sent"
    FAILED = "failed"  # permanent; reason holds the provider's error code, ":" and the fields it refused if it
    # named them ("INVALID_ARGUMENT:message.android.ttl"), or payload_too_large (over the target's size limit)
    SKIPPED = "skipped"
    QUARANTINED = "quarantined"
    DEFERRED = "deferred"  # inside the device's quiet hours; not_before says when it may go


UNSETTLED = frozenset({Status.PENDING, Status.DEFERRED})
"""Statuses a later run may still change: a document with one of them and nothing sent is not reported yet."""


class DocumentState(StrEnum):
    """Where a document stands in its use case's life, beside its notifications' statuses."""

    OPEN = "open"
    PAID = "paid"
    ACKNOWLEDGED = "acknowledged"
    ACTION_COMPLETED = "action_completed"
    ESCALATED = "escalated"  # handed back to Exstream for a formal letter
    PRINT_FALLBACK = "print_fallback"  # handed back to Exstream for a printed reminder
    EXPIRED = "expired"  # past its deadline: nothing more is sent
    REISSUE_REQUESTED = "reissue_requested"


class EngagementType(StrEnum):
    """What a customer did with a push or a document, in the order a document's life moves forward."""

    SENT = "sent"  # not an event a customer sends: the first step of the lifecycle, from the ledger
    DELIVERED = "delivered"
    OPENED = "opened"
    DOCUMENT_ACCESSED = "document_accessed"
    ACKNOWLEDGED = "acknowledged"
    ACTION_COMPLETED = "action_completed"


class EvidenceFact(StrEnum):
    """What the evidence log (``evidence`` table) says happened to a document, one row per fact."""

    GENERATED = "generated"  # registered from an Exstream job's delivery file (job, step)
    NOTIFIED = "notified"  # a push accepted by its provider (device, provider, provider message id)
    REMINDED = "reminded"  # a reminder stage's push accepted by its provider
    FAILED = "failed"  # a push refused for good, or a delivery exception (provider: the push provider or the
    # Exstream channel that failed; detail: the provider's code or the failure class)
    DELIVERED = "delivered"
    OPENED = "opened"
    ACCESSED = "accessed"
    ACKNOWLEDGED = "acknowledged"
    COMPLETED = "completed"
    HANDED_BACK = "handed_back"  # posted to an Exstream channel (escalation, print fallback, fallback delivery)
    EXPIRED = "expired"


PAYMENT_DETAIL = "payment"
"""The ``detail`` of a ``completed`` fact that a payment recorded for a reminder document stands for."""

NOTICE_STAGE = "notice"
"""The stage of a follow-up's first push (``usecases/follow_up``); a push at any other stage is a reminder."""


ENGAGEMENT_FACTS = {
    EngagementType.DELIVERED.value: EvidenceFact.DELIVERED,
    EngagementType.OPENED.value: EvidenceFact.OPENED,
    EngagementType.DOCUMENT_ACCESSED.value: EvidenceFact.ACCESSED,
    EngagementType.ACKNOWLEDGED.value: EvidenceFact.ACKNOWLEDGED,
    EngagementType.ACTION_COMPLETED.value: EvidenceFact.COMPLETED,
}
"""The evidence fact of each engagement event a customer's app or the portal reports."""


class SkipReason(StrEnum):
    NO_DEVICE = "no_device"
    OPTED_OUT = "opted_out"
    CATEGORY_OPTED_OUT = "category_opted_out"
    DUPLICATE = "duplicate"
    PAID = "paid"
    FREQUENCY_CAPPED = "frequency_capped"
    CLOSED = "closed"  # acknowledged, completed or escalated before this reminder was due
    NOT_REQUIRED = "not_required"  # the document asks nothing of the customer (RequiresAcknowledgement=N)


class QuarantineReason(StrEnum):
    MISSING_CUSTOMER_ID = "missing_customer_id"
    MISSING_DOCUMENT_TYPE = "missing_document_type"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    CONTENT_GUARD = "content_guard"
    MALFORMED_XML = "malformed_xml"
    INVALID_DUE_DATE = "invalid_due_date"
    MISSING_KEY = "missing_key"  # stored as "missing_key:<manifest key>"
    INVALID_VALUE = "invalid_value"
    INVALID_DATE = "invalid_date"
    CONFLICTING_DOCUMENT_ID = "conflicting_document_id"  # the id already belongs to another customer's document
    ID_TOO_LONG = "id_too_long"  # a key or id over manifest.MAX_ID_LENGTH characters
    INVALID_ENCODING = "invalid_encoding"  # a key held bytes the file's encoding cannot decode
    UNREAD_RECORDS = "unread_records"  # stored as "unread_records:<count>": declared in the manifest, never read


LIFECYCLE_ORDER = {step: rank for rank, step in enumerate(EngagementType)}
"""Steps ranked; acknowledged and action_completed rank alike, since a document reaches one or the other."""
LIFECYCLE_ORDER[EngagementType.ACTION_COMPLETED] = LIFECYCLE_ORDER[EngagementType.ACKNOWLEDGED]


class UseCase(StrEnum):
    """Slugs used in the ledger, the CLI and reports."""

    STATEMENT_READY = "statement-ready"
    PAYMENT_REMINDERS = "payment-reminders"
    POLICY_CHANGE = "policy-change"
    DELIVERY_EXCEPTIONS = "delivery-exceptions"
    ACTION_REQUIRED = "action-required"
    PREFERENCE_SYNC = "preference-sync"
    OPERATIONAL_ALERT = "operational-alert"
    LIFECYCLE_TRACKING = "lifecycle-tracking"


class Category(StrEnum):
    """The push categories a device may opt in to (an empty list on the device means all of them)."""

    STATEMENTS = "statements"
    PAYMENTS = "payments"
    POLICIES = "policies"
    ACTIONS = "actions"
    ALERTS = "alerts"


class RunState(StrEnum):
    """Where a shared run stands in the work queue (``workrun.state``)."""

    EXTRACTING = "extracting"  # one worker reads the manifests; the others wait or take over a dead extractor
    EXTRACTED = "extracted"  # batches queued; every worker claims them
    POSTING = "posting"  # the last batch is done; one worker posts the outcomes back
    DONE = "done"


class BatchState(StrEnum):
    """A queued batch of a shared run (``workbatch.state``)."""

    QUEUED = "queued"
    CLAIMED = "claimed"  # leased by one worker, renewed while it lives
    DONE = "done"


class JobStatus(StrEnum):
    """An Exstream job's status, as the Orchestration API reports it (the ones exstream-push acts on)."""

    COMPLETE = "complete"
    ERROR = "error"


class OpsAlertState(StrEnum):
    RECEIVED = "received"
    PUSHED = "pushed"
    FOLLOW_UP_REQUESTED = "follow_up_requested"


class PushStatus(StrEnum):
    """What Exstream is told per document, so it can fall back to e-mail or print."""

    NOTIFIED = "notified"
    NOT_NOTIFIED = "not_notified"


FAILED_SCHEMA_SUFFIX = "-failed"
NOT_DELIVERED_SCHEMA_TYPE = "exstream-email-ndlv"


def is_failed_delivery(schema_type: str) -> bool:
    """Whether a tracking event's ``expctr.schemaType`` says a document was not delivered:
    ``Exstream-<channel>-Failed`` or ``Exstream-Email-NDLV``.

    Compared without regard to case: no documented schema type differs from these only by case, and a failure
    missed for its spelling is a document a customer never gets with no one told.
    """
    lowered = schema_type.lower()
    return lowered.endswith(FAILED_SCHEMA_SUFFIX) or lowered == NOT_DELIVERED_SCHEMA_TYPE


class PushProvider(StrEnum):
    """How a device is reached (a device row's ``provider``); the error table (``connectors/push_errors.py``)
    keys its rows by it."""

    FCM = "fcm"
    APNS = "apns"
    WEBPUSH = "webpush"


class Platform(StrEnum):
    """The platforms a device registers from (the device import and the ingress accept these alone)."""

    ANDROID = "android"
    IOS = "ios"
    WEB = "web"


class Channel(StrEnum):
    """The channels a customer may prefer and Exstream may choose for the next communication."""

    PUSH = "push"
    EMAIL = "email"
    PRINT = "print"
    WEB = "web"
    SMS = "sms"
