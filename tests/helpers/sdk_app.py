"""A small conveyor.App for the SDK tests (and `conveyor worker tests.helpers.sdk_app:app`)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections import Counter

import conveyor

app = conveyor.App("sdk", queue="tasks")
#: Per-key attempt counters and gates; the tests and the tasks share this process.
ATTEMPTS: Counter[str] = Counter()
GATES: dict[str, threading.Event] = {}


class CardDeclined(Exception):
    pass


@dataclasses.dataclass
class Order:
    id: str
    amount: int


@dataclasses.dataclass
class Receipt:
    order_id: str
    total: int


@app.task
async def add(a: int, b: int) -> int:
    return a + b


@app.task(queue="sync")
def shout(ctx: conveyor.TaskContext, text: str) -> dict[str, object]:
    ctx.progress(100, "shouted")
    return {"text": text.upper(), "attempt": ctx.attempt, "thread": threading.current_thread().name}


@app.task
def charge(order: Order) -> Receipt:
    return Receipt(order.id, order.amount * 2)


@app.task(retry=conveyor.Retry(max_attempts=4, initial_interval=0.01))
async def flaky(key: str, failures: int) -> int:
    ATTEMPTS[key] += 1
    if ATTEMPTS[key] <= failures:
        raise ConnectionError(f"attempt {ATTEMPTS[key]} fails")
    return ATTEMPTS[key]


@app.task(
    retry=conveyor.Retry(max_attempts=5, initial_interval=0.01, non_retryable=(CardDeclined,))
)
async def decline(key: str) -> None:
    ATTEMPTS[key] += 1
    raise CardDeclined("card 4242 declined")


@app.task(retry=conveyor.Retry(max_attempts=1), timeout="300ms")
async def slow() -> None:
    await asyncio.sleep(60)


@app.task(retry=conveyor.Retry(max_attempts=1))
def gated(ctx: conveyor.TaskContext, key: str) -> str:
    """Reports progress, then waits for the test to open its gate (or to be cancelled)."""
    gate = GATES.setdefault(key, threading.Event())
    ctx.progress(50, "halfway")
    while not gate.wait(0.02):
        ctx.raise_if_cancelled()
    ctx.record_usage(input_tokens=10, output_tokens=5, cost_usd=0.25, model="fake")
    return "opened"


@app.task(retry=conveyor.Retry(max_attempts=1))
async def returns_a_set() -> object:
    return {1, 2}
