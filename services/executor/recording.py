"""Store writes made while a run executes. Persisting never fails a run.

Every method logs and swallows storage errors: a database outage during a
run costs records, never the run's outcome at the queue. Writes that carry
journal records poke the outbox relay.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from conveyor_executor.domain.model import Progress, Run, RunRef
from conveyor_executor.runners.context import Step
from conveyor_executor.store.base import AttemptFinish, AttemptStart, JournalDraft, RunStore
from conveyor_executor.watch import WatchHub

log = logging.getLogger(__name__)


class RunRecorder:
    def __init__(
        self,
        store: RunStore,
        hub: WatchHub,
        poke_outbox: Callable[[], None],
        max_error_message: int,
    ) -> None:
        self.store = store
        self._hub = hub
        self._poke = poke_outbox
        self._max_error_message = max_error_message

    async def start_attempt(self, params: AttemptStart) -> Run | None:
        try:
            run = await self.store.run_start_attempt(params)
        except Exception:
            log.warning("run %s: attempt start not recorded", params.ref.name, exc_info=True)
            return None
        self._poke()
        self._hub.publish(params.ref, run=run)
        return run

    async def finish_attempt(self, params: AttemptFinish) -> Run | None:
        try:
            run = await self.store.run_finish_attempt(params)
        except Exception:
            log.warning("run %s: attempt end not recorded", params.ref.name, exc_info=True)
            return None
        self._poke()
        self._hub.publish(params.ref, run=run)
        return run

    async def step(self, ref: RunRef, attempt: int, step: Step) -> None:
        try:
            record = await self.store.step_insert(ref, attempt, step, self._max_error_message)
        except Exception:
            log.warning("run %s: step %r not recorded", ref.name, step.name, exc_info=True)
            return
        self._hub.publish(ref, step=record)

    async def output(
        self, ref: RunRef, name: str, data: bytes, truncated: bool, now: datetime
    ) -> str:
        try:
            output = await self.store.output_insert(ref, name, data, truncated, now)
        except Exception:
            log.warning("run %s: output %r not kept", ref.name, name, exc_info=True)
            return ""
        return f"outputs/{output.output_id}"

    async def progress(self, ref: RunRef, progress: Progress) -> None:
        try:
            await self.store.run_set_progress(ref, progress)
        except Exception:
            log.warning("run %s: progress not recorded", ref.name, exc_info=True)

    async def journal(self, drafts: Sequence[JournalDraft]) -> None:
        try:
            await self.store.journal_append(drafts)
        except Exception:
            log.warning("journal records %s not written", [d.type for d in drafts], exc_info=True)
            return
        self._poke()
