"""A fake OpenAI-compatible chat-completions provider: a real HTTP server on 127.0.0.1.

Tests script its replies in order (`answer`, `envelope`, `error`, `raw`, `hang`,
`trickle`; `answer` and `raw` can wait before replying) and
read back what it received (`requests`), e.g. the repair prompt or the
Authorization header. Every POST to `/chat/completions` takes the next
scripted reply; with none left it answers 500 so a test that asked more often
than it meant to fails visibly.

    with FakeLLM() as llm:
        llm.answer('{"endpoints": ...}', prompt_tokens=120, completion_tokens=30)
        settings = AdvisorSettings(enabled=True, base_url=llm.base_url, model="m")
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# A hanging reply waits at most this long for the test to finish (then answers 504).
_HANG_LIMIT_SECONDS = 30.0


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake provider received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def messages(self) -> list[dict[str, str]]:
        return self.body["messages"]


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    delay_seconds: float = 0.0  # before the status line
    byte_pause_seconds: float = 0.0  # between body bytes (a trickling provider)


def completion(content: str | None, prompt_tokens: int = 0, completion_tokens: int = 0) -> dict:
    """A chat-completions response body with one choice holding `content`."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class FakeLLM:
    """The server; use as a context manager (starts on enter, stops on exit)."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._replies: deque[_Reply] = deque()
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._in_flight = 0
        self.max_in_flight = 0  # most requests being answered at once
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        # A short poll interval: shutdown() waits up to one interval (0.5s by default).
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> FakeLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def answer(
        self,
        content: str | None,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        delay_seconds: float = 0.0,
    ) -> None:
        """Queue a 200 reply whose first choice holds `content`, sent after `delay_seconds`."""
        body = json.dumps(completion(content, prompt_tokens, completion_tokens)).encode()
        self.raw(200, body, delay_seconds)

    def envelope(self, body: dict[str, Any] | list[Any]) -> None:
        """Queue a 200 reply with exactly this JSON body."""
        self.raw(200, json.dumps(body).encode())

    def error(self, status: int, message: str = "provider failure") -> None:
        """Queue an HTTP error reply with an OpenAI-style error body."""
        self.raw(status, json.dumps({"error": {"message": message}}).encode())

    def raw(self, status: int, body: bytes, delay_seconds: float = 0.0) -> None:
        """Queue a reply with this status and these bytes, sent after `delay_seconds`."""
        self._queue(_Reply(status, body, delay_seconds))

    def hang(self) -> None:
        """Queue a reply that only comes after the server stops (a provider that never answers)."""
        self._queue(_Reply(504, b"{}", delay_seconds=_HANG_LIMIT_SECONDS))

    def trickle(self, content: str, byte_pause_seconds: float) -> None:
        """Queue a 200 reply whose body arrives one byte per `byte_pause_seconds`."""
        body = json.dumps(completion(content)).encode()
        self._queue(_Reply(200, body, byte_pause_seconds=byte_pause_seconds))

    def _queue(self, reply: _Reply) -> None:
        with self._lock:
            self._replies.append(reply)

    @property
    def pending(self) -> int:
        """Scripted replies not yet taken."""
        with self._lock:
            return len(self._replies)

    def _next(self, request: RecordedRequest) -> _Reply:
        with self._lock:
            self.requests.append(request)
            if self._replies:
                return self._replies.popleft()
        return _Reply(500, b'{"error": {"message": "no scripted reply left"}}')

    def _count_in_flight(self, change: int) -> None:
        with self._lock:
            self._in_flight += change
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                payload = self.rfile.read(length)
                recorded = RecordedRequest(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(payload)
                )
                reply = fake._next(recorded)
                fake._count_in_flight(+1)
                try:
                    self._reply(reply)
                finally:
                    fake._count_in_flight(-1)

            def _reply(self, reply: _Reply) -> None:
                # Waits end early when the server stops, so a test never waits them out.
                if reply.delay_seconds and fake._released.wait(reply.delay_seconds):
                    return
                with contextlib.suppress(OSError):  # the client gave up (timeout tests)
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self._write(reply)

            def _write(self, reply: _Reply) -> None:
                if not reply.byte_pause_seconds:
                    self.wfile.write(reply.body)
                    return
                for index in range(len(reply.body)):
                    self.wfile.write(reply.body[index : index + 1])
                    self.wfile.flush()
                    if fake._released.wait(reply.byte_pause_seconds):
                        return

            def log_message(self, format: str, *args: Any) -> None:
                """Silence the per-request stderr lines of http.server."""

        return Handler
