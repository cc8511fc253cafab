"""The lean keep-alive transport (runners/http_transport.py) against real local servers."""

from __future__ import annotations

import asyncio
import os
import resource
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from conveyor.common.v1 import job_pb2
from conveyor_core.clock import SystemClock
from conveyor_core.coordination import InProcessCoordination
from conveyor_executor.domain.failure import ErrorType
from conveyor_executor.runners import RunnerSettings, SharedHttpClient, run_http
from conveyor_executor.runners.http_transport import KeepAliveTransport
from tests.helpers.polling import eventually
from tests.helpers.run_context import MemoryRunContext
from tests.helpers.security import TlsMaterial

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """An asyncio server counting its connections; `handler` serves one connection."""

    def __init__(self, handler: Handler) -> None:
        self.connections = 0
        self.closed = 0  # connections this side has closed (their FIN sent)
        self._handler = handler
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self._handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            await writer.wait_closed()
            self.closed += 1

    async def start(self, tls: ssl.SSLContext | None = None) -> asyncio.Server:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        self.port = server.sockets[0].getsockname()[1]
        return server


def answering(body: bytes, *, close_after: int = 0) -> Handler:
    """Answers every request with `body`; closes the connection after `close_after` (0: never)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = 0
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
            served += 1
            if served == close_after:
                return

    return handle


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = KeepAliveTransport(httpx.create_ssl_context(trust_env=False))
    async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
        yield client


async def test_requests_reuse_one_kept_alive_connection(client: httpx.AsyncClient) -> None:
    counting = Server(answering(b"hello"))
    async with await counting.start():
        for _ in range(5):
            response = await client.get(f"http://127.0.0.1:{counting.port}/x")
            assert (response.status_code, response.content) == (200, b"hello")
    assert counting.connections == 1


async def test_connections_past_descriptor_1024_are_reused(client: httpx.AsyncClient) -> None:
    """The idle check polls the one socket: select() would refuse a descriptor past
    FD_SETSIZE (1024), which an executor with many connections reaches."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the open-files limit is {hard}: no descriptor past 1024 to test")
    if soft < 1200:  # a low default (1024 on many systems): raise it as far as allowed
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    counting = Server(answering(b"hello"))
    null = os.open(os.devnull, os.O_RDONLY)
    held = [os.dup(null) for _ in range(1100)]  # so the connection's socket gets a high number
    held.append(null)
    try:
        async with await counting.start():
            for _ in range(3):
                response = await client.get(f"http://127.0.0.1:{counting.port}/x")
                assert response.content == b"hello"
    finally:
        for descriptor in held:
            os.close(descriptor)
    assert counting.connections == 1


async def test_a_connection_the_server_closed_is_not_reused(client: httpx.AsyncClient) -> None:
    closing = Server(answering(b"ok", close_after=1))
    async with await closing.start():
        for served in range(1, 4):
            assert (await client.get(f"http://127.0.0.1:{closing.port}/")).content == b"ok"
            await eventually(lambda n=served: closing.closed == n, "the server closed it")
    assert closing.connections == 3  # each request found its idle connection closed


async def test_a_body_not_read_to_its_end_drops_its_connection(client: httpx.AsyncClient) -> None:
    big = Server(answering(b"x" * 200_000))
    async with await big.start():
        url = f"http://127.0.0.1:{big.port}/"
        async with client.stream("GET", url) as response:
            async for _chunk in response.aiter_bytes():
                break  # the runner's max_response_bytes
        response = await client.get(url)
        assert len(response.content) == 200_000  # a clean answer on a fresh connection
    assert big.connections == 2


async def test_failures_are_httpx_exceptions_the_runner_classifies(
    client: httpx.AsyncClient,
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers

    async def hangs_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")

    mute, rude = Server(silent), Server(hangs_up)
    async with await mute.start(), await rude.start():
        with pytest.raises(httpx.ReadTimeout):
            await client.get(f"http://127.0.0.1:{mute.port}/", timeout=0.2)
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"http://127.0.0.1:{rude.port}/")
    with pytest.raises(httpx.ConnectError):
        await client.get(f"http://127.0.0.1:{mute.port}/")  # nobody listens any more


async def test_tls_is_verified(tmp_path: Path) -> None:
    material = TlsMaterial(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(material.server.cert, material.server.key)
    secure = Server(answering(b"secret"))
    async with await secure.start(server_tls):
        url = f"https://localhost:{secure.port}/"
        trusting = KeepAliveTransport(ssl.create_default_context(cafile=material.ca_file))
        async with httpx.AsyncClient(transport=trusting) as client:
            assert (await client.get(url)).content == b"secret"
        default = KeepAliveTransport(httpx.create_ssl_context(trust_env=False))
        async with httpx.AsyncClient(transport=default) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(url)  # a certificate no public CA signed


async def test_the_runner_over_the_transport_records_and_classifies() -> None:
    shared = SharedHttpClient(pools=2, transport="keepalive")
    counting = Server(answering(b""))
    async with await counting.start():
        target = job_pb2.HttpTarget(
            endpoints=[
                job_pb2.HttpEndpoint(
                    name="noop", method="GET", url=f"http://127.0.0.1:{counting.port}/n"
                )
            ]
        )
        for _ in range(4):
            ctx = MemoryRunContext()
            outcome = await run_http(
                target,
                (),
                ctx,
                RunnerSettings(),
                InProcessCoordination(),
                SystemClock(),
                client=shared.get(),
            )
            assert outcome.succeeded
            [step] = ctx.steps
            assert step.attributes["status_code"] == 200
    assert counting.connections == 2  # one per pool, each kept alive
    refused = job_pb2.HttpTarget(
        endpoints=[job_pb2.HttpEndpoint(name="gone", method="GET", url="http://127.0.0.1:1/")]
    )
    outcome = await run_http(
        refused,
        (),
        MemoryRunContext(),
        RunnerSettings(retry_maximum_attempts=1),
        InProcessCoordination(),
        SystemClock(),
        client=shared.get(),
    )
    assert outcome.error is not None and outcome.error.type is ErrorType.NETWORK
    await shared.close()


def test_an_unknown_transport_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValueError, match="http_transport"):
        SharedHttpClient(transport="curl")
