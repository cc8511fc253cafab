"""SQLAlchemy implementation of WorkOrderStore for PostgreSQL and SQLite.

The store is split by concern, one module each, composed here:

- sql_base.py   engines, dialect, the queue-settings cache
- submit.py     work_order_insert_many
- lease.py      work_order_lease_available (plain and flow-controlled queues)
- attempts.py   heartbeat, complete, fail, end of an attempt, cancel
- reads.py      get, list, history, count ahead, next available, wait samples
- admin.py      queue settings, depth, redrives (the redrive itself: redrive.py)
- expiry.py     the sweepers (expired leases, schedule-to-start deadlines)
"""

from __future__ import annotations

from datetime import datetime

from conveyor_queue.domain.model import WorkOrder
from conveyor_queue.store.admin import QueueAdminSql
from conveyor_queue.store.attempts import AttemptSql
from conveyor_queue.store.expiry import expire_deadlines, expire_leases
from conveyor_queue.store.lease import LeaseSql
from conveyor_queue.store.reads import ReadSql
from conveyor_queue.store.submit import SubmitSql


class SqlWorkOrderStore(SubmitSql, LeaseSql, AttemptSql, ReadSql, QueueAdminSql):
    """WorkOrderStore over one async engine (PostgreSQL or SQLite)."""

    # -- sweeper ----------------------------------------------------------------

    async def work_order_expire_leases(self, now: datetime, limit: int) -> list[WorkOrder]:
        return await expire_leases(self, self._engine, now, limit)

    async def work_order_expire_deadlines(self, now: datetime, limit: int) -> list[WorkOrder]:
        return await expire_deadlines(self, self._engine, now, limit)
