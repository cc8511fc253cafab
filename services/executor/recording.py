"""Store writes made while a run executes. Persisting never fails a run.

Every method logs and swallows storage errors: a database outage during a
run costs records, never the run's outcome at the queue. Writes that carry
journal records poke the outbox relay.

Attempt starts and ends, and steps, are group-committed (`conveyor_sdk._batching`): the
starts (or ends) of every run that reaches that point while one such transaction
is being written go out together in the next, one transaction for all of them,
and each caller returns once its own records are committed. Should a batch fail,
its items are written one by one, so one bad record never costs the others.
The `Run` snapshot for WatchRun is read back only for runs someone is watching.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TypeVar

from conveyor_executor.domain.model import Progress, Run, RunRef, StepRecord
from conveyor_executor.runners.context import Step
from conveyor_executor.store.base import (
    AttemptFinish,
    AttemptStart,
    BatchPartlyWritten,
    JournalDraft,
    RunStore,
    StepDraft,
)
from conveyor_executor.watch import WatchHub
from conveyor_sdk._batching import Coalescer

log = logging.getLogger(__name__)
P = TypeVar("P", AttemptStart, AttemptFinish)


class RunRecorder:
    def __init__(
        self,
        store: RunStore,
        hub: WatchHub,
        poke_outbox: Callable[[], None],
        max_error_message: int,
        batch_size: int = 256,
    ) -> None:
        self.store = store
        self._hub = hub
        self._poke = poke_outbox
        self._max_error_message = max_error_message
        self._starts: Coalescer[AttemptStart, None] = Coalescer(
            self._write_starts, batch_size, "attempt-starts"
        )
        self._finishes: Coalescer[AttemptFinish, None] = Coalescer(
            self._write_finishes, batch_size, "attempt-ends"
        )
        self._steps: Coalescer[StepDraft, StepRecord] = Coalescer(
            self._write_steps, batch_size, "steps"
        )

    async def start_attempt(self, params: AttemptStart) -> bool:
        """Record the attempt's start (the run RUNNING); False when it could not be."""
        try:
            await self._starts.submit(params)
        except Exception:
            log.warning("run %s: attempt start not recorded", params.ref.name, exc_info=True)
            return False
        await self._publish(params.ref)
        return True

    async def finish_attempt(self, params: AttemptFinish) -> bool:
        """Record the attempt's end (and the run's state); False when it could not be."""
        try:
            await self._finishes.submit(params)
        except Exception:
            log.warning("run %s: attempt end not recorded", params.ref.name, exc_info=True)
            return False
        await self._publish(params.ref)
        return True

    async def _write_starts(self, batch: Sequence[AttemptStart]) -> list[BaseException | None]:
        return await self._write(batch, self.store.run_start_attempts, self.store.run_start_attempt)

    async def _write_finishes(self, batch: Sequence[AttemptFinish]) -> list[BaseException | None]:
        return await self._write(
            batch, self.store.run_finish_attempts, self.store.run_finish_attempt
        )

    async def _write(
        self,
        batch: Sequence[P],
        many: Callable[[Sequence[P]], Awaitable[None]],
        one: Callable[[P], Awaitable[Run]],
    ) -> list[BaseException | None]:
        try:
            await many(batch)
            results: list[BaseException | None] = [None] * len(batch)
        except Exception as error:
            # Written before the failure: durable already, never written twice.
            written = error.written if isinstance(error, BatchPartlyWritten) else frozenset()
            if len(batch) == 1 and not written:
                raise
            log.warning("%d attempt records: batch not written, one by one", len(batch))
            results = []
            for i, params in enumerate(batch):
                if i in written:
                    results.append(None)
                    continue
                try:
                    await one(params)
                    results.append(None)
                except Exception as exc:
                    results.append(exc)
        self._poke()
        return results

    async def _write_steps(self, batch: Sequence[StepDraft]) -> list[StepRecord | BaseException]:
        try:
            return list(await self.store.step_insert_many(batch))
        except Exception:
            if len(batch) == 1:
                raise
        out: list[StepRecord | BaseException] = []
        for draft in batch:  # one bad step never costs the others
            try:
                out.extend(await self.store.step_insert_many([draft]))
            except Exception as exc:
                out.append(exc)
        return out

    async def _publish(self, ref: RunRef) -> None:
        if not self._hub.subscriber_count(ref):
            return
        try:
            run = await self.store.run_get(ref)
        except Exception:
            log.warning("run %s: snapshot for watchers not read", ref.name, exc_info=True)
            return
        self._hub.publish(ref, run=run)

    async def step(self, ref: RunRef, attempt: int, step: Step) -> None:
        try:
            record = await self._steps.submit(
                StepDraft(ref, attempt, step, self._max_error_message)
            )
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
