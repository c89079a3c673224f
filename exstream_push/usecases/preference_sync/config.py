"""What preference sync posts to Exstream: one batch-input channel and its columns."""

from __future__ import annotations

from exstream_push.status import UseCase

USE_CASE = UseCase.PREFERENCE_SYNC.value
PREFERENCE_HEADER = ["customer_id", "push_enabled", "active_devices", "preferred_channel", "categories", "updated_at"]
