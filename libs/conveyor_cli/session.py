"""One command's connection to the platform, and what its outcome means as an exit code.

A command body is an `async def body(session) -> int | None`; `execute(body)` opens the
SDK's channel (bearer token, correlation id and trace context on every call), runs the
body, and turns what went wrong into a message on stderr and a documented exit code
(docs/cli.md), never a traceback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import grpc

from conveyor.events.v1 import service_pb2_grpc as events_grpc
from conveyor.executor.v1 import service_pb2_grpc as executor_grpc
from conveyor.executor.v1 import workflow_pb2_grpc as workflow_grpc
from conveyor.queue.v1 import service_pb2_grpc as queue_grpc
from conveyor.scheduler.v1 import service_pb2_grpc as scheduler_grpc
from conveyor_sdk._channel import open_channel
from conveyor_sdk._errors import ConveyorError, error_from_rpc

T = TypeVar("T")
DEFAULT_ADDRESS = "127.0.0.1:50051"


class Exit(enum.IntEnum):
    """Exit codes scripts can rely on (docs/cli.md, "Exit codes")."""

    OK = 0
    #: The platform refused or failed the call (INVALID_ARGUMENT, FAILED_PRECONDITION,
    #: ALREADY_EXISTS, ABORTED, INTERNAL, ...), or the CLI itself failed.
    ERROR = 1
    #: Bad usage: an unknown option, a missing argument, an unreadable file or bad JSON.
    USAGE = 2
    #: NOT_FOUND: the named job, schedule, run, queue, topic or event does not exist.
    NOT_FOUND = 3
    #: `runs watch`, `jobs run --watch`, `submit --wait`: the run or task ended FAILED,
    #: ABORTED, CANCELLED or DEAD.
    RUN_FAILED = 4
    #: UNAVAILABLE or DEADLINE_EXCEEDED: the platform could not be reached in time; retry.
    UNAVAILABLE = 5
    #: UNAUTHENTICATED or PERMISSION_DENIED: no token, or the token's roles or namespaces
    #: do not allow the call (resolving a mutation with a viewer token, ...).
    DENIED = 6
    #: Interrupted (Ctrl-C), as shells report SIGINT.
    INTERRUPTED = 130


class Output(enum.StrEnum):
    TABLE = "table"
    JSON = "json"


@dataclasses.dataclass
class Options:
    """The global options, from flags or CONVEYOR_* variables."""

    address: str = DEFAULT_ADDRESS
    token: str | None = None
    namespace: str = "default"
    output: Output = Output.TABLE
    tls: bool = False
    ca_file: str | None = None
    timeout: float = 30.0

    @property
    def json(self) -> bool:
        return self.output is Output.JSON

    @property
    def parent(self) -> str:
        return f"namespaces/{self.namespace}"


class Session:
    """Stubs of the four services (and the executor's WorkflowService) over one channel,
    and a per-call deadline."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.root_certificates = Path(options.ca_file).read_bytes() if options.ca_file else None
        self.channel = open_channel(
            options.address,
            token=options.token,
            tls=options.tls,
            root_certificates=self.root_certificates,
        )
        self.queue = queue_grpc.WorkOrderQueueServiceStub(self.channel)
        self.scheduler = scheduler_grpc.SchedulerServiceStub(self.channel)
        self.executor = executor_grpc.ExecutorServiceStub(self.channel)
        self.workflows = workflow_grpc.WorkflowServiceStub(self.channel)
        self.events = events_grpc.EventStoreServiceStub(self.channel)
        self.journal = events_grpc.JournalServiceStub(self.channel)

    @property
    def namespace(self) -> str:
        return self.options.namespace

    @property
    def parent(self) -> str:
        return self.options.parent

    async def call(self, method: Callable[..., Awaitable[T]], request: Any) -> T:
        """A unary call with the --timeout deadline."""
        return await method(request, timeout=self.options.timeout)

    async def stream(self, method: Callable[..., Any], request: Any) -> AsyncIterator[Any]:
        """A server-streaming call without a deadline (watch, tail -f)."""
        call = method(request)
        try:
            async for response in call:
                yield response
        finally:
            call.cancel()

    async def close(self) -> None:
        await self.channel.close()


class CommandFailed(Exception):
    """A failure the CLI found itself (not the platform): message and exit code."""

    def __init__(self, message: str, code: Exit = Exit.ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def exit_code_of(error: ConveyorError) -> Exit:
    if error.code == "NOT_FOUND":
        return Exit.NOT_FOUND
    if error.code in {"UNAVAILABLE", "DEADLINE_EXCEEDED"}:
        return Exit.UNAVAILABLE
    if error.code in {"UNAUTHENTICATED", "PERMISSION_DENIED"}:
        return Exit.DENIED
    return Exit.ERROR


def options_of(ctx: click.Context | None = None) -> Options:
    ctx = ctx or click.get_current_context()
    root = ctx.find_root()
    if not isinstance(root.obj, Options):
        root.obj = Options()
    return root.obj


def execute(body: Callable[[Session], Awaitable[int | None]]) -> None:
    """Run `body` with a session and leave with its exit code (via click's Exit)."""
    from conveyor_cli import render  # late: render imports this module's Options

    options = options_of()
    try:
        code = asyncio.run(_run(options, body))
    except ConveyorError as error:
        render.report_error(options, error, _hint(options, error))
        code = exit_code_of(error)
    except CommandFailed as failure:
        render.report_failure(options, failure.message, failure.code)
        code = failure.code
    except BrokenPipeError:  # `conveyor ... | head`: main() ends quietly
        raise
    except OSError as error:  # a --ca-file that cannot be read
        render.report_failure(options, str(error), Exit.ERROR)
        code = Exit.ERROR
    except KeyboardInterrupt:
        code = Exit.INTERRUPTED
    sys.stdout.flush()
    raise click.exceptions.Exit(int(code or 0))


async def _run(options: Options, body: Callable[[Session], Awaitable[int | None]]) -> int | None:
    session = Session(options)
    try:
        return await body(session)
    except grpc.aio.AioRpcError as error:
        raise error_from_rpc(error) from None
    finally:
        await session.close()


def _hint(options: Options, error: ConveyorError) -> str:
    if error.code == "UNAVAILABLE" and not error.reason:
        return (
            f"is the platform running at {options.address}? "
            "(--address or CONVEYOR_ADDRESS; `conveyor run` starts one)"
        )
    if error.code == "UNAUTHENTICATED":
        return "pass a bearer token with --token or CONVEYOR_TOKEN"
    if error.code == "PERMISSION_DENIED":
        return "the token's roles or namespaces do not allow this call (docs/security.md)"
    return ""
