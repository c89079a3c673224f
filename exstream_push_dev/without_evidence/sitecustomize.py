"""The bench's control run: a worker process that writes no evidence, to measure what the evidence log costs.

Put first on ``PYTHONPATH`` of a bench worker (and so of the task processes it starts), Python imports this module
at start-up. It removes every step of the log from the ledger's writes: the read of what an outcome's evidence
names, the facts of a new document, their preparation and their append. The product has no switch for this; only
the bench's control run does it, and the bench checks that its ledger holds no evidence afterwards.
"""

from exstream_push.ledger import documents, evidence, notifications


def _no_facts(*_args: object) -> list:
    return []


def _nothing(*_args: object) -> None:
    return None


# Each name must still be there. Python only reports an error in sitecustomize and goes on, so a renamed one leaves
# the log in: the bench then finds evidence in the control ledger and stops (tests/test_bench_control.py too).
for module, name, stand_in in (
    (notifications, "_outcome_facts", _no_facts),
    (documents, "_generated", _no_facts),
    (evidence, "prepare", _no_facts),
    (evidence, "append", _nothing),
):
    getattr(module, name)
    setattr(module, name, stand_in)
