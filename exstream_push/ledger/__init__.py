"""The ledger: devices, documents, notifications and rejected input, in any SQLAlchemy database."""

from exstream_push.ledger.models import (
    DeliveryException,
    Device,
    Document,
    EngagementEvent,
    Notification,
    PostBack,
    RejectedRecord,
    Watermark,
)
from exstream_push.ledger.store import Ledger

__all__ = [
    "DeliveryException",
    "Device",
    "Document",
    "EngagementEvent",
    "Ledger",
    "Notification",
    "PostBack",
    "RejectedRecord",
    "Watermark",
]
