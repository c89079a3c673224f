"""What lifecycle tracking posts to Exstream: two batch-input channels and their columns."""

from __future__ import annotations

from exstream_push.status import UseCase

USE_CASE = UseCase.LIFECYCLE_TRACKING.value
STATUS_HEADER = ["document_id", "customer_id", "use_case", "status", "status_at", "updated_at"]
FALLBACK_HEADER = ["document_id", "customer_id", "use_case", "document_type", "sent_at", "reason", "updated_at"]
