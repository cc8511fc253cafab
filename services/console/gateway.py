"""The console's only way to the platform: the four services' gRPC stubs, called with the
signed-in user's bearer token, so every authorization decision stays in the services.

A failed call raises the SDK's typed `ConveyorError` (rich details decoded by
conveyor_sdk._errors), which the HTTP layer turns into a JSON or page error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc

from conveyor.events.v1 import service_pb2_grpc as events_grpc
from conveyor.executor.v1 import service_pb2_grpc as executor_grpc
from conveyor.executor.v1 import workflow_pb2_grpc as workflow_grpc
from conveyor.queue.v1 import service_pb2_grpc as queue_grpc
from conveyor.scheduler.v1 import service_pb2_grpc as scheduler_grpc
from conveyor_core.grpc import create_channel
from conveyor_sdk._errors import ConveyorError, Unavailable, error_from_rpc

T = TypeVar("T")

#: Peer name -> the stubs the console builds on its channel.
_STUBS: dict[str, dict[str, Callable[[grpc.aio.Channel], Any]]] = {
    "queue": {"queue": queue_grpc.WorkOrderQueueServiceStub},
    "events": {
        "events": events_grpc.EventStoreServiceStub,
        "journal": events_grpc.JournalServiceStub,
    },
    "scheduler": {"scheduler": scheduler_grpc.SchedulerServiceStub},
    "executor": {
        "executor": executor_grpc.ExecutorServiceStub,
        "workflows": workflow_grpc.WorkflowServiceStub,
    },
}


class Gateway:
    """Channels to the services (one per peer address) and the console's calls over them."""

    def __init__(
        self, timeout: float, *, credentials: grpc.ChannelCredentials | None = None
    ) -> None:
        """`credentials`: TLS to the services (CONVEYOR_TLS_CA_FILE, and this process's
        certificate for mutual TLS); None: plaintext. The channels carry no token of their
        own: never the process's CONVEYOR_PEER_TOKEN, only each caller's."""
        self.timeout = timeout
        self._credentials = credentials
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, Any] = {}
        self.addresses: dict[str, str] = {}
        #: Set when the process stops (`ConsoleService.drain`): readiness turns NOT_SERVING.
        self.draining = False

    def attach(self, addresses: Mapping[str, str]) -> None:
        """Dial the peers at `addresses` (peer name -> host:port); unknown peers are ignored."""
        by_address: dict[str, grpc.aio.Channel] = {}
        for peer, address in addresses.items():
            if peer not in _STUBS or peer in self.addresses:
                continue
            channel = by_address.get(address) or self._channels.get(address)
            if channel is None:
                channel = create_channel(address, credentials=self._credentials, token=None)
                self._channels[address] = channel
            by_address[address] = channel
            self.addresses[peer] = address
            for attr, stub in _STUBS[peer].items():
                self._stubs[attr] = stub(channel)

    @property
    def ready(self) -> bool:
        return not self.draining and all(peer in self.addresses for peer in _STUBS)

    def missing(self) -> list[str]:
        return [peer for peer in _STUBS if peer not in self.addresses]

    async def call(self, token: str | None, stub: str, method: str, request: Any) -> Any:
        """`stub.method(request)` with the caller's token; a failure raises ConveyorError."""
        target = self._stubs.get(stub)
        if target is None:
            raise Unavailable(
                message=f"the console has no address for the {stub} service "
                "(set CONVEYOR_QUEUE_ADDRESS, CONVEYOR_EVENTS_ADDRESS, "
                "CONVEYOR_SCHEDULER_ADDRESS and CONVEYOR_EXECUTOR_ADDRESS)",
                code="UNAVAILABLE",
            )
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        try:
            return await getattr(target, method)(request, timeout=self.timeout, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            raise error_from_rpc(error) from None

    async def gather(self, *calls: Awaitable[T]) -> list[T | ConveyorError]:
        """Several calls at once; a failed one is its ConveyorError in the result."""
        results = await asyncio.gather(*calls, return_exceptions=True)
        out: list[T | ConveyorError] = []
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, ConveyorError):
                raise result
            out.append(result)
        return out

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
