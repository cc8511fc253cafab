"""A real, programmable HTTP/1.1 server on 127.0.0.1 for tests of code that calls endpoints.

It runs its own asyncio loop in a daemon thread, so it answers whatever loop
(or thread) the code under test uses. Routes are programmed per (method,
path); each answer of a route is taken from its script in turn, the last one
repeating::

    with HttpFake() as fake:
        fake.route("GET", "/flaky", Reply(503), Reply(503), Reply(200, body=b"ok"))
        fake.route("GET", "/limited", Reply(429, headers={"Retry-After": "1"}), Reply(200))
        fake.route("POST", "/slow", Reply(200, delay=5.0))
        fake.route("GET", "/idle", Reply(204))
        fake.route("GET", "/echo", Reply(200, echo_headers=True))  # request headers as JSON
        url = fake.url("/flaky")
        ...
        fake.requests("/flaky")   # the log: method, path, query, headers, body, times
        fake.max_concurrent("/slow")  # the most requests in progress at once

An unprogrammed path answers 404. `Reply.delay` holds the answer back
(an aborted client shows up as `Request.disconnected`). Requests must carry
Content-Length bodies (httpx does for bytes); keep-alive is supported.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Reply:
    """One scripted answer.

    Attributes:
        status: HTTP status code.
        body: Response body.
        headers: Extra response headers (Content-Length is added).
        delay: Seconds to wait before answering.
        echo_headers: Answer the request's headers as a JSON object instead of `body`.
    """

    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    echo_headers: bool = False


@dataclass
class Request:
    """One request the server received."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    received_at: float  # time.monotonic()
    answered_at: float | None = None
    disconnected: bool = False


class HttpFake:
    """The server; use as a context manager, or call start()/stop()."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], list[Reply]] = {}
        self._served: dict[tuple[str, str], int] = {}
        self._log: list[Request] = []
        self._in_flight: dict[str, int] = {}
        self._max_in_flight: dict[str, int] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self.port = 0

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> HttpFake:
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", 0)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=serve, name="http-fake", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake HTTP server did not start within 10s")
        return self

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is None or server is None or self._thread is None:
            return

        async def shutdown() -> None:
            server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._loop = self._server = self._thread = None

    def __enter__(self) -> HttpFake:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- programming and inspection ----------------------------------------------

    def route(self, method: str, path: str, *replies: Reply) -> str:
        """Script the answers of `method path` (the last repeats); returns its URL."""
        with self._lock:
            self._routes[(method.upper(), path)] = list(replies) or [Reply()]
            self._served[(method.upper(), path)] = 0
        return self.url(path)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def requests(self, path: str | None = None) -> list[Request]:
        """Requests received so far (all, or those of `path`), oldest first."""
        with self._lock:
            return [r for r in self._log if path is None or r.path == path]

    def max_concurrent(self, path: str | None = None) -> int:
        """The most requests of `path` (or of all paths, key "*") in progress at once."""
        with self._lock:
            return self._max_in_flight.get(path or "*", 0)

    # -- serving ----------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._serve_one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        request_line = await reader.readline()
        if not request_line.strip():
            return False
        method, target, _ = request_line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
        parts = urlsplit(target)
        request = Request(method, parts.path, parts.query, headers, body, time.monotonic())
        reply = self._next_reply(request)
        self._enter(request.path)
        try:
            if reply.delay:
                await self._delay(reply.delay, reader, request)
            if request.disconnected:
                return False
            writer.write(self._render(reply, request))
            await writer.drain()
            request.answered_at = time.monotonic()
        finally:
            self._leave(request.path)
        return headers.get("connection", "").lower() != "close"

    async def _delay(self, seconds: float, reader: asyncio.StreamReader, request: Request) -> None:
        """Wait `seconds`, noticing a client that hangs up meanwhile (EOF on its side)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (remaining := deadline - loop.time()) > 0:
            try:
                async with asyncio.timeout(remaining):
                    # Clients do not pipeline, so nothing but EOF arrives while we hold back.
                    if await reader.read(1) == b"":
                        request.disconnected = True
                        return
            except TimeoutError:
                return

    def _next_reply(self, request: Request) -> Reply:
        key = (request.method.upper(), request.path)
        with self._lock:
            self._log.append(request)
            script = self._routes.get(key)
            if script is None:
                return Reply(404, b"no such route")
            index = min(self._served[key], len(script) - 1)
            self._served[key] += 1
            return script[index]

    def _enter(self, path: str) -> None:
        with self._lock:
            for key in (path, "*"):
                self._in_flight[key] = self._in_flight.get(key, 0) + 1
                self._max_in_flight[key] = max(
                    self._max_in_flight.get(key, 0), self._in_flight[key]
                )

    def _leave(self, path: str) -> None:
        with self._lock:
            for key in (path, "*"):
                self._in_flight[key] -= 1

    @staticmethod
    def _render(reply: Reply, request: Request) -> bytes:
        body = json.dumps(request.headers).encode() if reply.echo_headers else reply.body
        if request.method.upper() == "HEAD" or reply.status in (204, 304):
            body = b""
        reason = (
            HTTPStatus(reply.status).phrase if reply.status in HTTPStatus._value2member_map_ else ""
        )
        lines = [f"HTTP/1.1 {reply.status} {reason}"]
        headers = {"Content-Length": str(len(body)), **reply.headers}
        if reply.status in (204, 304):
            headers.pop("Content-Length")
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
