"""A small HTTP/2 client for APNs on the ``h2`` state machine directly: a few TLS connections, each an
``asyncio.Protocol`` multiplexing hundreds of streams.

Why not httpx (httpcore's HTTP/2): against the emulator in another process it cost 4,250 µs of client CPU per
notification and ran at ~50 a second with a few hundred streams in flight. Its time went to one locked socket
write per request (anyio's ``SocketStream.send``), per-request connection-pool bookkeeping that is quadratic in
the streams in flight (``is_queued``), and Huffman-encoding the provider token into every request (h2 never
indexes ``authorization`` unless told not to normalise). Here a request is a few h2 calls and a future: what h2
has to send is written once per event-loop iteration for every stream started in it: ~700 µs per notification
on the same machine and load, over half of it in h2 and hpack themselves.

Why not aioapns (which is built the same way): see the package docstring; this module is only the transport.

What APNs needs of HTTP/2 and what is honoured here: the server's ``SETTINGS_MAX_CONCURRENT_STREAMS`` (APNs
starts a connection low and raises it to ~1,000; requests above it wait on the connection), flow-control windows
(a body waits for ``WINDOW_UPDATE``), ``GOAWAY`` (streams the server says it did not process, and requests not yet
started, go to another connection without counting as an attempt; streams it may have processed fail as transport
errors, for the driver to retry), ``RST_STREAM`` (a transport error; ``REFUSED_STREAM`` counts as not processed).

HPACK: the headers every request repeats (``:authority``, ``authorization``, ``apns-topic``, ``apns-push-type``)
enter the dynamic table once and cost a byte or two after that. Values unique to a request (``:path``,
``apns-id``, ``apns-collapse-id``) are sent never-indexed (``NeverIndexedHeaderTuple``) so they do not evict the
rest. Indexing the provider token is safe here: compression side channels need an attacker's data compressed
beside the secret, and every header on these connections is ours.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Sequence, Sized
from dataclasses import dataclass, field
from types import TracebackType
from typing import cast
from urllib.parse import urlsplit

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import H2Error
from hpack import Encoder, HeaderTuple, NeverIndexedHeaderTuple

Header = tuple[bytes, bytes] | HeaderTuple

STREAMS_PER_CONNECTION = 500
"""Requests one connection carries before another is opened: h2 counts a connection's open streams on every new
stream, so a connection with 1,000 costs more per request than two with 500."""
MAX_CONNECTIONS = 4
NOT_PROCESSED_RETRIES = 3
"""How often a request the server did not process (``GOAWAY``, ``REFUSED_STREAM``) moves to another connection
before it counts as a transport error."""


class Http2TransportError(Exception):
    """No answer: the connection could not be opened or was lost, the stream was reset, or time ran out. The
    message names what happened, never the request."""


class StreamNotProcessed(Http2TransportError):
    """The server did not act on the request (RFC 9113 §8.7): it may be sent again on another connection."""


@dataclass(frozen=True, slots=True)
class Http2Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True, eq=False)
class _Request:
    headers: Sequence[Header]
    unsent: memoryview
    answer: asyncio.Future[Http2Response]
    stream_id: int | None = None
    status: int = 0
    response_headers: dict[str, str] = field(default_factory=dict)
    body: list[bytes] = field(default_factory=list)


class _CountingH2Connection(H2Connection):
    """h2 counts a connection's open streams by walking all of them before each new one (quadratic in the streams
    in flight; the same walk forgets closed streams). The protocol keeps that count anyway: h2 is given it, and
    walks once every ``FORGET_CLOSED_EVERY`` new streams, to forget the closed ones."""

    FORGET_CLOSED_EVERY = 128

    def __init__(self, config: H2Configuration, in_flight: Sized) -> None:
        super().__init__(config)
        self._in_flight = in_flight
        self._until_walk = self.FORGET_CLOSED_EVERY

    @property
    def open_outbound_streams(self) -> int:
        self._until_walk -= 1
        if self._until_walk <= 0:
            self._until_walk = self.FORGET_CLOSED_EVERY
            return super().open_outbound_streams
        return len(self._in_flight)


class _LiteralEncoder(Encoder):
    """HPACK without Huffman coding: hpack codes in pure Python, byte by byte, which cost more CPU per request
    than anything else here, to save ~30 bytes of each request's unique values."""

    def encode(self, headers: Sequence[Header], huffman: bool = False) -> bytes:  # type: ignore[override]
        return super().encode(headers, huffman=False)


class _Connection(asyncio.Protocol):
    """One TLS connection speaking h2. Everything runs on the event loop thread, so no locks."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._streams: dict[int, _Request] = {}
        """Streams started and not yet answered, reset or abandoned: what h2 counts as open."""
        self._h2 = _CountingH2Connection(
            H2Configuration(
                client_side=True,
                header_encoding=None,
                # Our headers are lower-case bytes already; normalising would also force authorization
                # never-indexed (see the module docstring).
                normalize_outbound_headers=False,
                validate_outbound_headers=False,
                # Only :status, apns-id and retry-after are read, and each is checked where it is used.
                validate_inbound_headers=False,
            ),
            in_flight=self._streams,
        )
        self._h2.encoder = _LiteralEncoder()
        self._transport: asyncio.Transport | None = None
        self._waiting: deque[_Request] = deque()
        """Requests above the server's concurrent-stream limit, in arrival order."""
        self._blocked: dict[int, _Request] = {}
        """Started streams whose body waits for flow-control window, in start order."""
        self._flush_scheduled = False
        self._failure: Http2TransportError | None = None
        self.ready: asyncio.Future[None] = loop.create_future()
        """Set when the server's first SETTINGS arrived (its stream limit is unknown before), or the connection
        failed first (``usable`` tells which)."""
        self.closed: asyncio.Future[None] = loop.create_future()

    @property
    def usable(self) -> bool:
        return self._failure is None

    @property
    def load(self) -> int:
        return len(self._streams) + len(self._waiting)

    async def request(self, headers: Sequence[Header], body: bytes) -> Http2Response:
        """Send one request on a new stream (or once one is free) and wait for its whole response."""
        if self._failure is not None:
            raise StreamNotProcessed(str(self._failure))
        request = _Request(headers, memoryview(body), self._loop.create_future())
        if len(self._streams) < self._h2.remote_settings.max_concurrent_streams:
            self._start(request)
        else:
            self._waiting.append(request)
        try:
            return await request.answer
        except asyncio.CancelledError:
            self._abandon(request)
            raise

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's SSL transport is not a subclass
        self._h2.initiate_connection()
        self._schedule_flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except H2Error as error:  # after GOAWAY h2 refuses further frames: the connection is done
            self._fail(Http2TransportError(f"HTTP/2 protocol error: {type(error).__name__}"))
            return
        for event in events:
            if isinstance(event, ResponseReceived):
                self._on_response(event)
            elif isinstance(event, DataReceived):
                self._on_data(event)
            elif isinstance(event, StreamEnded):
                self._on_ended(event.stream_id)
            elif isinstance(event, StreamReset):
                self._on_reset(event)
            elif isinstance(event, WindowUpdated):
                self._send_blocked()
            elif isinstance(event, RemoteSettingsChanged):
                if not self.ready.done():
                    self.ready.set_result(None)
                self._start_waiting()
            elif isinstance(event, ConnectionTerminated):
                self._on_goaway(event)
                return
        self._schedule_flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(Http2TransportError("connection lost"))
        if not self.closed.done():
            self.closed.set_result(None)

    # Sending.

    def _start(self, request: _Request) -> None:
        stream_id = self._h2.get_next_available_stream_id()
        request.stream_id = stream_id
        self._h2.send_headers(stream_id, request.headers, end_stream=not request.unsent)
        self._streams[stream_id] = request  # after: h2 counts the streams open before this one
        if request.unsent:
            self._send_body(stream_id, request)
        self._schedule_flush()

    def _send_body(self, stream_id: int, request: _Request) -> None:
        """As much of the body as the windows allow; the rest waits in ``_blocked`` for ``WINDOW_UPDATE``."""
        data = request.unsent
        window = self._h2.local_flow_control_window(stream_id)
        while data and window > 0:
            size = min(len(data), window, self._h2.max_outbound_frame_size)
            self._h2.send_data(stream_id, data[:size].tobytes(), end_stream=size == len(data))
            data = data[size:]
            window -= size
        request.unsent = data
        if data:
            self._blocked[stream_id] = request
        else:
            self._blocked.pop(stream_id, None)

    def _send_blocked(self) -> None:
        for stream_id, request in list(self._blocked.items()):
            if self._h2.local_flow_control_window(stream_id) <= 0:
                if self._h2.outbound_flow_control_window <= 0:
                    return
                continue
            self._send_body(stream_id, request)

    def _start_waiting(self) -> None:
        limit = self._h2.remote_settings.max_concurrent_streams
        while self._waiting and len(self._streams) < limit:
            self._start(self._waiting.popleft())

    def _schedule_flush(self) -> None:
        """What every stream started or answered in this loop iteration produced goes out in one write."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    # Receiving.

    def _on_response(self, event: ResponseReceived) -> None:
        request = self._streams.get(event.stream_id)
        if request is None or event.headers is None:
            return
        for name, value in event.headers:
            if name == b":status":
                request.status = int(value)
            else:
                request.response_headers[name.decode()] = value.decode()

    def _on_data(self, event: DataReceived) -> None:
        if event.flow_controlled_length:
            self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        request = self._streams.get(event.stream_id)
        if request is not None and event.data:
            request.body.append(event.data)

    def _on_ended(self, stream_id: int) -> None:
        request = self._finish(stream_id)
        if request is not None and not request.answer.done():
            response = Http2Response(request.status, request.response_headers, b"".join(request.body))
            request.answer.set_result(response)

    def _on_reset(self, event: StreamReset) -> None:
        request = self._finish(event.stream_id)
        if request is None or request.answer.done():
            return
        code = getattr(event.error_code, "name", str(event.error_code))  # h2 gives ErrorCodes for known codes
        if event.error_code == ErrorCodes.REFUSED_STREAM:
            request.answer.set_exception(StreamNotProcessed(f"stream refused: {code}"))
        else:
            request.answer.set_exception(Http2TransportError(f"stream reset: {code}"))

    def _finish(self, stream_id: int) -> _Request | None:
        """Free the stream's slot for a waiting request."""
        request = self._streams.pop(stream_id, None)
        self._blocked.pop(stream_id, None)
        self._start_waiting()
        return request

    def _on_goaway(self, event: ConnectionTerminated) -> None:
        """Streams above ``last_stream_id`` were not processed; the rest may have been, but h2 reads nothing on
        a connection after GOAWAY, so they fail as transport errors."""
        last = event.last_stream_id if event.last_stream_id is not None else 0
        for stream_id, request in list(self._streams.items()):
            if stream_id > last and not request.answer.done():
                del self._streams[stream_id]
                request.answer.set_exception(StreamNotProcessed("connection closed by the server (GOAWAY)"))
        self._fail(Http2TransportError("connection closed by the server (GOAWAY) before it answered"))

    def _fail(self, error: Http2TransportError) -> None:
        """No more requests here: those in flight get ``error``, those never started may go elsewhere."""
        if self._failure is None:
            self._failure = error
        if not self.ready.done():
            self.ready.set_result(None)
        for request in self._streams.values():
            if not request.answer.done():
                request.answer.set_exception(error)
        for request in self._waiting:
            if not request.answer.done():
                request.answer.set_exception(StreamNotProcessed(str(error)))
        self._streams.clear()
        self._waiting.clear()
        self._blocked.clear()
        if self._transport is not None:
            self._transport.close()

    def _abandon(self, request: _Request) -> None:
        """The caller gave up (timeout): reset the stream, or forget the request if it never started."""
        if request.stream_id is None:
            if request in self._waiting:
                self._waiting.remove(request)
            return
        if self._streams.pop(request.stream_id, None) is not None and self._failure is None:
            self._blocked.pop(request.stream_id, None)
            self._h2.reset_stream(request.stream_id, ErrorCodes.CANCEL)
            self._start_waiting()
            self._schedule_flush()

    def close(self) -> None:
        """Say GOAWAY and close once it is written."""
        if self._failure is None and self._transport is not None:
            self._h2.close_connection()
            self._flush()
            self._transport.close()


class Http2Client:
    """Requests to one ``https://`` origin over up to ``max_connections`` connections, a new one opened when each
    carries ``streams_per_connection``. ``async with``: the connections are closed on exit."""

    def __init__(
        self,
        url: str,
        ssl_context: ssl.SSLContext,
        *,
        timeout: float,
        streams_per_connection: int = STREAMS_PER_CONNECTION,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        """``ssl_context`` must offer ``h2`` by ALPN; ``timeout`` bounds each request, connecting included."""
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("an https:// URL is needed")
        self._host = parts.hostname
        self._port = parts.port or 443
        self._authority = parts.netloc.encode()
        self._ssl_context = ssl_context
        self._timeout = timeout
        self._streams_per_connection = streams_per_connection
        self._max_connections = max_connections
        self._connections: list[_Connection] = []
        self._opening: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Http2Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def post(self, path: str, headers: Sequence[Header], body: bytes) -> Http2Response:
        """POST ``body`` to ``path`` (sent never-indexed); ``headers`` are lower-case bytes pairs. Raises
        ``Http2TransportError`` when no answer came."""
        request_headers = [
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", self._authority),
            NeverIndexedHeaderTuple(b":path", path.encode()),
            *headers,
        ]
        try:
            async with asyncio.timeout(self._timeout):
                for _ in range(NOT_PROCESSED_RETRIES):
                    connection = await self._connection()
                    try:
                        return await connection.request(request_headers, body)
                    except StreamNotProcessed:
                        continue
        except TimeoutError:
            raise Http2TransportError(f"no answer within {self._timeout:g} s") from None
        raise Http2TransportError(f"not processed by {NOT_PROCESSED_RETRIES} connections")

    async def _connection(self) -> _Connection:
        """The least loaded usable connection, unless all carry their share and another may be opened."""
        while True:
            if not all(connection.usable for connection in self._connections):
                self._connections = [connection for connection in self._connections if connection.usable]
            if self._connections:
                least = min(self._connections, key=lambda connection: connection.load)
                if least.load < self._streams_per_connection or len(self._connections) >= self._max_connections:
                    return least
            if self._opening is None:
                self._opening = asyncio.create_task(self._open())
            await asyncio.shield(self._opening)

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            try:
                transport, connection = await loop.create_connection(
                    lambda: _Connection(loop), self._host, self._port, ssl=self._ssl_context
                )
            except (OSError, ssl.SSLError) as error:
                raise Http2TransportError(f"could not connect: {type(error).__name__}") from None
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
                transport.close()
                raise Http2TransportError("the server did not agree to HTTP/2 (ALPN h2)")
            await connection.ready
            if not connection.usable:
                raise Http2TransportError("connection lost before the server's SETTINGS")
            self._connections.append(connection)
        finally:
            self._opening = None

    async def aclose(self) -> None:
        """Close every connection and wait (briefly) until their transports are gone."""
        if self._opening is not None:
            self._opening.cancel()
            await asyncio.gather(self._opening, return_exceptions=True)
        connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
        if connections:
            await asyncio.wait([connection.closed for connection in connections], timeout=1.0)
