"""The SDK's client needs none of the server's dependencies: a fresh interpreter in which
SQLAlchemy, asyncpg, alembic, aiosqlite, redis, httpx, pydantic-settings and the service
packages cannot be imported still imports `conveyor`, builds a client, defines an app and
encodes a task call."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKED = [
    "sqlalchemy",
    "asyncpg",
    "alembic",
    "aiosqlite",
    "redis",
    "httpx",
    "pydantic_settings",
    "conveyor_core",
    "conveyor_queue",
    "conveyor_events",
    "conveyor_scheduler",
    "conveyor_executor",
]

SCRIPT = textwrap.dedent(
    f"""
    import asyncio, importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {BLOCKED!r}:
                raise ImportError(f"{{name}} is a server dependency")
            return None

    sys.meta_path.insert(0, Block())
    import conveyor
    from conveyor_sdk._wire import encode_call

    app = conveyor.App("shop")

    @app.task(retry=conveyor.Retry(max_attempts=2), timeout="5s")
    async def ship(order_id: str) -> str:
        return order_id

    async def main():
        async with conveyor.Client("127.0.0.1:1") as client:
            assert client.namespace == "default"
    asyncio.run(main())
    assert encode_call("ship", ["o-1"], {{}}) == b'{{"task":"ship","args":["o-1"],"kwargs":{{}}}}'
    print("ok", sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED!r}))
    """
)


def test_the_client_imports_and_works_without_server_dependencies() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok []"
