"""Driving one handler run through its phases, each durable before the next starts.

What may run again after a crash (docs/workflows.md, "Replay rules"):
* a producer's function, a consumer's `prepare` and `next`: yes, they are
  re-run from their last checkpoint (the commit is idempotent per run id, events
  by message id, state by expected version);
* `mutate`: never, unless reconcile or a person says the call did not happen.
  IN_FLIGHT is written with MUTATING before the call; a run found MUTATING
  after a crash has an INDETERMINATE mutation, which goes to reconcile, then
  to a person (SUSPENDED with a prompt).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import grpc
from opentelemetry import trace

from conveyor_executor.domain.failure import ClassifiedError, ErrorType
from conveyor_executor.domain.model import Usage
from conveyor_executor.domain.workflow import (
    HandlerKind,
    HandlerRun,
    Mutation,
    MutationState,
    Phase,
    prompt_for,
    sources_of,
)
from conveyor_executor.store.workflow_base import Advance
from conveyor_executor.workflow.calls import HandlerError, call, emit_of, json_of, user_error
from conveyor_executor.workflow.driver_base import DriverBase, SessionScope
from conveyor_executor.workflow.peers import state_name
from conveyor_sdk import (
    NO_MUTATION,
    Consumer,
    MutationFailed,
    MutationInfo,
    MutationResult,
    NonRetryable,
    Producer,
    Reconciled,
)

log = logging.getLogger(__name__)
tracer = trace.get_tracer("conveyor.executor.workflow")
_VERSION_RETRIES = 3


class PhaseDriver(DriverBase):
    """Moves handler runs through their phases (records and helpers: DriverBase)."""

    async def _advance(
        self,
        scope: SessionScope,
        run: HandlerRun,
        phase: Phase,
        mutation: Mutation | None = None,
        passed: tuple[Phase, ...] = (),
        **changes: Any,
    ) -> HandlerRun:
        """One checkpoint: the run moves to `phase` (through `passed`, phases whose own
        checkpoint guards nothing external, each still journaled) in one transaction."""
        journal = [
            self._journal(scope, run, f"workflow.handler_run.{p.value.lower()}") for p in passed
        ]
        if mutation is not None:
            journal.append(
                self._journal(
                    scope,
                    run,
                    f"workflow.mutation.{mutation.state.value.lower()}",
                    attempts=str(mutation.attempts),
                )
            )
        target = self._journal(scope, run, f"workflow.handler_run.{phase.value.lower()}")
        journal.insert(len(journal) if passed else 0, target)
        changes.setdefault("session_id", scope.session_id)
        changes.setdefault("code_version", scope.code_version)
        advanced = await self.store.handler_run_advance(
            Advance(
                run.namespace,
                run.handler_run_id,
                sources_of(passed[0] if passed else phase),
                phase,
                self.clock.now(),
                changes,
                mutation,
                tuple(journal),
                revision=run.revision,
                base=run,
            )
        )
        self._poke()
        self._fault_exit(run, phase, *passed)
        return advanced

    async def create(
        self,
        scope: SessionScope,
        kind: HandlerKind,
        handler: str,
        topic: str = "",
        preparing: bool = False,
    ) -> HandlerRun:
        """A new run, PENDING; `preparing`: a consumer run created straight in PREPARING
        (both journaled; nothing happens between them), which `consumer` then prepares
        without first releasing reservations it cannot have made yet."""
        now = self.clock.now()
        run = HandlerRun(
            namespace=scope.namespace,
            handler_run_id=uuid.uuid4().hex,
            session_id=scope.session_id,
            workflow=scope.workflow,
            handler=handler,
            kind=kind,
            phase=Phase.PREPARING if preparing else Phase.PENDING,
            queue=scope.queue,
            code_version=scope.code_version,
            created_at=now,
            updated_at=now,
            topic=topic,
        )
        journal = [self._journal(scope, run, "workflow.handler_run.pending", kind=kind.value)]
        if preparing:
            journal.append(self._journal(scope, run, "workflow.handler_run.preparing"))
            self._fresh.add(run.handler_run_id)
            self._unmutated.add(run.handler_run_id)
        created = await self.store.handler_run_create(run, tuple(journal))
        self._poke()
        if preparing:
            self._fault_exit(run, Phase.PREPARING)
        return created

    async def _fail(
        self, scope: SessionScope, run: HandlerRun, error: ClassifiedError, release: bool
    ) -> HandlerRun:
        if release and run.topic:
            await self.events.release(run.namespace, run.topic, run.handler_run_id)
        log.info("handler run %s (%s) failed: %s", run.name, run.handler, error.message)
        return await self._advance(scope, run, Phase.FAILED, error=error)

    # -- producers ----------------------------------------------------------------------

    async def producer(
        self, scope: SessionScope, producer: Producer, run: HandlerRun
    ) -> HandlerRun:
        """PENDING or EXECUTING -> COMMITTED | FAILED (the producer may run again)."""
        with tracer.start_as_current_span(f"workflow.producer {producer.name}") as span:
            span.set_attribute("conveyor.handler_run", run.name)
            if run.phase is Phase.PENDING:
                run = await self._advance(scope, run, Phase.EXECUTING)
            name = state_name(run.namespace, run.workflow, run.handler)
            topics = set(producer.workflow.topics)
            for _ in range(_VERSION_RETRIES):
                version, state = await self.events.state(name)
                ctx = self._context(scope, run)
                try:
                    result = await call(producer.fn, ctx, state)
                    emit = emit_of(result, producer.name, self.settings, topics)
                except HandlerError as failure:
                    return await self._fail(scope, run, failure.error, release=False)
                except Exception as exc:
                    return await self._fail(
                        scope, run, user_error(exc, producer.name, ()).error, False
                    )
                usage = self._usage(scope, run, ctx)
                data = None if emit.keep_state else (name, version, _json_bytes(emit.state))
                try:
                    done = await self.events.commit(
                        run.namespace, run.handler_run_id, (), emit.events, data
                    )
                except grpc.aio.AioRpcError as error:
                    if error.code() == grpc.StatusCode.ABORTED:
                        continue  # the state moved: run the producer again on the new state
                    raise
                return await self._advance(
                    scope,
                    run,
                    Phase.COMMITTED,
                    state_version=done.version or version,
                    events_published=done.published,
                    usage=usage,
                )
            conflicted = ClassifiedError(
                ErrorType.INTERNAL,
                f"producer {producer.name}: its state changed {_VERSION_RETRIES} times "
                "while it ran",
                True,
                {},
            )
            return await self._fail(scope, run, conflicted, release=False)

    # -- consumers ----------------------------------------------------------------------

    async def consumer(
        self, scope: SessionScope, consumer: Consumer, run: HandlerRun
    ) -> HandlerRun:
        """Drive a consumer run from whatever phase it is in to COMMITTED, FAILED or
        SUSPENDED; raises HandlerError when `next` fails (the run stays MUTATED)."""
        with tracer.start_as_current_span(f"workflow.consumer {consumer.name}") as span:
            span.set_attribute("conveyor.handler_run", run.name)
            handler = consumer.instance()
            try:
                return await self._drive_consumer(scope, consumer, handler, run, span)
            finally:
                self._fresh.discard(run.handler_run_id)
                self._unmutated.discard(run.handler_run_id)

    async def _drive_consumer(
        self,
        scope: SessionScope,
        consumer: Consumer,
        handler: Any,
        run: HandlerRun,
        span: trace.Span,
    ) -> HandlerRun:
        while True:
            span.add_event(run.phase.value)
            if run.phase in (Phase.PENDING, Phase.PREPARING):
                run = await self._prepare(scope, consumer, handler, run)
            elif run.phase is Phase.PREPARED:
                run = await self._mutate(scope, consumer, handler, run)
            elif run.phase is Phase.MUTATING:
                run = await self._after_crash(scope, consumer, handler, run)
            elif run.phase is Phase.MUTATED:
                run = await self._next(scope, consumer, handler, run)
            elif run.phase is Phase.EMITTING:
                run = await self._commit(scope, consumer, run)
            else:
                return run

    async def _prepare(
        self, scope: SessionScope, consumer: Consumer, handler: Any, run: HandlerRun
    ) -> HandlerRun:
        if run.phase is Phase.PENDING:
            run = await self._advance(scope, run, Phase.PREPARING)
        elif run.handler_run_id in self._fresh:  # created PREPARING just now
            self._fresh.discard(run.handler_run_id)
        else:  # a crash during prepare: what it reserved goes back first
            await self.events.release(run.namespace, run.topic, run.handler_run_id)
        held = await self.events.reserve(
            run.namespace, run.topic, run.handler_run_id, consumer.batch
        )
        if not held:
            return await self._advance(scope, run, Phase.COMMITTED, prompt="")
        version, state = await self.events.state(
            state_name(run.namespace, run.workflow, run.handler)
        )
        ctx = self._context(scope, run, tuple(held))
        try:
            prepared = await call(handler.prepare, ctx, state)
            prepared, _ = json_of(
                prepared,
                f"the value prepare of {consumer.name} returned",
                self.settings.max_prepared_bytes,
                "MAX_PREPARED_BYTES",
            )
        except HandlerError as failure:
            return await self._fail(scope, run, failure.error, release=True)
        except Exception as exc:
            return await self._fail(
                scope, run, user_error(exc, f"{consumer.name}.prepare", ()).error, True
            )
        return await self._advance(
            scope,
            run,
            Phase.PREPARED,
            events=tuple(held),
            prepared=prepared,
            state_version=version,
            usage=self._usage(scope, run, ctx),
        )

    async def _mutate(
        self, scope: SessionScope, consumer: Consumer, handler: Any, run: HandlerRun
    ) -> HandlerRun:
        now = self.clock.now()
        if run.handler_run_id in self._unmutated:  # created here: no ledger row to read
            self._unmutated.discard(run.handler_run_id)
            before = None
        else:
            before = await self.store.mutation_get(run.namespace, run.handler_run_id)
        attempts = (before.attempts if before else 0) + 1
        if attempts > self.settings.max_mutate_attempts:
            error = ClassifiedError(
                ErrorType.HANDLER_LOGIC,
                f"mutate of {consumer.name} failed {attempts - 1} times, the limit of "
                f"{self.settings.max_mutate_attempts} (CONVEYOR_EXECUTOR_MAX_MUTATE_ATTEMPTS)",
                True,
                {},
            )
            return await self._fail(scope, run, error, release=True)
        if before is None:
            in_flight = Mutation(
                run.namespace,
                run.handler_run_id,
                run.workflow,
                run.handler,
                MutationState.IN_FLIGHT,
                attempts,
                now,
                now,
            )
        else:  # mutate again: reconcile or a person said the last call did not happen
            in_flight = replace(
                before,
                state=MutationState.IN_FLIGHT,
                attempts=attempts,
                updated_at=now,
                result=None,
                error=None,
                ended_at=None,
            )
        # Durable before the call leaves the process.
        run = await self._advance(scope, run, Phase.MUTATING, mutation=in_flight)
        ctx = self._context(scope, run, run.events)
        definite: tuple[type[BaseException], ...] = (
            MutationFailed,
            NonRetryable,
            *consumer.definite_failures,
        )
        try:
            value = await asyncio.wait_for(
                call(handler.mutate, ctx, run.prepared), consumer.mutate_timeout_seconds
            )
        except definite as exc:
            error = user_error(exc, f"{consumer.name}.mutate", ()).error
            failed = replace(
                in_flight, state=MutationState.FAILED, error=error, ended_at=self.clock.now()
            )
            run = await self._advance(
                scope,
                run,
                Phase.FAILED,
                mutation=failed,
                error=error,
                usage=self._usage(scope, run, ctx),
            )
            await self.events.release(run.namespace, run.topic, run.handler_run_id)
            return run
        except Exception as exc:  # a timeout, a cut connection, a bug: did it happen?
            cause = (
                "timed out"
                if isinstance(exc, TimeoutError)
                else f"raised {type(exc).__name__}: {exc}"
            )
            error = ClassifiedError(
                ErrorType.INTERNAL, f"mutate of {consumer.name} {cause}"[:1000], True, {}
            )
            unknown = replace(in_flight, state=MutationState.INDETERMINATE, error=error)
            return await self._reconcile(
                scope, consumer, handler, run, unknown, self._usage(scope, run, ctx)
            )
        usage = self._usage(scope, run, ctx)
        if value is NO_MUTATION:
            done = replace(in_flight, state=MutationState.NONE, ended_at=self.clock.now())
            result = {"kind": "none", "value": None}
        else:
            try:
                plain, _ = json_of(
                    value,
                    f"the result of {consumer.name}.mutate",
                    self.settings.max_prepared_bytes,
                    "MAX_PREPARED_BYTES",
                )
            except HandlerError as failure:  # it happened; keep what we can say about it
                plain = {"unserializable_result": repr(value)[:1000], "why": failure.error.message}
            done = replace(
                in_flight, state=MutationState.APPLIED, result=plain, ended_at=self.clock.now()
            )
            result = {"kind": "applied", "value": plain}
        # `next` is pure (replay runs it again): run it now and checkpoint MUTATED and
        # EMITTING together; should it fail, MUTATED alone is checkpointed, as before.
        mutated = replace(run, mutation_result=result, usage=usage)
        try:
            emit, after = await self._call_next(scope, consumer, handler, mutated)
        except HandlerError:
            await self._advance(
                scope, run, Phase.MUTATED, mutation=done, mutation_result=result, usage=usage
            )
            raise
        return await self._advance(
            scope,
            run,
            Phase.EMITTING,
            mutation=done,
            passed=(Phase.MUTATED,),
            mutation_result=result,
            emit=emit,
            usage=after,
        )

    async def _after_crash(
        self, scope: SessionScope, consumer: Consumer, handler: Any, run: HandlerRun
    ) -> HandlerRun:
        """The run was MUTATING when its executor stopped: the call's outcome is unknown."""
        mutation = await self.store.mutation_get(run.namespace, run.handler_run_id)
        assert mutation is not None, "MUTATING is written with the IN_FLIGHT mutation"
        error = ClassifiedError(
            ErrorType.INTERNAL,
            f"the executor stopped while mutate of {consumer.name} was in flight "
            f"(attempt {mutation.attempts})",
            True,
            {},
        )
        unknown = replace(mutation, state=MutationState.INDETERMINATE, error=error)
        return await self._reconcile(scope, consumer, handler, run, unknown, run.usage)

    async def _reconcile(
        self,
        scope: SessionScope,
        consumer: Consumer,
        handler: Any,
        run: HandlerRun,
        unknown: Mutation,
        usage: Usage,
    ) -> HandlerRun:
        now = self.clock.now()
        answer: Reconciled = Reconciled.unknown("no reconcile hook")
        if consumer.has_reconcile:
            ctx = self._context(scope, run, run.events)
            info = MutationInfo(
                run.name,
                unknown.attempts,
                unknown.error.message if unknown.error else "",
                run.prepared,
                ctx.events,
            )
            try:
                answer = await call(handler.reconcile, ctx, info)
                if not isinstance(answer, Reconciled):
                    answer = Reconciled.unknown(f"reconcile returned {type(answer).__name__}")
            except Exception as exc:
                answer = Reconciled.unknown(f"reconcile raised {type(exc).__name__}: {exc}")
            usage = self._usage(scope, replace(run, usage=usage), ctx)
            unknown = replace(unknown, reconciled=answer.answer)
        if answer.answer == "applied":
            try:
                plain, _ = json_of(
                    answer.value,
                    f"the result reconcile of {consumer.name} gave",
                    self.settings.max_prepared_bytes,
                    "MAX_PREPARED_BYTES",
                )
            except HandlerError:
                plain = repr(answer.value)[:1000]
            done = replace(unknown, state=MutationState.APPLIED, result=plain, ended_at=now)
            return await self._advance(
                scope,
                run,
                Phase.MUTATED,
                mutation=done,
                mutation_result={"kind": "applied", "value": plain},
                usage=usage,
            )
        if answer.answer == "failed":
            done = replace(unknown, state=MutationState.FAILED, ended_at=now)
            return await self._advance(scope, run, Phase.PREPARED, mutation=done, usage=usage)
        # Unknown: a person decides. The run keeps its events reserved.
        call_text = f"{consumer.name}.mutate"
        prompt = prompt_for(run, unknown, call_text)
        log.warning(
            "handler run %s suspended: %s", run.name, unknown.error.message if unknown.error else ""
        )
        return await self._advance(
            scope,
            run,
            Phase.SUSPENDED,
            mutation=unknown,
            prompt=prompt,
            error=unknown.error,
            usage=usage,
        )

    async def _next(
        self, scope: SessionScope, consumer: Consumer, handler: Any, run: HandlerRun
    ) -> HandlerRun:
        emit, usage = await self._call_next(scope, consumer, handler, run)
        return await self._advance(scope, run, Phase.EMITTING, emit=emit, usage=usage)

    async def _call_next(
        self, scope: SessionScope, consumer: Consumer, handler: Any, run: HandlerRun
    ) -> tuple[Any, Usage]:
        """`next`'s emit and the run's usage after it; HandlerError when it fails."""
        result_doc: Mapping[str, Any] = run.mutation_result or {"kind": "none", "value": None}
        result = MutationResult(result_doc["kind"], result_doc.get("value"))
        ctx = self._context(scope, run, run.events)
        try:
            out = await call(handler.next, ctx, run.prepared, result)
            emit = emit_of(
                out, f"{consumer.name}.next", self.settings, set(consumer.workflow.topics)
            )
        except HandlerError:
            raise
        except Exception as exc:
            raise user_error(exc, f"{consumer.name}.next", ()) from exc
        return emit, self._usage(scope, run, ctx)

    async def _commit(self, scope: SessionScope, consumer: Consumer, run: HandlerRun) -> HandlerRun:
        assert run.emit is not None
        name = state_name(run.namespace, run.workflow, run.handler)
        version = run.state_version
        for _ in range(_VERSION_RETRIES):
            data = None if run.emit.keep_state else (name, version, _json_bytes(run.emit.state))
            try:
                done = await self.events.commit(
                    run.namespace, run.handler_run_id, (run.topic,), run.emit.events, data
                )
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.ABORTED:
                    raise
                # Someone wrote the state since prepare read it (CommitState by hand):
                # the mutation happened, so next's state is written over it, logged.
                version, _ = await self.events.state(name)
                log.warning(
                    "handler run %s: state moved to version %d; committing over it",
                    run.name,
                    version,
                )
                continue
            return await self._advance(
                scope,
                run,
                Phase.COMMITTED,
                state_version=done.version or version,
                events_published=done.published,
            )
        raise HandlerError(
            ClassifiedError(ErrorType.INTERNAL, f"commit of {run.name} kept conflicting", True, {})
        )


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
