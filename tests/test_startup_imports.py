"""Every command's start imports what reaching its first task needs, not what only some of its tasks do: the
migration tool (Alembic) only for a ledger behind the newest revision (``test_migrations.py`` shows that), the FCM
transport (aiohttp) only when a task asks for a sender. A fresh interpreter tells what loading the flows imported."""

from __future__ import annotations

import json
import subprocess
import sys

_LOAD_EVERY_FLOW_THEN_A_SENDER = """
import json, sys
import exstream_push.cli
from exstream_push.usecases.registry import USE_CASES
for entry in USE_CASES.values():
    entry.load()
loaded = sorted(name for name in ("aiohttp", "alembic") if name in sys.modules)
from exstream_push.connectors.fcm import FcmSender
print(json.dumps({"with_the_flows": loaded, "with_a_sender": "aiohttp" in sys.modules, "sender": FcmSender.__name__}))
"""


def test_loading_the_flows_leaves_alembic_and_the_fcm_transport_to_the_code_that_needs_them() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_EVERY_FLOW_THEN_A_SENDER], capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout) == {"with_the_flows": [], "with_a_sender": True, "sender": "FcmSender"}
