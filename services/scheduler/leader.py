"""Leader election: one replica fires, by a coordination lease with a fencing token.

The leader renews its lease every `lease_ttl x lease_renew_fraction`; a
replica that fails to renew (lost, expired or unreachable) stops its leader
tasks at once. Standbys try to acquire every `lease_retry_seconds`, so a dead
leader is replaced within the lease TTL plus one retry interval. The fencing
token travels with every firing transaction (checked against the highest
token in the database) and on every submitted order's labels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable

from conveyor_core.coordination import Coordination, Lease
from conveyor_core.metrics import meter
from conveyor_core.tasks import cancel_and_wait

log = logging.getLogger(__name__)
_meter = meter(__name__)
#: change: elected (this replica took the lease), lost (a renewal failed), released (stop).
LEADER_CHANGES = _meter.create_counter(
    "conveyor.scheduler.leader_changes",
    unit="{change}",
    description="Leadership changes seen by this replica (change: elected, lost, released).",
)
IS_LEADER = _meter.create_up_down_counter(
    "conveyor.scheduler.leader",
    unit="{replica}",
    description="1 while this replica holds the scheduler leader lease, else 0.",
)


def _changed(change: str) -> None:
    LEADER_CHANGES.add(1, {"change": change})
    IS_LEADER.add(1 if change == "elected" else -1)


def holder_id() -> str:
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


class LeaderElection:
    def __init__(
        self,
        coordination: Coordination,
        name: str,
        ttl: float,
        renew_every: float,
        retry_every: float,
        on_elected: Callable[[Lease], Awaitable[None]],
        on_deposed: Callable[[], Awaitable[None]],
    ) -> None:
        self.holder = holder_id()
        self.lease: Lease | None = None
        self._coordination = coordination
        self._name = name
        self._ttl = ttl
        self._renew_every = renew_every
        self._retry_every = retry_every
        self._on_elected = on_elected
        self._on_deposed = on_deposed
        self._task: asyncio.Task[None] | None = None

    @property
    def is_leader(self) -> bool:
        return self.lease is not None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="scheduler-leader-election")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        if self.lease is not None:
            lease, self.lease = self.lease, None
            _changed("released")
            await self._on_deposed()
            with contextlib.suppress(Exception):
                await self._coordination.lease_release(lease)

    async def _run(self) -> None:
        while True:
            if self.lease is None:
                await self._try_acquire()
            else:
                await self._renew()
            await asyncio.sleep(self._renew_every if self.lease else self._retry_every)

    async def _try_acquire(self) -> None:
        try:
            lease = await self._coordination.lease_acquire(self._name, self.holder, self._ttl)
        except Exception:
            log.warning("leader lease %s: acquire failed", self._name, exc_info=True)
            return
        if lease is not None:
            self.lease = lease
            _changed("elected")
            log.info(
                "became scheduler leader (holder %s, fencing token %d)", lease.holder, lease.token
            )
            try:
                await self._on_elected(lease)
            except Exception:
                log.exception("leader tasks failed to start: giving the lease up")
                self.lease = None
                _changed("released")
                await self._on_deposed()
                await self._coordination.lease_release(lease)

    async def _renew(self) -> None:
        assert self.lease is not None
        try:
            renewed = await self._coordination.lease_renew(self.lease)
        except Exception:
            log.warning("leader lease %s: renew failed", self._name, exc_info=True)
            renewed = False
        if not renewed:
            log.warning(
                "lost the scheduler leader lease (token %d): stopping fires", self.lease.token
            )
            self.lease = None
            _changed("lost")
            await self._on_deposed()
