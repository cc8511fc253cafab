"""freeze_startup_heap takes start-up objects out of full collections (in a child process,
so the test runner's own heap is left alone)."""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import gc
from conveyor_core.runtime import freeze_startup_heap

startup = [{"n": i} for i in range(50_000)]  # long-lived, GC-tracked, like start-up state
gc.collect()
before = len(gc.get_objects(generation=2))
freeze_startup_heap()
after = len(gc.get_objects(generation=2))
print(before, after, gc.get_freeze_count())
"""


def test_start_up_objects_leave_the_full_collections() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, check=True
    )
    before, after, frozen = map(int, result.stdout.split())
    assert before > 50_000 and frozen > 50_000
    assert after < 1_000, "a full collection still walks the start-up objects"
