"""The APNs HTTP/2 transport against a scripted h2 server over TLS on loopback: the parts of HTTP/2 the APNs
emulator (hypercorn) never exercises — a low stream limit, a small flow-control window, GOAWAY, RST_STREAM."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import DataReceived, RequestReceived, StreamEnded
from h2.settings import SettingCodes, Settings

from exstream_push.connectors.apns.http2 import Http2Client, Http2TransportError, StreamNotProcessed
from exstream_push.connectors.tls import client_ssl_context
from exstream_push_dev.emulators.tls import development_tls


@dataclass
class Seen:
    """What the server saw: requests answered per connection, and the most streams open at once."""

    answered: list[list[bytes]] = field(default_factory=list)
    peak_open: int = 0


Answer = Callable[["ServerConnection", int, bytes, bytes], None]
"""Decides what to do with a complete request: (connection, stream id, path, body)."""


class ServerConnection(asyncio.Protocol):
    def __init__(self, seen: Seen, settings: dict[int, int], answer: Answer) -> None:
        self.h2 = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        self.h2.local_settings = Settings(client=False, initial_values=settings)
        self.seen = seen
        self.answer = answer
        self.number = len(seen.answered)
        seen.answered.append([])
        self.requests: dict[int, tuple[bytes, bytearray]] = {}
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.h2.initiate_connection()
        self.flush()

    def data_received(self, data: bytes) -> None:
        for event in self.h2.receive_data(data):
            if isinstance(event, RequestReceived):
                self.requests[event.stream_id] = (dict(event.headers or [])[b":path"], bytearray())
                self.seen.peak_open = max(self.seen.peak_open, len(self.requests))
            elif isinstance(event, DataReceived):
                self.requests[event.stream_id][1].extend(event.data)
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, StreamEnded):
                path, body = self.requests[event.stream_id]
                self.answer(self, event.stream_id, path, bytes(body))
        self.flush()

    def respond(self, stream_id: int, body: bytes) -> None:
        path, _ = self.requests.pop(stream_id)
        self.seen.answered[self.number].append(path)
        self.h2.send_headers(stream_id, [(b":status", b"200"), (b"content-length", str(len(body)).encode())])
        self.h2.send_data(stream_id, body, end_stream=True)

    def flush(self) -> None:
        assert self.transport is not None
        self.transport.write(self.h2.data_to_send())


@asynccontextmanager
async def scripted_server(
    folder: Path, answer: Answer, settings: dict[int, int] | None = None
) -> AsyncIterator[tuple[Http2Client, Seen]]:
    tls = development_tls(folder)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    context.set_alpn_protocols(["h2"])
    seen = Seen()
    server = await asyncio.get_running_loop().create_server(
        lambda: ServerConnection(seen, settings or {}, answer), "127.0.0.1", 0, ssl=context
    )
    port = server.sockets[0].getsockname()[1]
    try:
        async with Http2Client(
            f"https://127.0.0.1:{port}", client_ssl_context(tls.ca_file, http2=True), timeout=10
        ) as client:
            yield client, seen
    finally:
        server.close()


def echo(connection: ServerConnection, stream_id: int, path: bytes, body: bytes) -> None:
    connection.respond(stream_id, body)


async def post_all(client: Http2Client, bodies: list[bytes]) -> list[bytes]:
    responses = await asyncio.gather(*(client.post(f"/{i}", [], body) for i, body in enumerate(bodies)))
    assert all(response.status == 200 for response in responses)
    return [response.body for response in responses]


def test_streams_wait_for_the_servers_limit_and_bodies_for_its_window(tmp_path: Path) -> None:
    """Two streams at a time and 16-byte windows: ten 100-byte bodies arrive whole, never more than two open
    (the server's h2 would break the connection at a third)."""
    settings = {SettingCodes.MAX_CONCURRENT_STREAMS: 2, SettingCodes.INITIAL_WINDOW_SIZE: 16}
    bodies = [bytes([65 + i]) * 100 for i in range(10)]

    async def run() -> tuple[list[bytes], Seen]:
        async with scripted_server(tmp_path, echo, settings) as (client, seen):
            return await post_all(client, bodies), seen

    echoed, seen = asyncio.run(run())
    assert echoed == bodies
    assert seen.peak_open == 2 and len(seen.answered) == 1


def test_requests_the_server_did_not_process_go_to_a_new_connection(tmp_path: Path) -> None:
    """GOAWAY after answering stream 1 of three: streams 3 and 5 were not processed, so they are sent again on a
    new connection, and the caller sees three answers, no error."""

    def answer_one_then_go_away(connection: ServerConnection, stream_id: int, path: bytes, body: bytes) -> None:
        if connection.number > 0:
            connection.respond(stream_id, body)
        elif len(connection.requests) == 3:
            connection.respond(1, b"first")
            connection.h2.close_connection(last_stream_id=1)
            connection.flush()
            assert connection.transport is not None
            connection.transport.close()

    async def run() -> tuple[list[bytes], Seen]:
        async with scripted_server(tmp_path, answer_one_then_go_away) as (client, seen):
            return await post_all(client, [b"a", b"b", b"c"]), seen

    bodies, seen = asyncio.run(run())
    assert bodies == [b"first", b"b", b"c"]
    assert seen.answered == [[b"/0"], [b"/1", b"/2"]]


def test_a_reset_stream_is_a_transport_error_and_a_refused_one_is_sent_again(tmp_path: Path) -> None:
    refused: list[int] = []

    def refuse_first_reset_failing(connection: ServerConnection, stream_id: int, path: bytes, body: bytes) -> None:
        if not refused:
            refused.append(stream_id)
            connection.requests.pop(stream_id)
            connection.h2.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
        elif path == b"/fail":
            connection.requests.pop(stream_id)
            connection.h2.reset_stream(stream_id, ErrorCodes.INTERNAL_ERROR)
        else:
            connection.respond(stream_id, body)

    async def run() -> tuple[bytes, BaseException]:
        async with scripted_server(tmp_path, refuse_first_reset_failing) as (client, _):
            accepted = await client.post("/ok", [], b"ok")
            with pytest.raises(Http2TransportError) as failed:
                await client.post("/fail", [], b"x")
            return accepted.body, failed.value

    body, error = asyncio.run(run())
    assert body == b"ok" and refused == [1]
    assert not isinstance(error, StreamNotProcessed) and "INTERNAL_ERROR" in str(error)
