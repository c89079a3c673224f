"""The ledger: devices, documents, notifications and rejected input, in any SQLAlchemy database."""

from exstream_push.ledger.models import Device, Document, Notification, PostBack, RejectedRecord
from exstream_push.ledger.store import Ledger

__all__ = ["Device", "Document", "Ledger", "Notification", "PostBack", "RejectedRecord"]
