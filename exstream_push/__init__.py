"""exstream-push: OpenText Exstream documents to push notifications, orchestrated by Prefect."""

from exstream_push.memory import tune_allocators

__version__ = "0.1.0"

tune_allocators()
