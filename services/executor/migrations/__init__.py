"""Schema migrations of the executor service."""

from pathlib import Path

from conveyor_core.migrations import MigrationSet
from conveyor_executor.store.tables import metadata

MIGRATIONS = MigrationSet("executor", Path(__file__).parent, metadata)
