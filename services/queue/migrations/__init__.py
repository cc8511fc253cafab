"""Schema migrations of the work-order-queue service."""

from pathlib import Path

from conveyor_core.migrations import MigrationSet
from conveyor_queue.store.tables import metadata

MIGRATIONS = MigrationSet("queue", Path(__file__).parent, metadata)
