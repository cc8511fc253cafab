"""Alembic environment of the executor service (see conveyor_core.migrations)."""

from conveyor_core.migrations import run_env

run_env()
