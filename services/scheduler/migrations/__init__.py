"""Schema migrations of the scheduler service."""

from pathlib import Path

from conveyor_core.migrations import MigrationSet
from conveyor_scheduler.store.tables import metadata

MIGRATIONS = MigrationSet("scheduler", Path(__file__).parent, metadata)
