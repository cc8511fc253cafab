"""What a user's type checker sees of the SDK (checked by `make typecheck`, never run).

Each `assert_type` fails the type check when the SDK's hints stop saying what a user
gets: an async task's handle yields what its coroutine returns, a sync task's what it
returns, a task named by a string Any.
"""

from __future__ import annotations

from typing import Any, assert_type

import conveyor

app = conveyor.App("typing")


@app.task
async def add(a: int, b: int) -> int:
    return a + b


@app.task(retry=conveyor.Retry(max_attempts=3))
def shout(text: str) -> str:
    return text.upper()


async def submit_and_read(client: conveyor.Client) -> None:
    handle = await client.submit(add, 1, 2, priority=5)
    assert_type(handle, conveyor.TaskHandle[int])
    assert_type(await handle.result(timeout=10), int)
    sync_handle = await client.submit(shout, "hi", queue="loud")
    assert_type(sync_handle, conveyor.TaskHandle[str])
    assert_type(await sync_handle.result(), str)
    named = await client.submit("typing.add", 1, 2)
    assert_type(named, conveyor.TaskHandle[Any])
