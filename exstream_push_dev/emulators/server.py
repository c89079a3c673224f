"""Run an ASGI app on a loopback port in a background thread, for the demo and the tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import httpx
import uvicorn
from starlette.types import ASGIApp

from exstream_push_dev.emulators.tls import DevelopmentTls


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ServerThread:
    """``with ServerThread(app) as server: server.url`` — uvicorn on 127.0.0.1, stopped on exit; over TLS with
    the development certificate when ``tls`` is given."""

    def __init__(
        self, app: ASGIApp, port: int | None = None, host: str = "127.0.0.1", *, tls: DevelopmentTls | None = None
    ) -> None:
        self.app = app
        self.host = host
        self.port = port or free_port(host)
        self.tls = tls
        certificate = {"ssl_certfile": str(tls.cert_file), "ssl_keyfile": str(tls.key_file)} if tls else {}
        config = uvicorn.Config(app, host=host, port=self.port, log_level="warning", lifespan="off", **certificate)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"emulator-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def start(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"emulator on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class EmulatorProcess:
    """An emulator under uvicorn in child processes, so it competes with the client for CPU, not for a GIL.

    ``with EmulatorProcess("exstream_push_dev.emulators.fcm:create_fcm_app_from_env", workers=2) as url: ...``
    """

    def __init__(
        self,
        factory: str,
        *,
        workers: int = 1,
        env: Mapping[str, str] | None = None,
        ready_path: str = "/_emulator/stats",
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._ready_path = ready_path
        self._command = [
            sys.executable, "-m", "uvicorn", "--factory", factory, "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", str(workers), "--log-level", "warning", "--no-access-log", "--lifespan", "off",
        ]  # fmt: skip
        self._env = {**os.environ, **(env or {})}
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> str:
        root = Path(__file__).resolve().parent.parent
        self._process = subprocess.Popen(self._command, cwd=root, env=self._env)
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{self.url}{self._ready_path}").raise_for_status()
                return self.url
            except httpx.TransportError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__(None, None, None)
                    raise RuntimeError(f"{self._command[4]} did not start") from None
                time.sleep(0.1)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
