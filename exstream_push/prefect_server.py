"""A local Prefect server that outlives the command: started once in the background, found again by the next.

Without a configured Prefect API, Prefect starts a temporary server for every command, 22-46 s here before the
first task. Instead a command on the embedded defaults finds the server recorded under the state folder — the one
``exstream-push up`` runs (``<home>/stack/prefect/server.json``), else the shared one
(``<home>/prefect/server.json``) — checks that it answers ``/api/health`` and points Prefect at it. When none
answers it starts the shared one under a lock (``<home>/prefect/server.lock``), so commands started together start
one server between them; the server runs in a session of its own, logging to ``<home>/prefect/server.log``, and
``exstream-push server stop`` stops it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from exstream_push.errors import DependencyUnavailable

LOOPBACK = "127.0.0.1"
PREFERRED_PORT = 4280  # not 4200, which `exstream-push up` takes for its own server
STARTUP_TIMEOUT = 180.0  # a server's first start migrates its database: 20-40 s on a busy 2-core machine
STOP_TIMEOUT = 30.0
HEALTH_TIMEOUT = 5.0


@dataclass(frozen=True)
class ServerRecord:
    """What a server's state file says: enough to find it again, check it is the one recorded and stop it."""

    pid: int
    port: int
    url: str  # the API URL, ending in /api
    started_at: str


def server_dir(home: Path) -> Path:
    """The shared server's folder: its state file, lock, log, and the Prefect home the embedded defaults use."""
    return (home / "prefect").resolve()


def state_file(home: Path) -> Path:
    return server_dir(home) / "server.json"


def stack_state_file(home: Path) -> Path:
    """Where ``exstream-push up`` records its Prefect server while it runs."""
    return (home / "stack" / "prefect" / "server.json").resolve()


def read_record(path: Path) -> ServerRecord | None:
    """The record in ``path``; None when there is none or it is not one (a torn or foreign file is stale)."""
    try:
        return ServerRecord(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def write_record(path: Path, record: ServerRecord) -> None:
    """Replace the record in one step, so a reader sees the old one or the new one, never half of either."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(asdict(record), indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)


def pid_alive(pid: int) -> bool:
    """Running or stopped, not a zombie: a zombie whose parent is gone may never be reaped in a container."""
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True, check=False)
    return bool(state.stdout.strip()) and not state.stdout.strip().startswith("Z")


def port_or_free(preferred: int) -> int:
    """The conventional port when it is free, so URLs stay the same between runs; any free port otherwise."""
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # As uvicorn binds: a port whose last connections linger in TIME_WAIT is free, one with a listener not.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise OSError("no free loopback port")


def answers(api_url: str) -> bool:
    """Whether a Prefect API answers its health check at ``api_url``."""
    try:
        return httpx.get(f"{api_url}/health", timeout=HEALTH_TIMEOUT).status_code == 200
    except httpx.HTTPError:
        return False


def _is_recorded_server(record: ServerRecord) -> bool:
    """Whether ``record.pid`` is still the server recorded, not another process that got its pid since."""
    listing = subprocess.run(["ps", "-o", "args=", "-p", str(record.pid)], capture_output=True, text=True, check=False)
    command = listing.stdout
    return "prefect server start" in command and f"--port {record.port}" in command


def _live(path: Path) -> ServerRecord | None:
    record = read_record(path)
    if record is not None and pid_alive(record.pid) and answers(record.url):
        return record
    return None


def find_server(home: Path) -> ServerRecord | None:
    """The running server a command on the embedded defaults uses: the ``up`` stack's, else the shared one."""
    return _live(stack_state_file(home)) or _live(state_file(home))


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    """One starter or stopper at a time per state folder; the kernel releases the lock if its holder dies."""
    directory = server_dir(home)
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "server.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _stop_group(record: ServerRecord, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM to the server's session (it leads its own), SIGKILL to what is left after ``timeout`` seconds."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(record.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(record.pid, signal.SIGKILL)


def _start(home: Path) -> ServerRecord:
    """``prefect server start`` in a session of its own, so it outlives this command and its terminal."""
    directory = server_dir(home)
    port = port_or_free(PREFERRED_PORT)
    api_url = f"http://{LOOPBACK}:{port}/api"
    env = {name: value for name, value in os.environ.items() if name != "PREFECT_API_URL"}
    env.setdefault("PREFECT_HOME", str(directory))
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    log_file = directory / "server.log"
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", LOOPBACK, "--port", str(port)],
            env=env,
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    record = ServerRecord(process.pid, port, api_url, datetime.now(UTC).isoformat(timespec="seconds"))
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not answers(api_url):
        exited = process.poll()
        if exited is not None or time.monotonic() > deadline:
            if exited is None:
                _stop_group(record)
            reason = f"exited {exited}" if exited is not None else f"no answer within {STARTUP_TIMEOUT:.0f} s"
            raise DependencyUnavailable(
                "the local Prefect server", api_url, f"it did not start; its log is {log_file}", reason
            )
        time.sleep(0.25)
    write_record(state_file(home), record)
    return record


def ensure_server(home: Path) -> tuple[ServerRecord, bool]:
    """The running server for ``home`` and whether this call started it. A recorded server that is no longer
    the one recorded (its pid gone or reused) is replaced; one that is alive but does not answer is stopped."""
    found = find_server(home)
    if found is not None:
        return found, False
    with _locked(home):
        found = find_server(home)  # another command may have started it while this one waited for the lock
        if found is not None:
            return found, False
        stale = read_record(state_file(home))
        if stale is not None and pid_alive(stale.pid) and _is_recorded_server(stale):
            _stop_group(stale)
        return _start(home), True


def stop_server(home: Path) -> ServerRecord | None:
    """Stop the shared server and forget it; the record it had, or None when there was none. The ``up`` stack's
    server is not this one's to stop: ``up`` stops it with the rest of the stack."""
    with _locked(home):
        record = read_record(state_file(home))
        if record is None:
            return None
        if pid_alive(record.pid) and _is_recorded_server(record):
            _stop_group(record)
        state_file(home).unlink(missing_ok=True)
        return record


def use_server(home: Path) -> ServerRecord:
    """Point this process's Prefect client (and the processes it starts) at the local server, starting it if
    none runs."""
    record, _started = ensure_server(home)
    os.environ["PREFECT_API_URL"] = record.url
    from prefect.context import refresh_global_settings_context

    refresh_global_settings_context()
    return record
