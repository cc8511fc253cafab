"""A lean HTTP/1.1 keep-alive transport for httpx: asyncio streams and h11, no httpcore.

Opt-in (`CONVEYOR_EXECUTOR_HTTP_TRANSPORT=keepalive`). httpcore's pool and its anyio
stream wrappers cost about 1.5 ms of CPU per no-op request on the loaded bench machine
(16 pools, 64 in flight); the httpx client over this transport about 0.5 ms
(`docs/benchmarks.md`, round 4). What it does, and no more: plain and TLS HTTP/1.1,
one request at a time per connection, a LIFO of idle connections per origin (only
the one taken is checked, never a scan), a connection dropped whenever its exchange
did not end cleanly (an error, a cancel, a body not read to its end). No proxies, no
HTTP/2: the executor's client uses neither. Failures are raised as the httpx
exceptions httpcore would raise (ConnectError, ConnectTimeout, ReadTimeout,
WriteTimeout, ReadError, WriteError, RemoteProtocolError), so classification is the same.
"""

from __future__ import annotations

import asyncio
import select
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import h11
import httpx

_READ = 64 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
Origin = tuple[str, str, int]


class KeepAliveTransport(httpx.AsyncBaseTransport):
    def __init__(self, tls: ssl.SSLContext, max_idle: int = 64, idle_seconds: float = 5.0) -> None:
        self._tls = tls
        self._max_idle = max_idle
        self._idle_seconds = idle_seconds
        self._idle: dict[Origin, list[_Connection]] = {}
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(
                f"Request URL has an unsupported protocol '{url.scheme}://'."
            )
        origin = (url.scheme, url.host, url.port or _DEFAULT_PORTS[url.scheme])
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        connection = self._take(origin) or await self._connect(origin, timeouts.get("connect"))
        try:
            return await connection.send(request, timeouts)
        except BaseException:
            connection.close()
            raise

    def _take(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.reusable(now):
                return connection
            connection.close()
        return None

    def release(self, connection: _Connection) -> None:
        """A connection whose exchange ended cleanly: kept for the next request."""
        idle = self._idle.setdefault(connection.origin, [])
        if self._closed or len(idle) >= self._max_idle:
            connection.close()
            return
        connection.expires_at = time.monotonic() + self._idle_seconds
        idle.append(connection)

    async def _connect(self, origin: Origin, seconds: float | None) -> _Connection:
        scheme, host, port = origin
        tls = self._tls if scheme == "https" else None
        try:
            async with asyncio.timeout(seconds):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=tls, server_hostname=host if tls else None, limit=_READ
                )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connect to {host}:{port} timed out") from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        return _Connection(self, origin, reader, writer)

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()


class _Connection:
    def __init__(
        self,
        transport: KeepAliveTransport,
        origin: Origin,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self._transport = transport
        self.origin = origin
        self._reader = reader
        self._writer = writer
        self._h11 = h11.Connection(h11.CLIENT)
        self.expires_at = 0.0
        self._closed = False

    def reusable(self, now: float) -> bool:
        """Open, not expired, and nothing to read: an idle connection that is readable was
        closed by its server (or sent what no request asked for), even when the loop has
        not read that yet. One poll of this one socket, where httpcore polls them all."""
        if self._closed or now >= self.expires_at or self._reader.at_eof():
            return False
        if self._writer.transport.is_closing():
            return False
        sock = self._writer.get_extra_info("socket")
        if sock is None:
            return True
        # poll, not select: select() refuses descriptors past FD_SETSIZE (1024), which a
        # busy executor's sockets reach.
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return not poller.poll(0)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._writer.close()

    async def send(self, request: httpx.Request, timeouts: dict[str, Any]) -> httpx.Response:
        self._read_timeout = timeouts.get("read")
        head = h11.Request(
            method=request.method, target=request.url.raw_path, headers=request.headers.raw
        )
        async with _raising(httpx.WriteTimeout, httpx.WriteError, timeouts.get("write")):
            self._writer.write(self._h11.send(head) or b"")
            async for chunk in request.stream:  # type: ignore[union-attr]
                if chunk:
                    self._writer.write(self._h11.send(h11.Data(data=chunk)) or b"")
            self._writer.write(self._h11.send(h11.EndOfMessage()) or b"")
            await self._writer.drain()
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Response):
                break
            # h11.InformationalResponse (1xx): skipped, the final answer follows
        return httpx.Response(
            event.status_code,
            headers=event.headers.raw_items(),
            stream=_Body(self),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": event.reason},
        )

    async def _next_event(self) -> Any:
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc)) from exc
            if event is not h11.NEED_DATA:
                if isinstance(event, h11.ConnectionClosed):
                    raise httpx.RemoteProtocolError(
                        "Server disconnected without sending a response."
                    )
                return event
            async with _raising(httpx.ReadTimeout, httpx.ReadError, self._read_timeout):
                data = await self._reader.read(_READ)
            self._h11.receive_data(data)  # b"": the peer closed

    async def body(self) -> AsyncIterator[bytes]:
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._finished()
                return

    def _finished(self) -> None:
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
            self._transport.release(self)
        else:
            self.close()


class _Body(httpx.AsyncByteStream):
    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._connection.body():
                yield chunk
            self._done = True
        except BaseException:
            self._connection.close()
            raise

    async def aclose(self) -> None:
        if not self._done:  # not read to its end: the connection is in an unknown state
            self._connection.close()


class _raising:
    """`asyncio.timeout(seconds)`, raising `on_timeout`, and `on_error` for an OSError."""

    def __init__(
        self,
        on_timeout: type[httpx.TimeoutException],
        on_error: type[httpx.NetworkError],
        seconds: float | None,
    ) -> None:
        self._on_timeout, self._on_error = on_timeout, on_error
        self._timeout = asyncio.timeout(seconds)

    async def __aenter__(self) -> None:
        await self._timeout.__aenter__()

    async def __aexit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            await self._timeout.__aexit__(kind, exc, tb)
        except TimeoutError as timeout:
            raise self._on_timeout(f"timed out ({self._on_timeout.__name__})") from timeout
        if isinstance(exc, OSError):
            raise self._on_error(str(exc) or type(exc).__name__) from exc
