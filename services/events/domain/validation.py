"""Resource names and request limits of the event store. Raises InvalidArgument with field paths.

Names follow AIP-122:

* topic: `namespaces/{namespace}/topics/{topic}`
* event: `namespaces/{namespace}/topics/{topic}/events/{sequence}`
* handler state: `namespaces/{namespace}/handlers/{handler}/state`
"""

from __future__ import annotations

from collections.abc import Sequence

from conveyor_core.context import is_valid_correlation_id
from conveyor_core.errors import FieldViolation, InvalidArgument
from conveyor_core.validators import echo, name_pattern
from conveyor_events.domain.model import EventDraft, EventRef, HandlerRef, Payload, TopicRef
from conveyor_events.settings import EventStoreSettings

NAMESPACE_ID = name_pattern(r"[a-z][a-z0-9-]{0,62}")
# Topics, handlers and workflows share one rule.
RESOURCE_ID = name_pattern(r"[a-z][a-z0-9._-]{0,127}")
# Run ids and actors are opaque to the store but end up in logs: plain printable tokens only.
RUN_ID = name_pattern(r"[A-Za-z0-9][A-Za-z0-9._:/@+=-]*")
#: An event sequence: a positive integer of ASCII digits, at most 18 of them.
SEQUENCE = name_pattern(r"[0-9]{1,18}")
_RULE_NS = "must match [a-z][a-z0-9-]{0,62}"
_RULE_ID = "must match [a-z][a-z0-9._-]{0,127}"


def bad(field: str, description: str) -> InvalidArgument:
    return InvalidArgument(FieldViolation(field, description))


def raise_if(violations: Sequence[FieldViolation]) -> None:
    if violations:
        raise InvalidArgument(violations)


def _split(value: str, field: str, shape: str, length: int) -> list[str]:
    if not value:
        raise bad(field, f"required: {shape}")
    parts = value.split("/")
    if len(parts) != length or parts[0] != "namespaces":
        raise bad(field, f"must be {shape}, got {echo(value)}")
    return parts


def check_namespace_id(namespace: str, field: str) -> str:
    if not NAMESPACE_ID.match(namespace):
        raise bad(field, f"namespace {echo(namespace)} {_RULE_NS}")
    return namespace


def check_resource_id(value: str, field: str, kind: str) -> str:
    if not value:
        raise bad(field, f"{kind} is required")
    if not RESOURCE_ID.match(value):
        raise bad(field, f"{kind} {echo(value)} {_RULE_ID}")
    return value


def parse_namespace(value: str, field: str) -> str:
    """`namespaces/{namespace}` -> namespace."""
    parts = _split(value, field, "namespaces/{namespace}", 2)
    return check_namespace_id(parts[1], field)


def parse_topic(value: str, field: str) -> TopicRef:
    """`namespaces/{namespace}/topics/{topic}` -> TopicRef."""
    shape = "namespaces/{namespace}/topics/{topic}"
    parts = _split(value, field, shape, 4)
    if parts[2] != "topics":
        raise bad(field, f"must be {shape}, got {echo(value)}")
    namespace = check_namespace_id(parts[1], field)
    return TopicRef(namespace, check_resource_id(parts[3], field, "topic"))


def parse_event(value: str, field: str) -> EventRef:
    """`namespaces/{namespace}/topics/{topic}/events/{sequence}` -> EventRef."""
    shape = "namespaces/{namespace}/topics/{topic}/events/{sequence}"
    parts = _split(value, field, shape, 6)
    if parts[4] != "events":
        raise bad(field, f"must be {shape}, got {echo(value)}")
    topic = parse_topic("/".join(parts[:4]), field)
    # ASCII digits only: str.isdigit() and int() also take fullwidth and superscript digits.
    if not SEQUENCE.match(parts[5]) or int(parts[5]) < 1:
        raise bad(field, f"event sequence {echo(parts[5])} is not a positive integer")
    return EventRef(topic.namespace, topic.topic, int(parts[5]))


def parse_handler_state(value: str, field: str) -> HandlerRef:
    """`namespaces/{namespace}/handlers/{handler}/state` -> HandlerRef."""
    shape = "namespaces/{namespace}/handlers/{handler}/state"
    parts = _split(value, field, shape, 5)
    if parts[2] != "handlers" or parts[4] != "state":
        raise bad(field, f"must be {shape}, got {echo(value)}")
    namespace = check_namespace_id(parts[1], field)
    return HandlerRef(namespace, check_resource_id(parts[3], field, "handler"))


def run_id_violations(run_id: str, limits: EventStoreSettings, field: str) -> list[FieldViolation]:
    if not run_id:
        return [FieldViolation(field, "required: the id of the consumer run")]
    if len(run_id) > limits.max_run_id_length:
        return [FieldViolation(field, f"longer than {limits.max_run_id_length} characters")]
    if not RUN_ID.match(run_id):
        return [FieldViolation(field, "must be letters, digits and ._:/@+=- (no spaces)")]
    return []


def check_run_id(run_id: str, limits: EventStoreSettings, field: str = "run_id") -> str:
    raise_if(run_id_violations(run_id, limits, field))
    return run_id


def payload_violations(
    payload: Payload, limits: EventStoreSettings, field: str
) -> list[FieldViolation]:
    out = []
    if len(payload.data) > limits.max_payload_bytes:
        out.append(
            FieldViolation(
                f"{field}.data",
                f"{len(payload.data)} bytes exceeds the limit of {limits.max_payload_bytes} bytes",
            )
        )
    if len(payload.content_type) > limits.max_content_type_length:
        out.append(
            FieldViolation(
                f"{field}.content_type", f"longer than {limits.max_content_type_length} characters"
            )
        )
    return out


def draft_violations(
    drafts: Sequence[EventDraft], limits: EventStoreSettings, field: str
) -> list[FieldViolation]:
    """Everything wrong with a batch of drafts; `field` is the repeated field (`events`)."""
    out: list[FieldViolation] = []
    for i, draft in enumerate(drafts):
        at = f"{field}[{i}]"
        if not draft.message_id:
            out.append(FieldViolation(f"{at}.message_id", "required: unique within the topic"))
        elif len(draft.message_id) > limits.max_message_id_length:
            out.append(
                FieldViolation(
                    f"{at}.message_id", f"longer than {limits.max_message_id_length} characters"
                )
            )
        if not draft.title.strip():
            out.append(FieldViolation(f"{at}.title", "required: how a person recognises it"))
        elif len(draft.title) > limits.max_title_length:
            out.append(
                FieldViolation(f"{at}.title", f"longer than {limits.max_title_length} characters")
            )
        if draft.correlation_id and not is_valid_correlation_id(draft.correlation_id):
            out.append(
                FieldViolation(
                    f"{at}.correlation_id", "must be 1-128 characters of A-Z a-z 0-9 . _ : / -"
                )
            )
        out += payload_violations(draft.payload, limits, f"{at}.payload")
    return out


def text_violations(
    value: str, field: str, maximum: int, *, required: str | None = None
) -> list[FieldViolation]:
    """A free-text field: required (with `required` as the hint) and at most `maximum` long."""
    if required is not None and not value.strip():
        return [FieldViolation(field, f"required: {required}")]
    if len(value) > maximum:
        return [FieldViolation(field, f"longer than {maximum} characters")]
    return []


def sequence_violations(
    sequences: Sequence[int], limits: EventStoreSettings, field: str = "sequences"
) -> list[FieldViolation]:
    if len(sequences) > limits.max_reserve:
        return [FieldViolation(field, f"at most {limits.max_reserve} sequences")]
    return [
        FieldViolation(f"{field}[{i}]", "must be a positive sequence")
        for i, sequence in enumerate(sequences)
        if sequence < 1
    ]
