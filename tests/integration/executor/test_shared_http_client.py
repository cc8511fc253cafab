"""One HTTP client per executor process: runs share connections, never cookies."""

from __future__ import annotations

import pytest

from conveyor.common.v1 import job_pb2
from conveyor_core.clock import SystemClock
from conveyor_core.coordination import InProcessCoordination
from conveyor_executor.runners import RunnerSettings, SharedHttpClient, run_http
from tests.helpers.http_fake import HttpFake, Reply
from tests.helpers.run_context import MemoryRunContext


def target(fake: HttpFake, path: str) -> job_pb2.HttpTarget:
    return job_pb2.HttpTarget(
        endpoints=[job_pb2.HttpEndpoint(name="only", method="GET", url=fake.url(path))]
    )


async def test_runs_on_a_shared_client_never_send_cookies_another_run_received() -> None:
    shared = SharedHttpClient()
    with HttpFake() as fake:
        fake.route("GET", "/login", Reply(200, headers={"Set-Cookie": "session=tenant-a; Path=/"}))
        fake.route("GET", "/other", Reply(200))
        for path in ("/login", "/other"):
            outcome = await run_http(
                target(fake, path),
                (),
                MemoryRunContext(),
                RunnerSettings(),
                InProcessCoordination(),
                SystemClock(),
                client=shared.get(),
            )
            assert outcome.succeeded
        [other] = fake.requests("/other")
        assert "cookie" not in other.headers
    await shared.close()


async def test_a_closed_shared_client_is_reopened_for_the_next_run() -> None:
    shared = SharedHttpClient()
    first = shared.get()
    assert shared.get() is first  # one client while open
    await shared.close()
    assert first.is_closed
    assert not shared.get().is_closed
    await shared.close()


async def test_runs_take_the_pools_in_turn_and_close_closes_every_one() -> None:
    shared = SharedHttpClient(pools=3)
    clients = [shared.get() for _ in range(6)]
    assert len({id(c) for c in clients[:3]}) == 3
    assert clients[3:] == clients[:3]  # the same three, in the same turn
    await shared.close()
    assert all(c.is_closed for c in clients)
    assert not shared.get().is_closed
    await shared.close()


def test_no_pool_at_all_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValueError, match="http_client_pools"):
        SharedHttpClient(pools=0)
