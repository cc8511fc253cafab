"""Names that say which process made them, and the sweep of those whose process is gone.

A test run or benchmark that is killed (SIGKILL, a timeout, a closed terminal)
never reaches its cleanup, and its PostgreSQL databases and Redis keys stay
on the shared servers. Several worktrees run suites against the same servers
at once, so a leftover may only go when the run that made it is certainly
gone. Everything a run creates therefore carries its `run_id`,
`<tag>_<pid>_<start>`:

* `tag`: 8 hex digits hashed from this boot's id and this process's PID
  namespace. Two processes share a tag only if each can see the other's pid:
  same machine, same boot, same container.
* `pid` and `start`: the process id and its start time in clock ticks since
  boot (field 22 of `/proc/<pid>/stat`), so a pid reused by a later process is
  not mistaken for the run.

A name is stale only if its tag is the sweeper's own and no process with that
pid and start time exists (a zombie, or a process whose start time cannot be
read, counts as alive). A database also needs no connected backend: a plain
`DROP DATABASE` (no FORCE) refuses one, so a leftover server process of a dead
run keeps its database. Everything else is kept: names made on other hosts,
boots or containers, and names of the older random format (`conveyor_t_<8
hex>_<n>`), whose owner cannot be known. Without `/proc` (not Linux) the tag
is random, so nothing else ever matches it and nothing is swept.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

logger = logging.getLogger(__name__)

#: Name prefixes of the test fixtures' and the benchmark's databases.
DATABASE_PREFIXES = ("conveyor_t_", "conveyor_bench_")
#: Key prefixes of the test fixtures' and the benchmark's Redis keys.
REDIS_PREFIXES = ("conveyor-test:", "conveyor-bench:")
#: Keys per SCAN call and per UNLINK.
REDIS_BATCH = 500

_RUN_ID = r"(?P<run_id>[0-9a-f]{8}_[0-9]+_[0-9]+)"


@dataclass(frozen=True)
class RunOwner:
    """The process a run id names."""

    tag: str
    pid: int
    start: int

    @property
    def run_id(self) -> str:
        return f"{self.tag}_{self.pid}_{self.start}"

    @classmethod
    def parse(cls, run_id: str) -> RunOwner | None:
        """The owner named by `run_id`, or None for an id of another format."""
        match = re.fullmatch(_RUN_ID, run_id)
        if match is None:
            return None
        tag, pid, start = run_id.split("_")
        return cls(tag, int(pid), int(start))

    @classmethod
    def of_process(cls, pid: int, tag: str | None = None) -> RunOwner:
        """The owner for process `pid` (alive, in this PID namespace) under `tag`."""
        start = process_start_ticks(pid)
        if start is None:
            raise ProcessLookupError(f"no start time for pid {pid}")
        return cls(tag or namespace_tag(), pid, start)


def process_start_ticks(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot, or None if it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            line = stat.read()
    except OSError:
        return None
    # Field 2 (the command) is in parentheses and may hold spaces or ")".
    fields = line[line.rindex(b")") + 2 :].split()
    return int(fields[19])  # field 22 counting from 1; fields[0] is field 3


_namespace_tag: str | None = None


def namespace_tag() -> str:
    """This process's tag: shared by exactly the processes whose pids it can check."""
    global _namespace_tag
    if _namespace_tag is None:
        try:
            with open("/proc/sys/kernel/random/boot_id") as boot:
                boot_id = boot.read().strip()
            pid_namespace = os.readlink("/proc/self/ns/pid")
        except OSError:  # no /proc: a tag no other process has, so nothing is swept
            _namespace_tag = secrets.token_hex(4)
        else:
            digest = hashlib.sha256(f"{boot_id} {pid_namespace}".encode()).hexdigest()
            _namespace_tag = digest[:8]
    return _namespace_tag


def current_run_id() -> str:
    """The run id of this process."""
    start = process_start_ticks(os.getpid())
    if start is None:  # no /proc: the tag is random, the rest only has to be well formed
        start = 0
    return RunOwner(namespace_tag(), os.getpid(), start).run_id


def run_is_gone(owner: RunOwner, tag: str | None = None) -> bool:
    """True only if `owner`'s process is certainly not running.

    Args:
        owner: The run to judge.
        tag: The tag whose processes this process can see (default: its own);
            an owner with any other tag is never judged gone.
    """
    if owner.tag != (tag or namespace_tag()):
        return False
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by another user
        return False
    start = process_start_ticks(owner.pid)
    return start is not None and start != owner.start  # the pid was reused


def database_owner(name: str, prefixes: Sequence[str] = DATABASE_PREFIXES) -> RunOwner | None:
    """The run that made database `name`: `<prefix><run_id>`, optionally `_<suffix>`.

    The fixtures' are `conveyor_t_<run_id>_<n>`; the benchmark's
    `conveyor_bench_<run_id>` and `conveyor_bench_<run_id>_e2e`.
    """
    for prefix in prefixes:
        match = re.fullmatch(re.escape(prefix) + _RUN_ID + r"(?:_[0-9a-z]+)?", name)
        if match is not None:
            return RunOwner.parse(match["run_id"])
    return None


def redis_key_owner(key: str, prefixes: Sequence[str] = REDIS_PREFIXES) -> RunOwner | None:
    """The run that made Redis key `key` (`<prefix><run_id>:...`)."""
    for prefix in prefixes:
        match = re.match(re.escape(prefix) + _RUN_ID + ":", key)
        if match is not None:
            return RunOwner.parse(match["run_id"])
    return None


def _memoised(judge: Callable[[RunOwner], bool]) -> Callable[[RunOwner], bool]:
    verdicts: dict[RunOwner, bool] = {}

    def cached(owner: RunOwner) -> bool:
        if owner not in verdicts:
            verdicts[owner] = judge(owner)
        return verdicts[owner]

    return cached


async def sweep_databases(
    admin_url: str, prefixes: Sequence[str] = DATABASE_PREFIXES, tag: str | None = None
) -> list[str]:
    """Drop the databases of runs that are gone; return their names.

    Args:
        admin_url: SQLAlchemy URL of a database on the server, as a user
            allowed to drop the runs' databases.
        prefixes: Name prefixes to consider.
        tag: Judge runs as seen from this tag (default: this process's own).
    """
    gone = _memoised(lambda owner: run_is_gone(owner, tag))
    engine = create_async_engine(
        admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool, connect_args={"timeout": 10}
    )
    dropped: list[str] = []
    try:
        async with engine.connect() as connection:
            names = (await connection.execute(text("SELECT datname FROM pg_database"))).scalars()
            for name in names.all():
                owner = database_owner(name, prefixes)
                if owner is None or not gone(owner):
                    continue
                in_use = await connection.scalar(
                    text("SELECT count(*) FROM pg_stat_activity WHERE datname = :name"),
                    {"name": name},
                )
                if in_use:
                    logger.info("keeping database %s of a dead run: %d connected", name, in_use)
                    continue
                try:  # no FORCE: refuses if someone connected since
                    await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
                except DBAPIError as exc:
                    logger.info("keeping database %s of a dead run: %s", name, exc.orig)
                    continue
                logger.info("dropped database %s of run %s (gone)", name, owner.run_id)
                dropped.append(name)
    finally:
        await engine.dispose()
    return dropped


async def sweep_redis_keys(
    client: Any, prefixes: Sequence[str] = REDIS_PREFIXES, tag: str | None = None
) -> int:
    """Delete the Redis keys of runs that are gone (SCAN + UNLINK in batches); return how many.

    Args:
        client: A `redis.asyncio.Redis`.
        prefixes: Key prefixes to consider.
        tag: Judge runs as seen from this tag (default: this process's own).
    """
    gone = _memoised(lambda owner: run_is_gone(owner, tag))
    deleted = 0
    for prefix in prefixes:
        batch: list[bytes] = []
        pattern = redis_glob_escape(prefix) + "*"
        async for key in client.scan_iter(match=pattern, count=REDIS_BATCH):
            owner = redis_key_owner(key.decode(errors="replace"), (prefix,))
            if owner is not None and gone(owner):
                batch.append(key)
            if len(batch) >= REDIS_BATCH:
                deleted += await client.unlink(*batch)
                batch.clear()
        if batch:
            deleted += await client.unlink(*batch)
    if deleted:
        logger.info("deleted %d Redis keys of runs that are gone", deleted)
    return deleted


def redis_glob_escape(text: str) -> str:
    """Escape Redis glob metacharacters so `text` matches only itself in SCAN MATCH."""
    return "".join("\\" + char if char in "\\*?[]" else char for char in text)
