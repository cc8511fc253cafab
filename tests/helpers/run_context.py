"""An in-memory RunContext: the runners' contract test double.

It keeps every recorded step, saved output and progress report in lists, so
tests assert on exactly what a runner asked the executor to persist.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

from conveyor_executor.runners.context import Step, StepKind, StepStatus


@dataclass
class SavedOutput:
    name: str
    data: bytes
    truncated: bool


@dataclass
class MemoryRunContext:
    run_id: str = "run-1"
    namespace: str = "test"
    attempt: int = 1
    secrets: Mapping[str, str] = field(default_factory=dict)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    steps: list[Step] = field(default_factory=list)
    outputs: dict[str, SavedOutput] = field(default_factory=dict)
    progress: list[tuple[float, str]] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    async def report_progress(self, percent: float, message: str) -> None:
        self.progress.append((percent, message))

    async def record_step(self, step: Step) -> None:
        self.steps.append(step)

    async def save_output(self, name: str, data: bytes, *, truncated: bool) -> str:
        ref = f"outputs/{next(self._ids)}"
        self.outputs[ref] = SavedOutput(name, data, truncated)
        return ref

    def secret(self, name: str) -> str | None:
        return self.secrets.get(name)

    # -- assertions helpers ----------------------------------------------------

    def steps_of(self, kind: StepKind, name: str | None = None) -> list[Step]:
        return [s for s in self.steps if s.kind is kind and (name is None or s.name == name)]

    def statuses(self, kind: StepKind) -> list[tuple[str, StepStatus]]:
        return [(s.name, s.status) for s in self.steps if s.kind is kind]

    def output(self, ref: str) -> SavedOutput:
        return self.outputs[ref]
