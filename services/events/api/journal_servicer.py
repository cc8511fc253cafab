"""gRPC servicer of JournalService: translate, call the journal engine, translate back.

Domain errors propagate to the error interceptor, which maps them to gRPC
status with rich details. `journal_registration(engine)` is what a hosting
service adds to its registrations.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from conveyor.events.v1 import service_pb2 as rpc
from conveyor.events.v1 import service_pb2_grpc
from conveyor_core.grpc import ServiceRegistration
from conveyor_core.pagination import page_size
from conveyor_events.api import journal_convert as convert
from conveyor_events.api.access import JOURNAL_ACCESS
from conveyor_events.journal_engine import JournalEngine

SERVICE_NAME = rpc.DESCRIPTOR.services_by_name["JournalService"].full_name


class JournalServicer(service_pb2_grpc.JournalServiceServicer):
    def __init__(self, engine: JournalEngine) -> None:
        self._engine = engine

    async def AppendJournalRecords(self, request, context):  # type: ignore[no-untyped-def]
        positions = await self._engine.append([convert.draft_from_pb(r) for r in request.records])
        return rpc.AppendJournalRecordsResponse(positions=positions)

    async def ReadJournal(self, request, context):  # type: ignore[no-untyped-def]
        settings = self._engine.settings
        size = page_size(request.page_size, settings.default_page_size, settings.max_page_size)
        page = await self._engine.read(
            request.after_position,
            convert.filter_from_pb(request.filter),
            size,
            newest_first=request.newest_first,
            before_position=request.before_position,
        )
        return rpc.ReadJournalResponse(
            records=[convert.record_to_pb(r) for r in page.records],
            next_position=page.next_position,
            head_position=page.head_position,
        )

    async def SubscribeJournal(  # type: ignore[no-untyped-def]
        self, request, context
    ) -> AsyncIterator[rpc.SubscribeJournalResponse]:
        records = self._engine.subscribe(
            request.after_position, convert.filter_from_pb(request.filter)
        )
        # Closed here, in the call's task, when the client goes away.
        async with contextlib.aclosing(records):
            async for record in records:
                yield rpc.SubscribeJournalResponse(record=convert.record_to_pb(record))


def journal_registration(engine: JournalEngine) -> ServiceRegistration:
    """The JournalService over `engine`, ready for `create_server` or a hosted service."""
    return ServiceRegistration.of(
        SERVICE_NAME,
        service_pb2_grpc.add_JournalServiceServicer_to_server,
        JournalServicer(engine),
        JOURNAL_ACCESS,
    )
