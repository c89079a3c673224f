"""Clients for the systems exstream-push talks to."""
