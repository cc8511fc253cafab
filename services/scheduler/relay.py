"""Delivers the scheduler's submit outbox to the queue, at least once.

Each row is one fire's SubmitWorkOrder (or an overlap cancel), sent in the
fire's correlation scope and trace, with up to `submit_concurrency` calls in
flight. A transient failure (UNAVAILABLE, DEADLINE_EXCEEDED, ...) leaves the
row to retry with backoff; a permanent refusal (INVALID_ARGUMENT, ...)
records the fire as failed. Re-delivery after a crash is harmless: the queue
answers the same idempotency key with the existing order (`already_exists`),
which is also what a deposed leader's late submit gets; both are logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import grpc

from conveyor_core.clock import Clock
from conveyor_core.coordination import Coordination
from conveyor_core.outbox import Backoff
from conveyor_scheduler.peers import PERMANENT, QueueClient, fire_context
from conveyor_scheduler.settings import SchedulerSettings
from conveyor_scheduler.store.base import Delivery, OutboxSubmit, SchedulerStore
from conveyor_scheduler.store.outbox import SUBMIT_CHANNEL

log = logging.getLogger(__name__)
#: Orders in one BatchSubmitWorkOrders call (within the queue's CONVEYOR_QUEUE_MAX_BATCH_SIZE).
BATCH_LIMIT = 500


class SubmitRelay:
    def __init__(
        self,
        store: SchedulerStore,
        queue: QueueClient,
        coordination: Coordination,
        settings: SchedulerSettings,
        clock: Clock,
        on_submitted: Callable[[list[tuple[OutboxSubmit, Delivery]]], None] | None = None,
    ) -> None:
        self._store = store
        self._queue = queue
        self._coordination = coordination
        self._settings = settings
        self._clock = clock
        self._on_submitted = on_submitted
        self._backoff = Backoff(
            settings.relay_backoff_initial_seconds, settings.relay_backoff_max_seconds
        )
        self._limit = asyncio.Semaphore(settings.submit_concurrency)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="scheduler-submit-relay")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def deliver_once(self) -> tuple[int, int]:
        """Claim and deliver one batch; return (claimed, left for retry).

        Submits that share a queue, correlation id and trace (the fires of one
        tick when `trace_per_fire` is off) go in one BatchSubmitWorkOrders call.
        """
        rows = await self._store.submit_outbox_claim(self._settings.submit_batch_size)
        groups: dict[tuple[str, str, str], list[OutboxSubmit]] = {}
        for row in rows:
            key = (row.parent, row.correlation_id, row.traceparent)
            if row.action == "submit" and len(groups.get(key, ())) < BATCH_LIMIT:
                groups.setdefault(key, []).append(row)
            else:
                groups.setdefault((str(row.seq), "", ""), []).append(row)
        results = await asyncio.gather(*(self._deliver_group(g) for g in groups.values()))
        done = [pair for group in results for pair in group]
        await self._store.submit_outbox_mark([d for _, d in done], self._clock.now())
        if self._on_submitted is not None and done:
            self._on_submitted(done)
        return len(rows), len(rows) - len(done)

    async def _deliver_group(
        self, group: list[OutboxSubmit]
    ) -> list[tuple[OutboxSubmit, Delivery]]:
        if len(group) > 1:
            async with self._limit:
                with fire_context(group[0].correlation_id, group[0].traceparent):
                    try:
                        responses = await self._queue.submit_batch(
                            group[0].parent, [row.request for row in group]
                        )
                        return [
                            (row, self._submitted(row, response))
                            for row, response in zip(group, responses, strict=True)
                        ]
                    except grpc.aio.AioRpcError as error:
                        if error.code() not in PERMANENT:
                            log.warning("batch submit failed (%s); will retry", error.code().name)
                            return []
                        # One bad order refuses the whole batch: find it one by one.
        delivered = await asyncio.gather(*(self._deliver(row) for row in group))
        return [(row, d) for row, d in zip(group, delivered, strict=True) if d is not None]

    async def _deliver(self, row: OutboxSubmit) -> Delivery | None:
        async with self._limit:
            with fire_context(row.correlation_id, row.traceparent):
                try:
                    return await self._call(row)
                except grpc.aio.AioRpcError as error:
                    if error.code() in PERMANENT:
                        log.error(
                            "fire %s: queue refused %s: %s",
                            row.fire_id,
                            row.action,
                            error.details(),
                        )
                        return Delivery(
                            row.seq,
                            row.fire_id,
                            row.action,
                            error=f"queue refused the submit: {error.details()}",
                            error_type="submit_rejected",
                        )
                    log.warning(
                        "fire %s: %s failed (%s); will retry",
                        row.fire_id,
                        row.action,
                        error.code().name,
                    )
                    return None

    async def _call(self, row: OutboxSubmit) -> Delivery:
        if row.action == "cancel":
            try:
                await self._queue.cancel(row.parent, "overlap policy cancel_other: a newer fire")
            except grpc.aio.AioRpcError as error:
                if error.code() not in PERMANENT:
                    raise
                log.info("cancel of %s not applied: %s", row.parent, error.details())
            return Delivery(row.seq, row.fire_id, row.action)
        response = await self._queue.submit(row.parent, row.request)
        return self._submitted(row, response)

    @staticmethod
    def _submitted(row: OutboxSubmit, response: Any) -> Delivery:
        if response.already_exists:
            log.info(
                "fire %s: the queue already had this slot's order %s (re-delivery, or a deposed "
                "leader's late submit; fencing token %d); nothing queued twice",
                row.fire_id,
                response.work_order.name,
                row.fencing_token,
            )
        return Delivery(row.seq, row.fire_id, row.action, work_order=response.work_order.name)

    async def _run(self) -> None:
        async with self._coordination.listen([SUBMIT_CHANNEL]) as listener:
            while True:
                try:
                    claimed, left = await self.deliver_once()
                except Exception:
                    log.warning("submit relay pass failed", exc_info=True)
                    left, claimed = 1, 0
                if left:
                    await asyncio.sleep(self._backoff.next_delay())
                    continue
                self._backoff.reset()
                if claimed < self._settings.submit_batch_size:
                    await listener.wait(self._settings.relay_poll_seconds)
