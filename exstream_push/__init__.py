"""exstream-push: OpenText Exstream documents to push notifications, orchestrated by Prefect."""

__version__ = "0.1.0"
