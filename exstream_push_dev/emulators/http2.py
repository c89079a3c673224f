"""Run an ASGI app over HTTP/2 and TLS on a loopback port in a background thread (hypercorn), for emulators of
services that speak nothing else: APNs. The counterpart of ``server.ServerThread`` (uvicorn, HTTP/1.1)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from types import TracebackType

from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.types import ASGIApp

from exstream_push_dev.emulators.server import free_port
from exstream_push_dev.emulators.tls import DevelopmentTls

MAX_CONCURRENT_STREAMS = 1000
"""What APNs advertises per connection once a request has been authenticated."""
IDLE_SECONDS = 600
"""A connection kept open this long without traffic: long enough to outlast the longest ``Retry-After`` wait."""


class Http2ServerThread:
    """``with Http2ServerThread(app, tls) as server: server.url`` — hypercorn on 127.0.0.1 over TLS, offering only
    ``h2`` by ALPN, stopped on exit. ``ca_file`` is what a client must trust to reach it."""

    def __init__(self, app: ASGIApp, tls: DevelopmentTls, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.app = app
        self.host = host
        self.port = port or free_port(host)
        self.ca_file = tls.ca_file
        config = Config()
        config.bind = [f"{host}:{self.port}"]
        config.certfile = str(tls.cert_file)
        config.keyfile = str(tls.key_file)
        config.alpn_protocols = ["h2"]
        config.h2_max_concurrent_streams = MAX_CONCURRENT_STREAMS
        config.keep_alive_timeout = IDLE_SECONDS
        # hypercorn closes a connection after 1,000 requests by default (aborting the streams in flight); APNs
        # keeps one open for as long as it is used.
        config.keep_alive_max_requests = 1 << 62
        config.accesslog = None
        config.errorlog = logging.getLogger("exstream_push_dev.emulators.http2")
        self._config = config
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"emulator-h2-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported by start(): a thread's exception has nowhere else to go
            self._failure = error

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        await serve(self.app, self._config, shutdown_trigger=self._stopping.wait, mode="asgi")  # type: ignore[arg-type]

    def start(self) -> Http2ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    return self
            except OSError:
                if not self._thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"emulator on port {self.port} did not start: {self._failure!r}") from None
                time.sleep(0.01)

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=10)

    def __enter__(self) -> Http2ServerThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
