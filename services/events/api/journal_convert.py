"""Protobuf <-> domain translation for the JournalService. No logic beyond field mapping."""

from __future__ import annotations

from datetime import UTC

from conveyor.events.v1 import messages_pb2 as pb
from conveyor.events.v1 import service_pb2 as rpc
from conveyor_core.protoconv import ts
from conveyor_events.domain.journal import JournalDraft, JournalFilter, JournalRecord


def draft_from_pb(message: pb.JournalRecord) -> JournalDraft:
    """An appender's record; its `position` is ignored (the journal assigns it)."""
    return JournalDraft(
        id=message.id,
        type=message.type,
        namespace=message.namespace,
        subjects=dict(message.subjects),
        correlation_id=message.correlation_id,
        trace_id=message.trace_id,
        time=message.time.ToDatetime(tzinfo=UTC) if message.HasField("time") else None,
        attributes=dict(message.attributes),
    )


def record_to_pb(record: JournalRecord) -> pb.JournalRecord:
    return pb.JournalRecord(
        position=record.position,
        id=record.id,
        type=record.type,
        namespace=record.namespace,
        subjects=dict(record.subjects),
        correlation_id=record.correlation_id,
        trace_id=record.trace_id,
        time=ts(record.time),
        attributes=dict(record.attributes),
    )


def filter_from_pb(message: rpc.JournalFilter) -> JournalFilter:
    return JournalFilter(
        namespace=message.namespace,
        type_prefix=message.type_prefix,
        subject=message.subject,
        correlation_id=message.correlation_id,
    )
