"""The sync twin of the client, for Django views, scripts and notebooks.

It runs the async client on an event loop of its own in a background thread,
so it works the same whether or not the caller has a loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, Generic, TypeVar

from conveyor_sdk._client import Client, TaskHandle, TaskStatus

__all__ = ["SyncClient", "SyncTaskHandle"]

T = TypeVar("T")


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="conveyor-client", daemon=True
        )
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class SyncTaskHandle(Generic[T]):
    """`TaskHandle` with blocking methods."""

    def __init__(self, runner: _LoopThread, handle: TaskHandle[T]) -> None:
        self._runner = runner
        self.handle = handle
        self.name, self.id, self.run = handle.name, handle.id, handle.run
        self.already_submitted = handle.already_submitted

    def __repr__(self) -> str:
        return f"<SyncTaskHandle {self.name}>"

    def status(self) -> TaskStatus:
        return self._runner.run(self.handle.status())

    def result(self, timeout: float | None = None) -> T:
        return self._runner.run(self.handle.result(timeout))

    def cancel(self, reason: str = "") -> TaskStatus:
        return self._runner.run(self.handle.cancel(reason))

    def position(self) -> int:
        return self._runner.run(self.handle.position())

    def watch(self, poll_interval: float = 0.25) -> Iterator[TaskStatus]:
        updates = self.handle.watch(poll_interval)

        async def next_update() -> TaskStatus | None:
            return await anext(updates, None)

        while (status := self._runner.run(next_update())) is not None:
            yield status


class _Blocking:
    """Each coroutine method of the wrapped object, run to completion on the loop thread."""

    def __init__(self, runner: _LoopThread, target: Any) -> None:
        self._runner = runner
        self._target = target

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._target, name)
        if not callable(method):
            return method
        return lambda *args, **kwargs: self._runner.run(method(*args, **kwargs))


class SyncClient:
    """`Client` with blocking methods; the same arguments. Use `with`, or call `close()`."""

    def __init__(self, address: str | None = None, **options: Any) -> None:
        self._runner = _LoopThread()

        async def make() -> Client:
            return Client(address, **options)

        self._client = self._runner.run(make())
        #: `client.workflows` with blocking methods (the same names and arguments).
        self.workflows = _Blocking(self._runner, self._client.workflows)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._runner.run(self._client.close())
        self._runner.stop()

    def submit(self, task: Any, /, *args: Any, **kwargs: Any) -> SyncTaskHandle[Any]:
        """As `Client.submit`, blocking until the platform accepted it."""
        return SyncTaskHandle(
            self._runner, self._runner.run(self._client.submit(task, *args, **kwargs))
        )

    def handle(self, work_order: str, result_type: Any = None) -> SyncTaskHandle[Any]:
        return SyncTaskHandle(self._runner, self._client.handle(work_order, result_type))
