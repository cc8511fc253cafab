"""A TCP proxy that can silently drop traffic, or drop a connection, between client and server.

Killing a connection (CLIENT KILL, a server restart) is noticed at once; a
partition is not: the socket stays open and nothing arrives. Tests put this
proxy between a client and its server and set `blackholed` to check that the
client notices silence on its own. A test can also single out one connection
(by the port the server sees): `drop_replies()` loses what the server sends on
it, and `cut()` resets both of its sockets, as a failing network path would,
while a call is in flight on it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from sqlalchemy.engine import make_url


class BlackholeProxy:
    """Forwards 127.0.0.1:<port> to `target`; while `blackholed`, drops bytes both ways."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        # Open pairs (client side, server side) by the local port of the server side,
        # which the server sees as the client's port (PostgreSQL: pg_stat_activity.client_port).
        self._pairs: dict[int, tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = {}
        self._replies_dropped: set[int] = set()
        self.blackholed = False
        self.port = 0

    async def start(self, port: int = 0) -> int:
        """Listen on `port` (0: an ephemeral one; again after `stop()`: the same) and return it."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    @property
    def upstream_ports(self) -> set[int]:
        """Local ports of the open connections to the target (the ports the target sees)."""
        return set(self._pairs)

    def drop_replies(self, upstream_port: int) -> None:
        """From now on, drop what the server sends on the connection using `upstream_port`."""
        self._replies_dropped.add(upstream_port)

    def cut(self, upstream_port: int) -> None:
        """Reset both sockets of the connection whose server side uses `upstream_port`."""
        for writer in self._pairs.pop(upstream_port):
            writer.transport.abort()

    async def _accept(self, client_reader, client_writer) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            client_writer.close()
            return
        upstream_port = upstream_writer.get_extra_info("sockname")[1]
        self._pairs[upstream_port] = (client_writer, upstream_writer)
        self._writers.update((client_writer, upstream_writer))
        pumps = [
            asyncio.create_task(self._pump(client_reader, upstream_writer, lambda: False)),
            asyncio.create_task(
                self._pump(
                    upstream_reader, client_writer, lambda: upstream_port in self._replies_dropped
                )
            ),
        ]
        self._tasks.update(pumps)
        try:
            # Either side closing ends the pair.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._pairs.pop(upstream_port, None)
            self._replies_dropped.discard(upstream_port)
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._tasks.difference_update(pumps)
            for writer in (client_writer, upstream_writer):
                self._writers.discard(writer)
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        dropping: Callable[[], bool],
    ) -> None:
        with contextlib.suppress(OSError):
            while chunk := await reader.read(65536):
                if not (self.blackholed or dropping()):
                    writer.write(chunk)
                    await writer.drain()


def through_proxy(database_url: str, proxy: BlackholeProxy) -> str:
    """`database_url` pointed at `proxy` (which forwards to the URL's own host and port)."""
    url = make_url(database_url).set(host="127.0.0.1", port=proxy.port)
    return url.render_as_string(hide_password=False)
