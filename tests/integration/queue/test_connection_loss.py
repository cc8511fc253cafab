"""The queue's raw asyncpg statements (store/raw.py) when the database connection drops mid-call.

A TCP proxy sits between the queue server and PostgreSQL. The server has one
pooled connection and its background loops stopped, and has run the statement
under test once, so that connection holds it prepared. The test then locks
the orders table, starts the call, finds its backend waiting for the lock in
pg_stat_activity (the statement is in flight, on the raw path), and acts on
exactly that connection at the proxy:

* `before_commit`: the connection is reset while the statement waits. The
  backend learns of it when it answers; whether the statement committed by
  then is up to PostgreSQL, and the assertions hold either way.
* `after_commit`: the server's replies on that connection are dropped, the
  lock is released, the statement commits and its backend goes idle, and only
  then is the connection reset: the call fails although its statement took
  effect, the case a retrying caller must survive.

Either way the call fails with UNAVAILABLE, the store discards the connection
(the pool's `invalidate` event), and the next call works on a new connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC
from typing import Any

import grpc
import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from conveyor.queue.v1 import messages_pb2 as m
from conveyor.queue.v1 import service_pb2 as rpc
from conveyor_core.settings import CoreSettings
from tests.helpers.journal import eventually
from tests.helpers.queue import QueueEnv, queue_name, spec, wall_clock
from tests.helpers.tcp_proxy import BlackholeProxy

LEASE_SECONDS = 60.0
# Text that finds each raw statement in pg_stat_activity.query.
LEASE_STATEMENT = "ORDER BY priority DESC, seq"  # queries.lease_fifo_postgres
SUBMIT_STATEMENT = "INSERT INTO queue_work_orders"  # queries.SUBMIT_POSTGRES

StartCall = Callable[[], Awaitable[Any]]


@pytest.fixture
def proxy(postgres_proxy: BlackholeProxy) -> BlackholeProxy:
    return postgres_proxy


@pytest.fixture
async def env(postgres_core: CoreSettings, proxy: BlackholeProxy) -> AsyncIterator[QueueEnv]:
    """The queue server with one pooled connection, reaching its database through the proxy.

    The engine's background loops (lease sweeper, counter flusher) are stopped,
    so the test's calls are the connection's only users; `env.sweep()` still
    runs a sweep on demand.
    """
    through_proxy = make_url(postgres_core.database_url).set(host="127.0.0.1", port=proxy.port)
    core = postgres_core.model_copy(
        update={
            "database_url": through_proxy.render_as_string(hide_password=False),
            "db_pool_size": 1,
        }
    )
    queue_env = await QueueEnv(core, wall_clock()).start()
    await queue_env.engine.stop()
    yield queue_env
    await queue_env.stop()


@pytest.fixture
async def direct(postgres_core: CoreSettings) -> AsyncIterator[AsyncEngine]:
    """The test's own connections to the same database, around the proxy."""
    engine = create_async_engine(postgres_core.database_url, poolclass=NullPool)
    yield engine
    await engine.dispose()


async def _backend(watch: AsyncConnection, where: str, **params: Any) -> Any:
    """The first pg_stat_activity row of this database matching `where`, once there is one."""
    query = text(
        "SELECT pid, client_port, state FROM pg_stat_activity "
        f"WHERE datname = current_database() AND pid <> pg_backend_pid() AND {where}"
    )

    async def found() -> Any:
        return (await watch.execute(query, params)).first()

    return await eventually(found, limit=30)


async def _backend_gone(watch: AsyncConnection, pid: int) -> None:
    async def gone() -> bool:
        count = await watch.scalar(
            text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
        )
        return count == 0

    await eventually(gone, limit=30)


async def _fail_mid_statement(
    env: QueueEnv,
    proxy: BlackholeProxy,
    direct: AsyncEngine,
    start_call: StartCall,
    statement: str,
    after_commit: bool,
) -> grpc.aio.AioRpcError:
    """Start the call under a table lock and drop its connection (see the module docstring).

    Returns the call's error once the cut connection's backend has ended, after
    checking that the store discarded its pooled connection.
    """
    invalidated: list[BaseException | None] = []
    pool_engine = env.platform.service("queue").engine_db.sync_engine  # type: ignore[union-attr]

    def on_invalidate(dbapi_connection: Any, record: Any, exception: BaseException | None) -> None:
        invalidated.append(exception)

    event.listen(pool_engine, "invalidate", on_invalidate)
    # pg_stat_activity is read outside the locking transaction, which would see a snapshot.
    async with direct.execution_options(isolation_level="AUTOCOMMIT").connect() as watch:
        try:
            async with direct.begin() as locker:
                await locker.execute(text("LOCK TABLE queue_work_orders IN EXCLUSIVE MODE"))
                pending = asyncio.ensure_future(start_call())
                waiting = await _backend(
                    watch,
                    "wait_event_type = 'Lock' AND position(:statement IN query) > 0",
                    statement=statement,
                )
                assert waiting.client_port in proxy.upstream_ports  # the server's, via the proxy
                if after_commit:
                    proxy.drop_replies(waiting.client_port)
                else:
                    proxy.cut(waiting.client_port)
            if after_commit:  # lock released: the statement runs, commits, answers into the void
                await _backend(watch, "pid = :pid AND state = 'idle'", pid=waiting.pid)
                proxy.cut(waiting.client_port)
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await pending
            await _backend_gone(watch, waiting.pid)
        finally:
            event.remove(pool_engine, "invalidate", on_invalidate)
    assert len(invalidated) == 1
    assert proxy.upstream_ports == set()  # the pool's one connection is gone
    return failure.value


async def _states(env: QueueEnv, orders: list[m.WorkOrder]) -> dict[str, int]:
    return {o.name: (await env.get(o.name)).state for o in orders}


@pytest.mark.parametrize("after_commit", [False, True], ids=["before_commit", "after_commit"])
async def test_lease_call_cut_mid_statement(
    env: QueueEnv, proxy: BlackholeProxy, direct: AsyncEngine, after_commit: bool
) -> None:
    await env.submit()  # and a lease: the connection then holds the lease statement prepared
    await env.complete((await env.lease())[0])
    orders = await env.submit_many([spec(data=f"order {i}".encode()) for i in range(3)])
    names = {o.name for o in orders}

    error = await _fail_mid_statement(
        env,
        proxy,
        direct,
        lambda: env.lease(n=3, lease=LEASE_SECONDS, worker="cut-off"),
        LEASE_STATEMENT,
        after_commit,
    )
    assert error.code() == grpc.StatusCode.UNAVAILABLE

    # Orders the lost call leased are LEASED under a token nobody holds; the rest
    # stayed QUEUED.
    states = await _states(env, orders)
    held_by_nobody = {name for name, state in states.items() if state == m.WORK_ORDER_STATE_LEASED}
    queued = {name for name, state in states.items() if state == m.WORK_ORDER_STATE_QUEUED}
    assert held_by_nobody | queued == names
    if after_commit:
        assert held_by_nobody == names

    # The next call works, on a new connection, and leases only what nobody holds.
    leased = await env.lease(n=3, lease=LEASE_SECONDS, worker="next")
    assert len(proxy.upstream_ports) == 1
    assert {lw.work_order.name for lw in leased} == queued
    for lw in leased:
        await env.complete(lw)

    # Orders leased by the lost call come back once, when that lease expires
    # (as a failed attempt: QUEUED again after the retry backoff).
    env.clock.advance(LEASE_SECONDS + 1)
    await env.sweep()
    expired = [await env.get(name) for name in held_by_nobody]
    assert {o.state for o in expired} <= {m.WORK_ORDER_STATE_QUEUED}
    if expired:
        env.clock.set(max(o.available_time.ToDatetime(UTC) for o in expired))
    again = await env.lease(n=3, lease=LEASE_SECONDS, worker="after-expiry")
    assert sorted(lw.work_order.name for lw in again) == sorted(held_by_nobody)
    assert all(lw.work_order.attempt == 2 for lw in again)  # the lost lease was attempt 1
    for lw in again:
        await env.complete(lw)
    assert set((await _states(env, orders)).values()) == {m.WORK_ORDER_STATE_SUCCEEDED}


@pytest.mark.parametrize("after_commit", [False, True], ids=["before_commit", "after_commit"])
async def test_submit_call_cut_mid_statement(
    env: QueueEnv, proxy: BlackholeProxy, direct: AsyncEngine, after_commit: bool
) -> None:
    await env.submit()  # prepares the statement; the queue exists, so it runs alone
    request = rpc.SubmitWorkOrderRequest(
        parent=queue_name(), work_order=spec(idempotency_key="cut-submit", data=b"x")
    )

    error = await _fail_mid_statement(
        env,
        proxy,
        direct,
        lambda: env.stub.SubmitWorkOrder(request),
        SUBMIT_STATEMENT,
        after_commit,
    )
    assert error.code() == grpc.StatusCode.UNAVAILABLE

    # Retried with its idempotency key, on a new connection: one order, whether
    # or not the lost call's statement had committed.
    retried = await env.stub.SubmitWorkOrder(request)
    assert len(proxy.upstream_ports) == 1
    if after_commit:
        assert retried.already_exists
    again = await env.stub.SubmitWorkOrder(request)
    assert again.already_exists and again.work_order.name == retried.work_order.name
    listed = await env.stub.ListWorkOrders(
        rpc.ListWorkOrdersRequest(parent=queue_name(), page_size=10)
    )
    assert [o.spec.idempotency_key for o in listed.work_orders].count("cut-submit") == 1
