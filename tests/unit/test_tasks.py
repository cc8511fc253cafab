"""cancel_and_wait stops a task even when one cancellation is swallowed."""

import asyncio

import pytest

from conveyor_core.tasks import cancel_and_wait


async def test_a_task_that_swallows_a_cancellation_is_still_stopped() -> None:
    swallowed = 0

    async def stubborn_loop() -> None:  # as a loop on 3.11's wait_for may behave
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1

    task = asyncio.create_task(stubborn_loop())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task), timeout=5)
    assert task.cancelled() and swallowed == 1


async def test_what_the_task_raised_is_raised_and_none_is_fine() -> None:
    async def failing() -> None:
        raise RuntimeError("broken")

    task = asyncio.create_task(failing())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="broken"):
        await cancel_and_wait(task)
    await cancel_and_wait(None)
