"""`conveyor submit`: put work on a queue.

    conveyor submit send_receipt '{"order_id": "42"}'      # a task by name, keyword args
    conveyor submit add '[40, 2]' --queue tasks --wait     # positional args; print the result
    conveyor submit --queue emails --payload '{"to": "a@example.com"}'   # a JSON payload
    conveyor submit --queue jobs --invocation call.yaml    # a JobInvocation (ad-hoc job run)

Tasks go through the SDK's client (the task wire format of docs/sdk.md); payloads and
invocations are given as JSON or YAML, never as protobuf bytes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import click

import conveyor_sdk
from conveyor.common.v1 import job_pb2, types_pb2
from conveyor.queue.v1 import messages_pb2 as queue_pb
from conveyor.queue.v1 import service_pb2 as queue_rpc
from conveyor_cli import documents, names, render
from conveyor_cli.session import CommandFailed, Exit, Session, execute
from conveyor_cli.watch import wait_for_run, watch_run
from conveyor_sdk._wire import to_json_value

JOB_INVOCATION_TYPE = "application/x-protobuf; messageType=conveyor.common.v1.JobInvocation"


def _task_arguments(text: str | None) -> tuple[list[Any], dict[str, Any]]:
    if text is None:
        return [], {}
    value = documents.json_value(text, "ARGS")
    if isinstance(value, list):
        return value, {}
    if isinstance(value, dict):
        return [], value
    raise click.BadParameter(
        "ARGS is a JSON array (positional arguments) or object (keyword arguments)",
        param_hint="ARGS",
    )


@click.command(short_help="Submit a task by name with JSON args, a JSON payload or an invocation.")
@click.argument("task", required=False)
@click.argument("args", required=False)
@click.option("--queue", help="queue id (tasks: default 'default'; required otherwise)")
@click.option("--payload", help="submit this JSON payload instead of a task (@file: a file)")
@click.option("--content-type", default="application/json", show_default=True)
@click.option("--invocation", "invocation_path", help="submit a JobInvocation from this file")
@click.option("--priority", type=click.IntRange(min=0), help="higher runs first")
@click.option("--idempotency-key", default="", help="the same key returns the first order")
@click.option("--concurrency-key", help="flow-control key (a tenant, a customer)")
@click.option("--label", "label_pairs", multiple=True, help="KEY=VALUE (repeat)")
@click.option("--not-before", help="not leased before this time (RFC 3339)")
@click.option("--wait", is_flag=True, help="wait for the task and print its result")
@click.option("--wait-timeout", type=click.FloatRange(min=0), help="seconds --wait waits")
@click.option("--watch", is_flag=True, help="follow the run live until it ends")
def submit(
    task: str | None,
    args: str | None,
    queue: str | None,
    payload: str | None,
    content_type: str,
    invocation_path: str | None,
    priority: int | None,
    idempotency_key: str,
    concurrency_key: str | None,
    label_pairs: tuple[str, ...],
    not_before: str | None,
    wait: bool,
    wait_timeout: float | None,
    watch: bool,
) -> None:
    """Submit TASK with ARGS (a JSON array or object), a JSON --payload, or an --invocation.

    Prints the work order. --wait (tasks) prints the task's result, exit 4 if it failed;
    --watch follows the run, exit 4 if it failed."""
    if sum(bool(m) for m in (task, payload, invocation_path)) != 1:
        raise click.UsageError("give one of TASK, --payload or --invocation")
    if wait and not task:
        raise click.UsageError("--wait reads a task's result; use --watch for other orders")
    labels = documents.labels(label_pairs)
    start = documents.parse_time(not_before, "--not-before") if not_before else None
    if task:
        positional, keywords = _task_arguments(args)
        call = _TaskCall(
            task, positional, keywords, queue, priority, idempotency_key, concurrency_key,
            labels, start, wait, wait_timeout, watch,
        )  # fmt: skip

        async def task_body(session: Session) -> int | None:
            return await _submit_task(session, call)

        execute(task_body)
        return
    if args is not None:
        raise click.UsageError("ARGS go with a TASK")
    if not queue:
        raise click.UsageError("--queue is required for a --payload or an --invocation")
    if payload is not None:
        body_payload = types_pb2.Payload(
            data=json.dumps(documents.json_value(payload, "--payload")).encode(),
            content_type=content_type,
        )
    else:
        assert invocation_path is not None
        body_payload = _invocation_payload(invocation_path)
    spec = queue_pb.WorkOrderSpec(
        payload=body_payload,
        priority=priority or 0,
        idempotency_key=idempotency_key,
        concurrency_key=concurrency_key or "",
        labels=labels,
    )
    if start is not None:
        spec.not_before.CopyFrom(documents.timestamp(start))

    async def body(session: Session) -> int | None:
        return await _submit_order(session, names.queue(queue, session.namespace), spec, watch)

    execute(body)


@dataclasses.dataclass(frozen=True)
class _TaskCall:
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str | None
    priority: int | None
    idempotency_key: str
    concurrency_key: str | None
    labels: dict[str, str]
    not_before: dt.datetime | None
    wait: bool
    wait_timeout: float | None
    watch: bool


def _invocation_payload(path: str) -> types_pb2.Payload:
    docs = documents.load_documents(path)
    if len(docs) != 1:
        raise click.BadParameter(f"{path}: one JobInvocation document, not {len(docs)}")
    invocation = documents.parse_message(docs[0], job_pb2.JobInvocation, path)
    return types_pb2.Payload(data=invocation.SerializeToString(), content_type=JOB_INVOCATION_TYPE)


def _report(session: Session, order: queue_pb.WorkOrder, again: bool, stream: bool) -> None:
    if session.options.json:
        data = {"work_order": render.message_json(order), "already_exists": again}
        render.print_json(data, lines=stream)
    else:
        note = " (that idempotency key was used before: the first order)" if again else ""
        render.console().print(render.Text(f"work order {order.name}{note}"))


async def _follow(session: Session, order: str) -> int:
    run = names.run(order, session.namespace)
    if not await wait_for_run(session, run, order):
        return int(Exit.RUN_FAILED)
    return await watch_run(session, run)


async def _submit_order(
    session: Session, queue: str, spec: queue_pb.WorkOrderSpec, watch: bool
) -> int | None:
    reply = await session.call(
        session.queue.SubmitWorkOrder,
        queue_rpc.SubmitWorkOrderRequest(parent=queue, work_order=spec),
    )
    _report(session, reply.work_order, reply.already_exists, stream=watch)
    return await _follow(session, reply.work_order.name) if watch else None


async def _submit_task(session: Session, call: _TaskCall) -> int | None:
    options = session.options
    async with conveyor_sdk.Client(
        options.address,
        namespace=options.namespace,
        token=options.token or "",
        tls=options.tls,
        root_certificates=session.root_certificates,
    ) as client:
        try:
            handle: conveyor_sdk.TaskHandle[Any] = await client.submit(
                call.task,
                *call.args,
                queue=call.queue,
                priority=call.priority,
                idempotency_key=call.idempotency_key,
                concurrency_key=call.concurrency_key,
                not_before=call.not_before,
                labels=call.labels,
                **call.kwargs,
            )
        except TypeError as error:  # arguments that are not JSON, or clash with options
            raise CommandFailed(str(error), Exit.USAGE) from None
        request = queue_rpc.GetWorkOrderRequest(name=handle.name)
        order = (await session.call(session.queue.GetWorkOrder, request)).work_order
        if not (call.wait and options.json):  # --wait -o json: one document, at the end
            _report(session, order, handle.already_submitted, stream=call.watch)
        if call.watch:
            return await _follow(session, handle.name)
        if not call.wait:
            return None
        document = {
            "work_order": render.message_json(order),
            "already_exists": handle.already_submitted,
        }
        try:
            result = await handle.result(timeout=call.wait_timeout)
        except (conveyor_sdk.TaskFailed, conveyor_sdk.TaskCancelled) as failed:
            _report_task_failure(session, failed, document)
            return int(Exit.RUN_FAILED)
        except conveyor_sdk.ResultTimeout as late:
            render.report_failure(options, str(late), Exit.UNAVAILABLE)
            return int(Exit.UNAVAILABLE)
    if options.json:
        render.print_json({**document, "result": to_json_value(result)})
    else:
        render.console().print_json(json.dumps(to_json_value(result)))
    return None


def _report_task_failure(session: Session, failed: Exception, document: dict[str, Any]) -> None:
    if session.options.json:
        data: dict[str, Any] = {"message": str(failed)}
        if isinstance(failed, conveyor_sdk.TaskFailed):
            data.update(
                error_type=failed.error_type, retryable=failed.retryable, details=failed.details
            )
        render.print_json({**document, "failure": data})
    else:
        render.console(stderr=True).print(render.Text(f"task failed: {failed}", style="red"))
