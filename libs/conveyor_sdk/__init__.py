"""Conveyor's Python SDK: write tasks, submit them, read their results.

    import conveyor

    app = conveyor.App("billing")

    @app.task(queue="emails", retry=conveyor.Retry(max_attempts=5), timeout="30s")
    async def send_receipt(order_id: str, email: str) -> dict: ...

    async with conveyor.Client() as client:
        handle = await client.submit(send_receipt, order_id="42", email="a@example.com")
        print(await handle.result(timeout=30))

Run a worker for the app with `conveyor worker billing.app:app`. `import conveyor`
gives this package's names (it re-exports them); the client side needs only grpcio
and protobuf. See docs/sdk.md.
"""

from conveyor_sdk._app import App, AppError, Task, TaskOptions, load_app
from conveyor_sdk._client import Client, TaskHandle, TaskState, TaskStatus
from conveyor_sdk._context import HandlerContext, TaskContext, Usage
from conveyor_sdk._errors import (
    AlreadyExists,
    Cancelled,
    ConveyorError,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NonRetryable,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    ResultTimeout,
    TaskCancelled,
    TaskFailed,
    Unauthenticated,
    Unavailable,
    VersionConflict,
)
from conveyor_sdk._options import Retry
from conveyor_sdk._sync import SyncClient, SyncTaskHandle
from conveyor_sdk._wire import RESULT_CONTENT_TYPE, TASK_CONTENT_TYPE
from conveyor_sdk._workflow import (
    KEEP_STATE,
    NO_MUTATION,
    Consumer,
    Event,
    MutationFailed,
    MutationInfo,
    MutationResult,
    Produce,
    Producer,
    Reconciled,
    ReservedEvent,
    Schedule,
    Workflow,
    cron,
    every,
    once,
)

__all__ = [
    "KEEP_STATE",
    "NO_MUTATION",
    "RESULT_CONTENT_TYPE",
    "TASK_CONTENT_TYPE",
    "AlreadyExists",
    "App",
    "AppError",
    "Cancelled",
    "Client",
    "Consumer",
    "ConveyorError",
    "DeadlineExceeded",
    "Event",
    "FailedPrecondition",
    "FieldViolation",
    "HandlerContext",
    "Internal",
    "InvalidArgument",
    "MutationFailed",
    "MutationInfo",
    "MutationResult",
    "NonRetryable",
    "NotFound",
    "PermissionDenied",
    "Produce",
    "Producer",
    "Reconciled",
    "ReservedEvent",
    "ResourceExhausted",
    "ResultTimeout",
    "Retry",
    "Schedule",
    "SyncClient",
    "SyncTaskHandle",
    "Task",
    "TaskCancelled",
    "TaskContext",
    "TaskFailed",
    "TaskHandle",
    "TaskOptions",
    "TaskState",
    "TaskStatus",
    "Unauthenticated",
    "Unavailable",
    "Usage",
    "VersionConflict",
    "Workflow",
    "cron",
    "every",
    "load_app",
    "once",
]
