"""Schema migrations of the event-store service."""

from pathlib import Path

from conveyor_core.migrations import MigrationSet
from conveyor_events.store.tables import metadata

MIGRATIONS = MigrationSet("events", Path(__file__).parent, metadata)
