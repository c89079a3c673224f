"""The signed HTTP ingress: ``exstream-push serve``."""
