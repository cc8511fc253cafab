"""The storage contract of the queue: a Protocol with Entity+Verb methods over frozen params.

Implementations return domain types only and raise domain errors
(`WorkOrderNotFound`, `StaleLease`, `InvalidState`), never driver errors.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

# Defined with the engine's commands; the store takes them as they are.
from conveyor_queue.domain.commands import CompleteParams as CompleteParams
from conveyor_queue.domain.commands import ListParams as ListParams
from conveyor_queue.domain.model import (
    CompletedWorkOrder,
    LeasedWorkOrder,
    Progress,
    QueueConfig,
    QueueRef,
    RateLimit,
    Redrive,
    WorkOrder,
    WorkOrderEvent,
    WorkOrderRef,
    WorkOrderSpec,
    WorkOrderState,
)
from conveyor_queue.domain.retry import RetryPlan


@dataclass(frozen=True, slots=True)
class NewWorkOrder:
    id: uuid.UUID
    queue: QueueRef
    spec: WorkOrderSpec
    correlation_id: str
    traceparent: str


@dataclass(frozen=True, slots=True)
class SubmitResult:
    work_order: WorkOrder
    already_exists: bool


class TokenGate(Protocol):
    """Rate limiting shared by all replicas (a coordination token bucket)."""

    async def take(self, bucket: str, requested: int, limit: RateLimit) -> int:
        """Take up to `requested` tokens; return how many were granted."""
        ...


@dataclass(frozen=True, slots=True)
class LeaseParams:
    namespace: str
    queues: tuple[str, ...]
    limit: int
    lease_duration: timedelta
    worker: str
    now: datetime
    fair_scan_limit: int = 2000


@dataclass(frozen=True, slots=True)
class HeartbeatParams:
    ref: WorkOrderRef
    lease_token: str
    lease_duration: timedelta | None
    progress: Progress | None
    now: datetime


@dataclass(frozen=True, slots=True)
class FailParams:
    """End the attempt holding `lease_token` as `plan` says (built by the engine)."""

    ref: WorkOrderRef
    lease_token: str
    plan: RetryPlan

    @property
    def now(self) -> datetime:
        return self.plan.now


@dataclass(frozen=True, slots=True)
class CancelParams:
    ref: WorkOrderRef
    reason: str
    actor: str
    now: datetime


@dataclass(frozen=True, slots=True)
class RedriveParams:
    """A RedriveRequest with what the engine adds: its chunk size setting, the time."""

    queue: QueueRef
    error_type: str
    dead_after: datetime | None
    max_work_orders: int
    reason: str
    requested_by: str
    request_id: str
    chunk_size: int
    now: datetime


@dataclass(frozen=True, slots=True)
class QueueDepth:
    by_state: dict[WorkOrderState, int]
    in_flight: int
    oldest_available_at: datetime | None


class WorkOrderStore(Protocol):
    async def work_order_insert_many(
        self, orders: Sequence[NewWorkOrder], now: datetime
    ) -> list[SubmitResult]: ...
    async def work_order_lease_available(
        self, params: LeaseParams, gate: TokenGate
    ) -> list[LeasedWorkOrder]: ...
    async def work_order_heartbeat(self, params: HeartbeatParams) -> WorkOrder: ...
    async def work_order_complete_many(
        self, items: Sequence[CompleteParams], now: datetime, brief: bool = False
    ) -> list[WorkOrder | CompletedWorkOrder | Exception]:
        """Complete each item on its own: its order, or the error of that item.

        With `brief`, a completed item may be a `CompletedWorkOrder` instead of
        the whole order (the store decides; a batch answer needs no more).
        """

    async def work_order_fail(self, params: FailParams) -> WorkOrder: ...
    async def work_order_cancel(self, params: CancelParams) -> WorkOrder: ...
    async def work_order_get(self, ref: WorkOrderRef) -> WorkOrder: ...
    async def work_order_list(self, params: ListParams) -> list[tuple[int, WorkOrder]]: ...
    async def work_order_events_list(
        self, ref: WorkOrderRef, after_seq: int, limit: int
    ) -> list[WorkOrderEvent]: ...
    async def work_order_count_ahead(self, order: WorkOrder, now: datetime) -> int:
        """How many QUEUED orders of its queue a lease taken at `now` would hand out first."""
        ...

    async def work_order_next_available(
        self, namespace: str, queues: Sequence[str], now: datetime
    ) -> datetime | None: ...
    async def work_order_expire_leases(self, now: datetime, limit: int) -> list[WorkOrder]: ...
    async def work_order_expire_deadlines(self, now: datetime, limit: int) -> list[WorkOrder]: ...
    async def work_order_wait_samples(
        self, queue: QueueRef, since: datetime, limit: int
    ) -> list[timedelta]: ...
    async def queue_get(self, ref: QueueRef) -> QueueConfig: ...
    async def queue_get_cached(self, ref: QueueRef) -> QueueConfig: ...
    async def queue_upsert(
        self, config: QueueConfig, fields: frozenset[str], now: datetime
    ) -> QueueConfig: ...
    async def queue_list(self, namespace: str, after: str, limit: int) -> list[QueueConfig]: ...
    async def queue_depth(self, ref: QueueRef) -> QueueDepth: ...
    async def redrive_run(self, params: RedriveParams) -> Redrive: ...
    async def redrive_list(self, ref: QueueRef, offset: int, limit: int) -> list[Redrive]: ...
    async def close(self) -> None:
        """Release what the store holds between calls (before its engine is disposed)."""
        ...
