"""The group commit behind the SDK's submits and the executor's records and completions."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence

import pytest

from conveyor_sdk._batching import Coalescer

WHO: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="")


class Writer:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.contexts: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()

    async def flush(self, items: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        self.contexts.append(WHO.get())
        self.entered.set()
        await self.gate.wait()
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]


async def test_submits_of_one_loop_turn_go_out_in_one_flush_each_with_its_own_result() -> None:
    writer = Writer()
    coalescer: Coalescer[int, int] = Coalescer(writer.flush, 100, "test")
    results = await asyncio.gather(
        *(coalescer.submit(i) for i in (1, 2, -3, 4)), return_exceptions=True
    )
    assert writer.batches == [[1, 2, -3, 4]]
    assert results[:2] == [10, 20] and results[3] == 40
    assert isinstance(results[2], ValueError) and str(results[2]) == "bad -3"


async def test_submits_made_during_a_flush_wait_for_the_next_which_holds_at_most_max() -> None:
    writer = Writer()
    writer.gate.clear()
    coalescer: Coalescer[int, int] = Coalescer(writer.flush, 3, "test")
    first = asyncio.create_task(coalescer.submit(0))
    await writer.entered.wait()
    later = [asyncio.create_task(coalescer.submit(i)) for i in range(1, 6)]
    await asyncio.sleep(0)
    assert writer.batches == [[0]], "nothing more is written while a flush runs"
    writer.gate.set()
    assert await first == 0
    assert [await t for t in later] == [10, 20, 30, 40, 50]
    assert writer.batches == [[0], [1, 2, 3], [4, 5]]


async def test_a_failed_flush_fails_its_items_and_the_next_still_runs() -> None:
    calls = 0

    async def flush(items: Sequence[int]) -> list[int | BaseException]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database gone")
        return list(items)

    coalescer: Coalescer[int, int] = Coalescer(flush, 10, "test")
    with pytest.raises(ConnectionError):
        await coalescer.submit(1)
    assert await coalescer.submit(2) == 2


async def test_a_batch_is_written_in_its_first_callers_context() -> None:
    writer = Writer()
    coalescer: Coalescer[int, int] = Coalescer(writer.flush, 10, "test")

    async def as_(who: str, item: int) -> int:
        WHO.set(who)
        return await coalescer.submit(item)

    await as_("alice", 1)
    await as_("bob", 2)
    assert writer.contexts == ["alice", "bob"]


async def test_a_cancelled_caller_does_not_break_the_batch() -> None:
    writer = Writer()
    writer.gate.clear()
    coalescer: Coalescer[int, int] = Coalescer(writer.flush, 10, "test")
    a = asyncio.create_task(coalescer.submit(1))
    b = asyncio.create_task(coalescer.submit(2))
    await writer.entered.wait()
    a.cancel()
    writer.gate.set()
    assert await b == 20
    assert a.cancelled()
