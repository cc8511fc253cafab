"""The no-op HTTP service the end-to-end bench's jobs call, in its own process.

    python -m tests.bench.e2e_http        # prints its port on the first line of stdout

A minimal asyncio HTTP/1.1 server with keep-alive: every request is answered
`200 OK` with an empty body at once, so it costs the executor one round trip
and nothing else. On SIGTERM it prints `{"requests": n, "connections": m}` and exits. It is its
own process so its CPU is measured apart from the executor's (group `http`).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

_REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Type: text/plain\r\n\r\n"


class NoopServer:
    def __init__(self) -> None:
        self.requests = 0
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = _content_length(head)
                if length:
                    await reader.readexactly(length)
                self.requests += 1
                writer.write(_REPLY)
                await writer.drain()
                if b"connection: close" in head.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass  # the client closed its keep-alive connection
        finally:
            writer.close()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip() or 0)
    return 0


async def _main() -> None:
    noop = NoopServer()
    server = await asyncio.start_server(noop.handle, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    print(json.dumps({"requests": noop.requests, "connections": noop.connections}), flush=True)


if __name__ == "__main__":
    asyncio.run(_main())
    sys.exit(0)
