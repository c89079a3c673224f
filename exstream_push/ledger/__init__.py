"""The ledger: devices, documents, notifications, rejected input and the evidence log, in any SQLAlchemy database."""

from exstream_push.ledger.models import (
    DeliveryException,
    Device,
    Document,
    EngagementEvent,
    Evidence,
    EvidenceHead,
    FailedJobEnd,
    Notification,
    OpsAlert,
    OutboxEvent,
    PostBack,
    Preference,
    RejectedRecord,
    ReportedOutcome,
    SeenRequest,
    TrackingEvent,
    Watermark,
)
from exstream_push.ledger.store import Ledger

__all__ = [
    "DeliveryException",
    "Device",
    "Document",
    "EngagementEvent",
    "Evidence",
    "EvidenceHead",
    "FailedJobEnd",
    "Ledger",
    "Notification",
    "OpsAlert",
    "OutboxEvent",
    "PostBack",
    "Preference",
    "RejectedRecord",
    "ReportedOutcome",
    "SeenRequest",
    "TrackingEvent",
    "Watermark",
]
