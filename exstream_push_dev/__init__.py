"""Development tools apart from the product: emulators, the demo, the bench and the local stack.

No product module imports this package; the CLI finds its commands through the ``exstream_push.commands``
entry point.
"""
