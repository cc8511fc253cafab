"""gRPC servicer of ExecutorService: validate, translate, call the engine, translate back.

Domain errors propagate to the error interceptor, which maps them to gRPC
status with rich details; nothing here builds a status by hand.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

from conveyor.executor.v1 import service_pb2 as rpc
from conveyor.executor.v1 import service_pb2_grpc
from conveyor_core.clock import to_micros
from conveyor_core.errors import FieldViolation, InvalidArgument
from conveyor_core.pagination import PageTokens, page_size
from conveyor_executor.api import convert
from conveyor_executor.domain import names
from conveyor_executor.engine import ExecutorEngine
from conveyor_executor.store.base import RunListCursor, RunListParams

SERVICE_NAME = rpc.DESCRIPTOR.services_by_name["ExecutorService"].full_name
_NOT_A_TOKEN = "is not a page token from this API"
_MAX_FILTER_LENGTH = 512


def _scope(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


class ExecutorServicer(service_pb2_grpc.ExecutorServiceServicer):
    def __init__(self, engine: ExecutorEngine, page_tokens: PageTokens) -> None:
        self._engine = engine
        self._tokens = page_tokens

    def _page_size(self, requested: int) -> int:
        s = self._engine.settings
        return page_size(requested, s.default_page_size, s.max_page_size)

    async def GetRun(self, request, context):  # type: ignore[no-untyped-def]
        run = await self._engine.run_get(names.parse_run(request.name, "name"))
        return rpc.GetRunResponse(run=convert.run_to_pb(run))

    async def ListRuns(self, request, context):  # type: ignore[no-untyped-def]
        namespace = names.parse_namespace(request.parent, "parent")
        params = RunListParams(
            namespace,
            job=_job_filter(request.job, namespace),
            states=_states(request.states),
            work_order=_name_filter(request.work_order, namespace, "work_order"),
            schedule=_name_filter(request.schedule, namespace, "schedule"),
        )
        scope = _scope("runs", params)
        after = _run_cursor(self._tokens.decode(scope, request.page_token))
        size = self._page_size(request.page_size)
        found = await self._engine.run_list(_with(params, after, size + 1))
        page, token = self._tokens.next_page(
            found,
            size,
            scope,
            lambda r: {"at": to_micros(r.created_at), "id": r.ref.run_id},
        )
        return rpc.ListRunsResponse(
            runs=[convert.run_to_pb(r) for r in page], next_page_token=token
        )

    async def AbortRun(self, request, context):  # type: ignore[no-untyped-def]
        ref = names.parse_run(request.name, "name")
        if len(request.reason) > _MAX_FILTER_LENGTH:
            raise names.bad("reason", f"longer than {_MAX_FILTER_LENGTH} characters")
        run = await self._engine.abort(ref, request.reason)
        return rpc.AbortRunResponse(run=convert.run_to_pb(run))

    async def WatchRun(self, request, context):  # type: ignore[no-untyped-def]
        ref = names.parse_run(request.name, "name")
        async for update in self._engine.watch(ref):
            yield rpc.WatchRunResponse(update=convert.update_to_pb(update))

    async def ListRunSteps(self, request, context):  # type: ignore[no-untyped-def]
        ref = names.parse_run(request.parent, "parent")
        scope = _scope("steps", ref)
        cursor = self._tokens.decode(scope, request.page_token)
        after = _cursor_int(cursor, "seq") if cursor is not None else 0
        size = self._page_size(request.page_size)
        found = await self._engine.step_list(ref, after, size + 1)
        page, token = self._tokens.next_page(found, size, scope, lambda s: {"seq": s.seq})
        return rpc.ListRunStepsResponse(
            steps=[convert.step_to_pb(s) for s in page], next_page_token=token
        )

    async def GetOutput(self, request, context):  # type: ignore[no-untyped-def]
        output = await self._engine.output_get(names.parse_output(request.name, "name"))
        return rpc.GetOutputResponse(output=convert.output_to_pb(output))

    async def ListOutputs(self, request, context):  # type: ignore[no-untyped-def]
        ref = names.parse_run(request.parent, "parent")
        scope = _scope("outputs", ref)
        cursor = self._tokens.decode(scope, request.page_token)
        after = None
        if cursor is not None:
            output_id = cursor.get("id")
            if not isinstance(output_id, str):
                raise InvalidArgument(FieldViolation("page_token", _NOT_A_TOKEN))
            after = (_cursor_int(cursor, "at"), output_id)
        size = self._page_size(request.page_size)
        found = await self._engine.output_list(ref, after, size + 1)
        page, token = self._tokens.next_page(
            found,
            size,
            scope,
            lambda o: {"at": to_micros(o.created_at), "id": o.ref.output_id},
        )
        return rpc.ListOutputsResponse(
            outputs=[convert.output_to_pb(o) for o in page], next_page_token=token
        )

    async def GetJobUsage(self, request, context):  # type: ignore[no-untyped-def]
        namespace, job = names.parse_job(request.job, "job")
        usage = await self._engine.job_usage(namespace, job)
        return rpc.GetJobUsageResponse(usage=convert.job_usage_to_pb(usage))


def _job_filter(value: str, namespace: str) -> str:
    if not value:
        return ""
    job_namespace, _ = names.parse_job(value, "job")
    if job_namespace != namespace:
        raise names.bad("job", "must be in parent's namespace")
    return value


def _name_filter(value: str, namespace: str, field: str) -> str:
    if not value:
        return ""
    if len(value) > _MAX_FILTER_LENGTH or not value.startswith(f"namespaces/{namespace}/"):
        raise names.bad(field, f"must be a resource name in namespaces/{namespace}")
    return value


def _states(values: Any) -> tuple[Any, ...]:
    states = []
    for i, value in enumerate(values):
        if value not in convert.STATE_FROM_PB:
            raise names.bad(f"states[{i}]", "unknown run state")
        states.append(convert.STATE_FROM_PB[value])
    return tuple(sorted(set(states)))


def _cursor_int(cursor: dict[str, Any], key: str) -> int:
    value = cursor.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(FieldViolation("page_token", _NOT_A_TOKEN))
    return value


def _run_cursor(cursor: dict[str, Any] | None) -> RunListCursor | None:
    if cursor is None:
        return None
    run_id = cursor.get("id")
    if not isinstance(run_id, str):
        raise InvalidArgument(FieldViolation("page_token", _NOT_A_TOKEN))
    return RunListCursor(_cursor_int(cursor, "at"), run_id)


def _with(params: RunListParams, after: RunListCursor | None, limit: int) -> RunListParams:
    return replace(params, after=after, limit=limit)
