"""Use-case packages: each holds its configuration model, its rules as pure functions on frames, and thin tasks.

Flows (``flows/``) call the tasks; the tasks read and write through the ledger's repositories
(``exstream_push.ledger``) and push through the one notify pipeline (``exstream_push.notify``).
"""
