"""gRPC servicer of WorkflowService: validate, translate, call the engine, translate back."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any, TypeVar

from conveyor.executor.v1 import workflow_pb2 as pb
from conveyor.executor.v1 import workflow_pb2_grpc
from conveyor_core.auth import Access, Role, access, actor
from conveyor_core.clock import to_micros
from conveyor_core.errors import FieldViolation, InvalidArgument
from conveyor_core.pagination import PageTokens, page_size
from conveyor_core.protoconv import ts
from conveyor_executor.api.convert import failure_to_pb, usage_to_pb
from conveyor_executor.domain import names
from conveyor_executor.domain.workflow import (
    HandlerKind,
    HandlerRun,
    Mutation,
    MutationState,
    Phase,
    Resolution,
    Session,
    WorkflowRecord,
)
from conveyor_executor.settings import ExecutorSettings
from conveyor_executor.store.workflow_base import HandlerRunListParams, MutationListParams
from conveyor_executor.workflow.engine import WorkflowEngine

WORKFLOW_SERVICE_NAME = pb.DESCRIPTOR.services_by_name["WorkflowService"].full_name
WORKFLOW_ACCESS: dict[str, Access] = {
    "ListWorkflows": access(Role.VIEWER, "parent"),
    "GetWorkflow": access(Role.VIEWER, "name"),
    "ListSessions": access(Role.VIEWER, "parent"),
    "GetSession": access(Role.VIEWER, "name"),
    "ListHandlerRuns": access(Role.VIEWER, "parent"),
    "GetHandlerRun": access(Role.VIEWER, "name"),
    "ListMutations": access(Role.VIEWER, "parent"),
    "PauseWorkflow": access(Role.OPERATOR, "name"),
    "ResumeWorkflow": access(Role.OPERATOR, "name"),
    "ResolveMutation": access(Role.OPERATOR, "name"),
}
_ID = names.RUN_ID
_MAX_TEXT = 1024
_KIND = {
    HandlerKind.PRODUCER: pb.HANDLER_KIND_PRODUCER,
    HandlerKind.CONSUMER: pb.HANDLER_KIND_CONSUMER,
}
_RESOLUTIONS = {
    pb.RESOLUTION_APPLIED: Resolution.APPLIED,
    pb.RESOLUTION_FAILED: Resolution.FAILED,
    pb.RESOLUTION_SKIP: Resolution.SKIP,
}


def _id(value: str, field: str, kind: str, shape: str) -> tuple[str, str]:
    parts = value.split("/")
    if len(parts) != 4 or parts[0] != "namespaces" or parts[2] != kind:
        raise names.bad(field, f"must be {shape}, got {value[:200]!r}")
    namespace = names.parse_namespace("/".join(parts[:2]), field)
    if not _ID.fullmatch(parts[3]):
        raise names.bad(
            field, f"id {parts[3][:80]!r} must be letters, digits, _ and - (at most 64)"
        )
    return namespace, parts[3]


def _workflow_name(value: str, field: str) -> tuple[str, str]:
    return _id(value, field, "workflows", "namespaces/{namespace}/workflows/{workflow}")


def _text(value: str, field: str, required: bool = False) -> str:
    if required and not value.strip():
        raise names.bad(field, "required: say why")
    if len(value) > _MAX_TEXT:
        raise names.bad(field, f"{len(value)} characters; at most {_MAX_TEXT}")
    return value


_E = TypeVar("_E", bound=int)


def _enum_values(values: Iterable[_E], enum: Any, field: str, start: int) -> list[_E]:
    known = set(enum.values())
    bad = [v for v in values if v not in known or v == 0]
    if bad:
        raise names.bad(field, f"unknown values {bad[:5]}")
    return list(values)


def workflow_to_pb(record: WorkflowRecord) -> pb.Workflow:
    return pb.Workflow(
        name=record.name,
        handlers=[
            pb.WorkflowHandler(
                handler=h.handler,
                kind=_KIND[h.kind],
                topic=f"namespaces/{record.namespace}/topics/{h.topic}" if h.topic else "",
                batch=h.batch,
                schedule=h.schedule,
                has_reconcile=h.has_reconcile,
            )
            for h in record.handlers
        ],
        code_version=record.code_version,
        queue=record.queue,
        paused=record.paused,
        paused_by=record.paused_by,
        pause_reason=record.pause_reason,
        iteration_budget=record.iteration_budget,
        cost_budget_usd=record.cost_budget_usd,
        register_time=ts(record.registered_at),
        update_time=ts(record.updated_at),
    )


def session_to_pb(session: Session) -> pb.Session:
    out = pb.Session(
        name=session.name,
        workflow=session.workflow,
        state=pb.SessionState.Value(f"SESSION_STATE_{session.state.value}"),
        trigger=session.trigger,
        iterations=session.iterations,
        handler_runs=session.handler_runs,
        usage=usage_to_pb(session.usage),
        code_version=session.code_version,
        follow_up=f"namespaces/{session.namespace}/sessions/{session.follow_up}"
        if session.follow_up
        else "",
        summary=session.summary,
        start_time=ts(session.started_at),
        run=f"namespaces/{session.namespace}/runs/{session.session_id}",
    )
    if session.ended_at is not None:
        out.end_time.CopyFrom(ts(session.ended_at))
    return out


def run_to_pb(run: HandlerRun) -> pb.HandlerRun:
    out = pb.HandlerRun(
        name=run.name,
        workflow=run.workflow,
        handler=run.handler,
        kind=_KIND[run.kind],
        phase=pb.HandlerPhase.Value(f"HANDLER_PHASE_{run.phase.value}"),
        session=f"namespaces/{run.namespace}/sessions/{run.session_id}",
        events=[
            pb.EventRef(
                name=f"namespaces/{run.namespace}/topics/{e.topic}/events/{e.sequence}",
                message_id=e.message_id,
                title=e.title,
            )
            for e in run.events
        ],
        prepared_json=json.dumps(run.prepared) if run.phase is not Phase.PENDING else "",
        state_version=run.state_version,
        prompt=run.prompt,
        code_version=run.code_version,
        usage=usage_to_pb(run.usage),
        events_published=run.events_published,
        create_time=ts(run.created_at),
        update_time=ts(run.updated_at),
    )
    if run.mutation_result is not None:
        out.mutation_result.kind = run.mutation_result["kind"]
        out.mutation_result.value_json = json.dumps(run.mutation_result.get("value"))
    failure = failure_to_pb(run.error)
    if failure is not None:
        out.failure.CopyFrom(failure)
    if run.ended_at is not None:
        out.end_time.CopyFrom(ts(run.ended_at))
    return out


def mutation_to_pb(m: Mutation) -> pb.Mutation:
    out = pb.Mutation(
        name=m.name,
        handler_run=m.name.rsplit("/", 1)[0],
        workflow=m.workflow,
        handler=m.handler,
        state=pb.MutationState.Value(f"MUTATION_STATE_{m.state.value}"),
        attempts=m.attempts,
        result_json=json.dumps(m.result) if m.state is MutationState.APPLIED else "",
        reconciled=m.reconciled,
        resolved_by=m.resolved_by,
        resolution_reason=m.resolution_reason,
        start_time=ts(m.started_at),
    )
    if m.resolution is not None:
        out.resolution = pb.Resolution.Value(f"RESOLUTION_{m.resolution.name}")
    if m.resolved_at is not None:
        out.resolve_time.CopyFrom(ts(m.resolved_at))
    failure = failure_to_pb(m.error)
    if failure is not None:
        out.failure.CopyFrom(failure)
    if m.ended_at is not None:
        out.end_time.CopyFrom(ts(m.ended_at))
    return out


def _scope(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _cursor(decoded: dict[str, Any] | None) -> tuple[int, str] | None:
    if decoded is None:
        return None
    try:
        return int(decoded["at"]), str(decoded["id"])
    except (KeyError, TypeError, ValueError):
        raise names.bad("page_token", "is not a page token from this API") from None


class WorkflowServicer(workflow_pb2_grpc.WorkflowServiceServicer):
    def __init__(
        self, engine: WorkflowEngine, tokens: PageTokens, settings: ExecutorSettings
    ) -> None:
        self._engine = engine
        self._tokens = tokens
        self._settings = settings

    def _size(self, requested: int) -> int:
        s = self._settings
        return page_size(requested, s.default_page_size, s.max_page_size)

    async def ListWorkflows(self, request, context):  # type: ignore[no-untyped-def]
        records = await self._engine.workflow_list(names.parse_namespace(request.parent, "parent"))
        return pb.ListWorkflowsResponse(workflows=[workflow_to_pb(r) for r in records])

    async def GetWorkflow(self, request, context):  # type: ignore[no-untyped-def]
        record, usage = await self._engine.workflow_get(*_workflow_name(request.name, "name"))
        out = workflow_to_pb(record)
        out.usage.CopyFrom(usage_to_pb(usage))
        return pb.GetWorkflowResponse(workflow=out)

    async def PauseWorkflow(self, request, context):  # type: ignore[no-untyped-def]
        ns, workflow = _workflow_name(request.name, "name")
        reason = _text(request.reason, "reason")
        by = actor(_text(request.paused_by, "paused_by"))
        record = await self._engine.set_paused(ns, workflow, True, by, reason)
        return pb.PauseWorkflowResponse(workflow=workflow_to_pb(record))

    async def ResumeWorkflow(self, request, context):  # type: ignore[no-untyped-def]
        ns, workflow = _workflow_name(request.name, "name")
        record = await self._engine.set_paused(ns, workflow, False, actor(""), "")
        return pb.ResumeWorkflowResponse(workflow=workflow_to_pb(record))

    async def ListSessions(self, request, context):  # type: ignore[no-untyped-def]
        ns, workflow = _workflow_name(request.parent, "parent")
        scope = _scope("sessions", ns, workflow)
        after = _cursor(self._tokens.decode(scope, request.page_token))
        size = self._size(request.page_size)
        found = await self._engine.session_list(ns, workflow, after, size + 1)
        page, token = self._tokens.next_page(
            found, size, scope, lambda s: {"at": to_micros(s.started_at), "id": s.session_id}
        )
        return pb.ListSessionsResponse(
            sessions=[session_to_pb(s) for s in page], next_page_token=token
        )

    async def GetSession(self, request, context):  # type: ignore[no-untyped-def]
        ns, ident = _id(
            request.name, "name", "sessions", "namespaces/{namespace}/sessions/{session}"
        )
        return pb.GetSessionResponse(
            session=session_to_pb(await self._engine.session_get(ns, ident))
        )

    async def ListHandlerRuns(self, request, context):  # type: ignore[no-untyped-def]
        ns = names.parse_namespace(request.parent, "parent")
        phases = _enum_values(request.phases, pb.HandlerPhase, "phases", 1)
        session = ""
        if request.session:
            session = _id(
                request.session, "session", "sessions", "namespaces/{namespace}/sessions/{session}"
            )[1]
        params = HandlerRunListParams(
            ns,
            _text(request.workflow, "workflow"),
            tuple(Phase(pb.HandlerPhase.Name(p).removeprefix("HANDLER_PHASE_")) for p in phases),
            session,
        )
        scope = _scope("handler_runs", params)
        after = _cursor(self._tokens.decode(scope, request.page_token))
        size = self._size(request.page_size)
        found = await self._engine.handler_run_list(
            HandlerRunListParams(
                params.namespace, params.workflow, params.phases, params.session_id, after, size + 1
            )
        )
        page, token = self._tokens.next_page(
            found, size, scope, lambda r: {"at": to_micros(r.created_at), "id": r.handler_run_id}
        )
        return pb.ListHandlerRunsResponse(
            handler_runs=[run_to_pb(r) for r in page], next_page_token=token
        )

    async def GetHandlerRun(self, request, context):  # type: ignore[no-untyped-def]
        ns, ident = _id(
            request.name, "name", "handlerRuns", "namespaces/{namespace}/handlerRuns/{handler_run}"
        )
        run, mutation = await self._engine.handler_run_get(ns, ident)
        out = pb.GetHandlerRunResponse(handler_run=run_to_pb(run))
        if mutation is not None:
            out.mutation.CopyFrom(mutation_to_pb(mutation))
        return out

    async def ListMutations(self, request, context):  # type: ignore[no-untyped-def]
        ns = names.parse_namespace(request.parent, "parent")
        states = _enum_values(request.states, pb.MutationState, "states", 1)
        params = MutationListParams(
            ns,
            _text(request.workflow, "workflow"),
            tuple(
                MutationState(pb.MutationState.Name(s).removeprefix("MUTATION_STATE_"))
                for s in states
            ),
        )
        scope = _scope("mutations", params)
        after = _cursor(self._tokens.decode(scope, request.page_token))
        size = self._size(request.page_size)
        found = await self._engine.mutation_list(
            MutationListParams(params.namespace, params.workflow, params.states, after, size + 1)
        )
        page, token = self._tokens.next_page(
            found, size, scope, lambda m: {"at": to_micros(m.started_at), "id": m.handler_run_id}
        )
        return pb.ListMutationsResponse(
            mutations=[mutation_to_pb(m) for m in page], next_page_token=token
        )

    async def ResolveMutation(self, request, context):  # type: ignore[no-untyped-def]
        violations: list[FieldViolation] = []
        try:
            ns, ident = _id(
                request.name,
                "name",
                "handlerRuns",
                "namespaces/{namespace}/handlerRuns/{handler_run}",
            )
        except InvalidArgument as exc:
            violations.extend(exc.violations)
        resolution = _RESOLUTIONS.get(request.resolution)
        if resolution is None:
            violations.append(FieldViolation("resolution", "required: APPLIED, FAILED or SKIP"))
        result: Any = None
        if request.result_json:
            if resolution is not Resolution.APPLIED:
                violations.append(FieldViolation("result_json", "only with RESOLUTION_APPLIED"))
            elif len(request.result_json) > self._settings.max_prepared_bytes:
                violations.append(
                    FieldViolation(
                        "result_json",
                        f"{len(request.result_json)} bytes, above the limit of "
                        f"{self._settings.max_prepared_bytes} "
                        "(CONVEYOR_EXECUTOR_MAX_PREPARED_BYTES)",
                    )
                )
            else:
                try:
                    result = json.loads(request.result_json)
                except ValueError as exc:
                    violations.append(FieldViolation("result_json", f"is not JSON: {exc}"))
        if not request.reason.strip():
            violations.append(FieldViolation("reason", "required: say why"))
        elif len(request.reason) > _MAX_TEXT:
            violations.append(FieldViolation("reason", f"at most {_MAX_TEXT} characters"))
        by = actor(request.resolved_by[:256])
        if not by:
            violations.append(FieldViolation("resolved_by", "required: who resolves it"))
        if violations:
            raise InvalidArgument(violations)
        assert resolution is not None
        run, mutation = await self._engine.resolve(
            ns, ident, resolution, result, by, request.reason
        )
        return pb.ResolveMutationResponse(
            handler_run=run_to_pb(run), mutation=mutation_to_pb(mutation)
        )
