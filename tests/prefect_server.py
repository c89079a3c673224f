"""A real Prefect server and process worker for the event-driven tests, driven through the REST API.

Started as subprocesses the way ``exstream-push up`` starts them (``exstream_push_dev.stack``), so the tests exercise
the same commands a user runs: ``prefect server start``, ``prefect work-pool create``, ``prefect deploy``,
``prefect worker start``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from exstream_push_dev.emulators.server import free_port
from exstream_push_dev.stack import (
    LOOPBACK,
    PROJECT_ROOT,
    WORK_POOL,
    ChildProcess,
    prefect_env,
    run_prefect,
    wait_for_http,
)
from tests.conftest import _postgres_database

SERVER_STARTUP_TIMEOUT = 240.0
RUN_TIMEOUT = 240.0
TERMINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@contextmanager
def prefect_postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for Prefect's server, as an asyncpg URL; skipped (or failed) as conftest says."""
    databases = _postgres_database()
    try:
        yield make_url(next(databases)).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    finally:
        databases.close()


class PrefectServer:
    """``prefect server start`` on a free port with its own home, plus the work pool, deployments and a worker."""

    def __init__(self, home: Path, database_url: str, env: Mapping[str, str]) -> None:
        self.home = home
        self.url = f"http://{LOOPBACK}:{free_port()}"
        self.api_url = f"{self.url}/api"
        self.env = prefect_env({**os.environ, **env}, home / "prefect", self.api_url)
        self.env.update(
            {
                "PREFECT_API_DATABASE_CONNECTION_URL": database_url,
                # Runs start from events or from the test, never from a clock.
                "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
                "PREFECT_WORKER_QUERY_SECONDS": "2",
                "PREFECT_LOGGING_LEVEL": "INFO",
            }
        )
        self.children: list[ChildProcess] = []
        self.http = httpx.Client(base_url=self.api_url, timeout=30)

    def start(self) -> PrefectServer:
        server = self._spawn("server", ["server", "start", "--host", LOOPBACK, "--port", self.url.rsplit(":", 1)[1]])
        wait_for_http(f"{self.api_url}/health", server, timeout=SERVER_STARTUP_TIMEOUT)
        return self

    def deploy_all(self) -> None:
        """The work pool, then every deployment of prefect.yaml."""
        log_file = self.home / "deploy.log"
        run_prefect(
            ["work-pool", "create", WORK_POOL, "--type", "process", "--overwrite"],
            env=self.env,
            log_file=log_file,
            timeout=SERVER_STARTUP_TIMEOUT,
        )
        run_prefect(["deploy", "--no-prompt", "--all"], env=self.env, log_file=log_file, timeout=RUN_TIMEOUT)

    def start_worker(self) -> ChildProcess:
        return self._spawn("worker", ["worker", "start", "--pool", WORK_POOL, "--type", "process"])

    def _spawn(self, name: str, prefect_args: Sequence[str]) -> ChildProcess:
        child = ChildProcess(
            f"Prefect {name}",
            [sys.executable, "-m", "prefect", *prefect_args],
            env=self.env,
            cwd=PROJECT_ROOT,
            log_file=self.home / f"{name}.log",
        )
        self.children.append(child.start())
        return child

    def stop(self) -> None:
        self.http.close()
        for child in reversed(self.children):
            child.stop()

    # the REST API

    def deployment(self, name: str) -> dict[str, Any]:
        found = self.http.post("/deployments/filter", json={"deployments": {"name": {"any_": [name]}}}).json()
        assert found, f"no deployment named {name!r}; deploy log:\n{(self.home / 'deploy.log').read_text()[-3000:]}"
        return found[0]

    def deployment_names(self) -> set[str]:
        return {deployment["name"] for deployment in self.http.post("/deployments/filter", json={}).json()}

    def run_deployment(self, name: str, parameters: Mapping[str, Any] | None = None) -> str:
        deployment_id = self.deployment(name)["id"]
        response = self.http.post(
            f"/deployments/{deployment_id}/create_flow_run", json={"parameters": dict(parameters or {})}
        )
        response.raise_for_status()
        return response.json()["id"]

    def flow_runs(self, deployment_name: str) -> list[dict[str, Any]]:
        deployment_id = self.deployment(deployment_name)["id"]
        body = {"deployments": {"id": {"any_": [deployment_id]}}, "sort": "EXPECTED_START_TIME_ASC"}
        return self.http.post("/flow_runs/filter", json=body).json()

    def logs(self, flow_run_id: str) -> str:
        body = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "TIMESTAMP_ASC"}
        return "\n".join(entry["message"] for entry in self.http.post("/logs/filter", json=body).json())

    def wait_for_run(
        self, description: str, find: Callable[[], dict[str, Any] | None], timeout: float = RUN_TIMEOUT
    ) -> dict[str, Any]:
        """The flow run ``find`` returns, once it is finished; a failure message says what was seen meanwhile."""
        deadline = time.monotonic() + timeout
        run: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            run = find()
            if run is not None and run["state_type"] in TERMINAL_STATES:
                return run
            time.sleep(1.0)
        seen = f"last seen in state {run['state_type']}" if run else "no such flow run was created"
        worker = next((child for child in self.children if child.name == "Prefect worker"), None)
        tail = worker.log_tail() if worker else ""
        raise AssertionError(f"{description}: not finished within {timeout:.0f} s, {seen}; worker log:\n{tail}")

    def wait_for_completed(self, description: str, find: Callable[[], dict[str, Any] | None]) -> dict[str, Any]:
        run = self.wait_for_run(description, find)
        assert run["state_type"] == "COMPLETED", (
            f"{description}: flow run {run['name']} ended {run['state_type']}:\n{self.logs(run['id'])}"
        )
        return run

    def run_of(self, deployment_name: str, **parameters: Any) -> Callable[[], dict[str, Any] | None]:
        """A ``find`` for the first run of a deployment whose parameters include ``parameters``."""

        def find() -> dict[str, Any] | None:
            for run in self.flow_runs(deployment_name):
                if all(run["parameters"].get(name) == value for name, value in parameters.items()):
                    return run
            return None

        return find

    def flow_run(self, flow_run_id: str) -> Callable[[], dict[str, Any] | None]:
        return lambda: self.http.get(f"/flow_runs/{flow_run_id}").json()
