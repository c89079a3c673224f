"""``exstream-push up``: the whole stack comes up (UI, ingress, deployments) and Ctrl-C takes every process down."""

from __future__ import annotations

import csv
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from exstream_push.prefect_server import pid_alive, stack_state_file
from exstream_push_dev.emulators.server import free_port
from exstream_push_dev.stack import descendant_pids, project_automations, project_deployments, referenced_blocks

pytestmark = pytest.mark.timeout(900)

STARTUP_TIMEOUT = 420.0
STOP_TIMEOUT = 150.0
UP_BANNER = "exstream-push is up."
STAGES = (
    "emulators",
    "Prefect server",
    "work pool",
    "block types",
    "deployments",
    "automations",
    "Prefect worker",
    "ingress API",
)
"""What ``up`` says it waits for, one line per stage as it begins, in this order."""


def _as_a_background_job() -> None:
    """Start ``up`` as a shell without job control starts ``up &``: SIGINT ignored. Ctrl-C must stop it anyway."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class UpProcess:
    """``exstream-push up`` in a subprocess, its output collected line by line as it comes."""

    def __init__(self, home: Path, prefect_port: int) -> None:
        env = {name: value for name, value in os.environ.items() if not name.startswith(("PREFECT_", "EXSTREAM_PUSH_"))}
        env.update({"EXSTREAM_PUSH_HOME": str(home), "PYTHONUNBUFFERED": "1"})
        self.home, self.env = home, env
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "exstream-push"), "up", "--prefect-port", str(prefect_port)],
            env=env,
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=_as_a_background_job,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_until_up(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not any(line.startswith(UP_BANNER) for line in self.lines):
            if self.process.poll() is not None:
                self.reader.join(timeout=5)
                pytest.fail(f"exstream-push up exited with {self.process.returncode}:\n{self.output}")
            if time.monotonic() > deadline:
                pytest.fail(f"exstream-push up not up within {STARTUP_TIMEOUT:.0f} s:\n{self.output}")
            time.sleep(0.5)

    def url(self, name: str) -> str:
        found = re.search(rf"^{re.escape(name)}\s+(http://\S+)", self.output, re.MULTILINE)
        assert found, f"no {name} URL in the output:\n{self.output}"
        return found.group(1)

    def kill(self) -> None:
        """Last resort when the test failed with the stack still up."""
        if self.process.poll() is None:
            for pid in descendant_pids(self.process.pid):
                os.kill(pid, signal.SIGKILL)
            self.process.kill()
            self.process.wait()


@pytest.fixture
def up(tmp_path: Path) -> Iterator[UpProcess]:
    (tmp_path / "home").mkdir()
    process = UpProcess(tmp_path / "home", free_port())
    try:
        yield process
    finally:
        process.kill()


def test_up_brings_the_stack_up_and_ctrl_c_takes_it_all_down(up: UpProcess) -> None:
    up.wait_until_up()
    before_banner = up.lines[: next(i for i, line in enumerate(up.lines) if line.startswith(UP_BANNER))]
    stage_lines = [line for line in before_banner if line.endswith(" ...")]
    said = [next(n for n, line in enumerate(stage_lines) if stage in line) for stage in STAGES]
    assert said == sorted(said), "\n".join(stage_lines)

    ui = httpx.get(up.url("Prefect UI"), timeout=30)
    assert ui.status_code == 200 and "text/html" in ui.headers["content-type"]
    health = httpx.get(f"{up.url('ingress API')}/healthz", timeout=30)
    assert health.status_code == 200, health.text
    deployments = httpx.post(f"{up.url('Prefect API')}/deployments/filter", json={}, timeout=30).json()
    assert {d["name"] for d in deployments} == set(project_deployments())
    block_types = httpx.post(f"{up.url('Prefect API')}/block_types/filter", json={}, timeout=30).json()
    assert {"exstream-connection", "fcm-connection", "apns-connection", "web-push-connection"} <= {
        block_type["slug"] for block_type in block_types
    }, "the Blocks page offers every connection block type"
    automations = httpx.post(f"{up.url('Prefect API')}/automations/filter", json={}, timeout=30).json()
    names = [automation["name"] for automation in automations]  # deployment triggers are automations too
    block_ids = {name: uuid.uuid4() for name in referenced_blocks()}
    assert all(names.count(automation.name) == 1 for automation in project_automations(block_ids=block_ids)), names
    # The failure automation sends through the notification block up made, pointing at up's operations inbox.
    blocks = httpx.post(
        f"{up.url('Prefect API')}/block_documents/filter",
        json={"block_documents": {"name": {"any_": list(block_ids)}}},
        timeout=30,
    ).json()
    assert [(block["name"], block["block_type"]["slug"]) for block in blocks] == [
        ("exstream-push-operations", "custom-webhook")
    ]
    sends = [action for a in automations for action in a["actions"] if action["type"] == "send-notification"]
    assert [action["block_document_id"] for action in sends] == [blocks[0]["id"]]
    assert httpx.get(up.url("operations inbox"), timeout=30).json() == []
    assert re.search(r"^\s+export EXSTREAM_PUSH_INGRESS_SECRET=\S+", up.output, re.MULTILINE)

    # APNs and Web Push are configured against their emulators, which answer over TLS from the CA the settings
    # name; the web devices of data/devices.csv are subscribed at the Web Push one, ready to import.
    exports = dict(re.findall(r"^\s+export (EXSTREAM_PUSH_\w+)=(\S+)", up.output, re.MULTILINE))
    apns_settings = ("APNS_URL", "APNS_TEAM_ID", "APNS_KEY_ID", "APNS_KEY_FILE", "APNS_BUNDLE_ID")
    assert {f"EXSTREAM_PUSH_{name}" for name in apns_settings} <= set(exports)
    assert Path(exports["EXSTREAM_PUSH_APNS_KEY_FILE"]).is_file()
    assert Path(exports["EXSTREAM_PUSH_WEBPUSH_VAPID_PRIVATE_KEY_FILE"]).is_file()
    trust = ssl.create_default_context(cafile=exports["EXSTREAM_PUSH_CA_FILE"])
    assert httpx.get(f"{exports['EXSTREAM_PUSH_APNS_URL']}/_emulator/stats", verify=trust, timeout=30).is_success
    devices_file = Path(re.search(r"^devices\s+(\S+)", up.output, re.MULTILINE).group(1))
    with devices_file.open(newline="") as handle:
        web_endpoints = [row["token"] for row in csv.DictReader(handle) if row["provider"] == "webpush"]
    webpush_url = re.search(r"^Web Push emulator\s+(https://\S+)", up.output, re.MULTILINE).group(1)
    assert web_endpoints and all(endpoint.startswith(f"{webpush_url}/push/") for endpoint in web_endpoints)
    stats = httpx.get(f"{webpush_url}/_emulator/stats", verify=trust, timeout=30).json()
    assert stats["subscriptions"] == len(web_endpoints)

    # a command on this home without PREFECT_API_URL runs on the stack's server, not a server of its own
    status = subprocess.run(
        [sys.executable, "-m", "exstream_push.cli", "server", "status"], env=up.env, capture_output=True, text=True
    )
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"exstream-push up: Prefect server {up.url('Prefect API')} ("), status.stdout

    children = descendant_pids(up.process.pid)
    assert len(children) >= 3, f"expected the server, the worker and the ingress API below `up`, found {children}"
    up.process.send_signal(signal.SIGINT)
    try:
        returncode = up.process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"exstream-push up did not stop within {STOP_TIMEOUT:.0f} s of SIGINT:\n{up.output}")
    assert returncode == 0, up.output

    deadline = time.monotonic() + 30
    while (alive := {pid for pid in children if pid_alive(pid)}) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not alive, f"processes started by `up` outlived it: {alive}"
    assert not stack_state_file(up.home).exists()
