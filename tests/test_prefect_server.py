"""Commands on the embedded defaults share one local Prefect server that outlives them (exstream_push.prefect_server).

Real ``prefect server start`` processes, 20-40 s each to come up here: the module starts two in all (one shared by
the first tests, one replacing a stale record) and stops every server it saw, whatever the outcome.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from exstream_push.prefect_server import ServerRecord, pid_alive, port_or_free, read_record, state_file, write_record
from exstream_push_dev.emulators.samples import write_manifest
from exstream_push_dev.emulators.server import free_port

pytestmark = pytest.mark.timeout(600)


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exstream_push.cli", *args], env=env, capture_output=True, text=True, timeout=420
    )


class SharedHome:
    """A state folder whose commands have no PREFECT_API_URL (the embedded defaults), and every server seen in it."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {name: value for name, value in os.environ.items() if not name.startswith(("PREFECT_", "EXSTREAM_"))}
        self.env.update({"EXSTREAM_PUSH_HOME": str(home), "EXSTREAM_PUSH_PREFECT_SERVER": "shared"})
        self.seen: set[int] = set()

    def record(self) -> ServerRecord | None:
        found = read_record(state_file(self.home))
        if found is not None:
            self.seen.add(found.pid)
        return found

    def cli(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        done = _cli(*args, env={**self.env, **extra})
        self.record()
        return done

    def stop_all(self) -> None:
        self.cli("server", "stop")
        for pid in self.seen:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedHome]:
    home = SharedHome(tmp_path_factory.mktemp("shared") / "home")
    try:
        yield home
    finally:
        home.stop_all()


@pytest.fixture(scope="module")
def started_together(shared: SharedHome) -> list[subprocess.CompletedProcess[str]]:
    """Two ``server start`` commands at once on a home with no server yet."""
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda _: shared.cli("server", "start"), range(2)))


def test_commands_started_together_start_one_server_and_a_run_finds_it(
    shared: SharedHome,
    started_together: list[subprocess.CompletedProcess[str]],
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    assert all(done.returncode == 0 for done in started_together), [done.stderr[-2000:] for done in started_together]
    outputs = sorted(done.stdout for done in started_together)
    record = shared.record()
    assert record is not None and pid_alive(record.pid)
    assert outputs[0].startswith("already running:") and outputs[1].startswith("started")
    assert all(f"{record.url} (pid {record.pid})" in output for output in outputs), outputs
    assert (shared.home / "prefect" / "server.log").stat().st_size > 0

    manifest = tmp_path / "_STDDELIVERYFILE.xml"
    write_manifest(manifest, 5, seed=3, job_id="J-SHARED")
    emulators = {name: value for name, value in env.items() if name != "EXSTREAM_PUSH_HOME"}
    done = shared.cli("run", "statement-ready", "--manifest", str(manifest), "--job", "J-SHARED", **emulators)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout[done.stdout.index("{") :])["customers"] == 5
    assert shared.record() == record  # the same server, not a new one
    runs = httpx.post(f"{record.url}/flow_runs/filter", json={}, timeout=30).json()
    assert [run["state_type"] for run in runs] == ["COMPLETED"]  # the run went to that server, not a temporary one


def test_server_stop_stops_it_and_its_record_is_then_not_trusted(
    shared: SharedHome, started_together: list[subprocess.CompletedProcess[str]]
) -> None:
    record = shared.record()
    assert record is not None
    assert shared.cli("server", "status").returncode == 0

    stopped = shared.cli("server", "stop")
    assert stopped.returncode == 0 and f"pid {record.pid}" in stopped.stdout
    deadline = time.monotonic() + 30
    while pid_alive(record.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not pid_alive(record.pid)
    assert not state_file(shared.home).exists()

    write_record(state_file(shared.home), record)  # as a crash leaves it: the pid dead, the port silent
    status = shared.cli("server", "status")
    assert status.returncode == 1 and "no local Prefect server" in status.stdout


def test_a_record_whose_pid_is_another_process_is_replaced_and_that_process_left_alone(shared: SharedHome) -> None:
    other = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )  # a process that got a dead server's pid
    try:
        port = free_port()
        write_record(state_file(shared.home), ServerRecord(other.pid, port, f"http://127.0.0.1:{port}/api", "then"))
        done = shared.cli("server", "start")
        assert done.returncode == 0 and done.stdout.startswith("started"), done.stderr[-2000:]
        record = shared.record()
        assert record is not None and record.pid != other.pid and pid_alive(record.pid)
        assert other.poll() is None  # not stopped: it is not the server recorded
    finally:
        other.kill()
        other.wait()


def test_a_port_left_in_time_wait_is_still_the_preferred_one_and_a_listened_one_is_not() -> None:
    """A stopped server's port stays the shared server's next time (its closed connections linger in TIME_WAIT)."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    assert port_or_free(port) != port  # listened on
    accepted.close()  # the server side closes first, so its end of the connection waits in TIME_WAIT
    client.close()
    listener.close()
    assert port_or_free(port) == port
