"""What the queue's API asks the engine to do, once the request is checked (pure values).

The servicer builds these from requests (api/validation.py); the engine adds the
clock's reading and the settings that belong to the call, and hands the store
its parameters (store/base.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from conveyor_queue.domain.model import (
    Failure,
    Payload,
    QueueRef,
    WorkOrderRef,
    WorkOrderState,
)


@dataclass(frozen=True, slots=True)
class CompleteParams:
    """Complete the attempt holding `lease_token` with `result`."""

    ref: WorkOrderRef
    lease_token: str
    result: Payload


@dataclass(frozen=True, slots=True)
class FailAttempt:
    """End the attempt holding `lease_token` unsuccessfully (the engine plans what follows)."""

    ref: WorkOrderRef
    lease_token: str
    failure: Failure
    #: The worker's requested delay before a retry, instead of the policy's backoff.
    retry_delay: timedelta | None = None


@dataclass(frozen=True, slots=True)
class ListParams:
    """A page of orders (queue "-": every queue of the namespace), in seq order."""

    queue: QueueRef
    states: tuple[WorkOrderState, ...] = ()
    concurrency_key: str | None = None
    error_type: str | None = None
    after_seq: int | None = None
    limit: int = 50
    newest_first: bool = False


@dataclass(frozen=True, slots=True)
class RedriveRequest:
    """Move DEAD orders of `queue` back to QUEUED (see RedriveWorkOrders)."""

    queue: QueueRef
    error_type: str
    dead_after: datetime | None
    max_work_orders: int
    reason: str
    requested_by: str
    request_id: str
