"""Delivers the scheduler's submit outbox to the queue, at least once.

Each row is one fire's submit (or an overlap cancel). The submits of a pass to
one queue go in BatchSubmitWorkOrders calls of up to `submit_call_batch_size`,
each item carrying its fire's own traceparent and correlation id, so every
order still joins its own fire's trace; a batch the queue refuses is retried
order by order (SubmitWorkOrder in the fire's correlation scope and trace) to
isolate the bad one. Up to `submit_concurrency` calls are in flight. A
transient failure (UNAVAILABLE, DEADLINE_EXCEEDED, ...) leaves the row to
retry with backoff; a permanent refusal (INVALID_ARGUMENT, ...) records the
fire as failed. A row that breaks the call itself (a request that does not
decode, anything but the queue's answer) fails that fire alone: logged with its
cause, counted in `conveyor.scheduler.poisoned_items` (loop `submit_relay`),
its fire FAILED with error type `poisoned`; the rest are delivered.
Re-delivery after a crash is harmless: the queue answers the same idempotency
key with the existing order (`already_exists`), which is also what a deposed
leader's late submit gets; both are logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import grpc

from conveyor_core.clock import Clock
from conveyor_core.coordination import Coordination
from conveyor_core.outbox import Backoff
from conveyor_core.poison import describe, is_transient, record_poisoned
from conveyor_core.tasks import cancel_and_wait
from conveyor_scheduler.peers import PERMANENT, QueueClient, fire_context
from conveyor_scheduler.settings import SchedulerSettings
from conveyor_scheduler.store.base import Delivery, OutboxSubmit, SchedulerStore
from conveyor_scheduler.store.outbox import SUBMIT_CHANNEL

log = logging.getLogger(__name__)
#: The `loop` label of the submits this relay quarantines (conveyor.scheduler.poisoned_items).
RELAY_LOOP = "submit_relay"
#: Error type of a fire whose submit row could not be delivered at all.
POISONED_ERROR_TYPE = "poisoned"


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
            await cancel_and_wait(task)

    async def deliver_once(self) -> tuple[int, int]:
        """Claim and deliver one batch; return (claimed, left for retry).

        Submits to the same queue go in batch calls whatever their traces (each item
        carries its own); cancels go one by one.
        """
        rows = await self._store.submit_outbox_claim(self._settings.submit_batch_size)
        size = self._settings.submit_call_batch_size
        groups: dict[str, list[OutboxSubmit]] = {}
        singles: list[list[OutboxSubmit]] = []
        for row in rows:
            if row.action == "submit":
                groups.setdefault(row.parent, []).append(row)
            else:
                singles.append([row])
        chunks = [g[i : i + size] for g in groups.values() for i in range(0, len(g), size)]
        chunks += singles
        results = await asyncio.gather(*(self._deliver_group(c) for c in chunks))
        done = [pair for group in results for pair in group]
        await self._store.submit_outbox_mark([d for _, d in done], self._clock.now())
        if self._on_submitted is not None and done:
            self._on_submitted(done)
        return len(rows), len(rows) - len(done)

    async def _deliver_group(
        self, group: list[OutboxSubmit]
    ) -> list[tuple[OutboxSubmit, Delivery]]:
        if group[0].action == "submit":
            async with self._limit:
                try:
                    responses = await self._queue.submit_batch(
                        group[0].parent,
                        [(row.request, row.correlation_id, row.traceparent) for row in group],
                    )
                    return [
                        (row, self._submitted(row, response))
                        for row, response in zip(group, responses, strict=True)
                    ]
                except grpc.aio.AioRpcError as error:
                    if error.code() not in PERMANENT:
                        log.warning("batch submit failed (%s); will retry", error.code().name)
                        return []
                    if len(group) > 1:  # one bad order refuses the whole batch: find it
                        log.info("queue refused a batch of %d: submitting one by one", len(group))
                except Exception as error:  # a row that breaks the call itself: find it
                    if is_transient(error):
                        log.warning("batch submit failed (%s); will retry", describe(error))
                        return []
                    log.info(
                        "batch submit of %d failed (%s): submitting one by one",
                        len(group),
                        describe(error),
                    )
        delivered = await asyncio.gather(*(self._deliver(row) for row in group))
        return [(row, d) for row, d in zip(group, delivered, strict=True) if d is not None]

    async def _deliver(self, row: OutboxSubmit) -> Delivery | None:
        try:
            return await self._deliver_one(row)
        except Exception as error:  # not the queue's answer: this row cannot be delivered
            if is_transient(error):
                log.warning("fire %s: %s failed (%s); will retry", row.fire_id, row.action, error)
                return None
            record_poisoned("scheduler", RELAY_LOOP, f"fire {row.fire_id}", error, "failed")
            return Delivery(
                row.seq,
                row.fire_id,
                row.action,
                error=f"the submit could not be delivered ({describe(error)})",
                error_type=POISONED_ERROR_TYPE,
            )

    async def _deliver_one(self, row: OutboxSubmit) -> Delivery | None:
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
