"""Short names people type -> the resource names the APIs take.

A full resource name (`namespaces/...`) is used as it is; a short one is read in the
namespace of --namespace:

    job        hello                    -> namespaces/N/jobs/hello
    schedule   hello/every-3s           -> namespaces/N/jobs/hello/schedules/every-3s
    run        <id>, or a work order's name (namespaces/N/queues/Q/workOrders/<id>)
               -> namespaces/N/runs/<id>
    queue      emails                   -> namespaces/N/queues/emails
    topic      orders                   -> namespaces/N/topics/orders
    event      orders/12                -> namespaces/N/topics/orders/events/12
    workflow   shop                     -> namespaces/N/workflows/shop
    session    <id>                     -> namespaces/N/sessions/<id>
    handler run <id>                    -> namespaces/N/handlerRuns/<id>
"""

from __future__ import annotations

import click


def _full(value: str) -> bool:
    return value.startswith("namespaces/")


def _need(value: str, what: str, example: str) -> str:
    value = value.strip()
    if not value:
        raise click.BadParameter(f"give a {what}, e.g. {example}")
    return value


def job(value: str, namespace: str) -> str:
    value = _need(value, "job", "hello")
    return value if _full(value) else f"namespaces/{namespace}/jobs/{value}"


def schedule(value: str, namespace: str) -> str:
    value = _need(value, "schedule", "hello/every-3s")
    if _full(value):
        return value
    job_id, slash, schedule_id = value.partition("/")
    if not slash or not job_id or not schedule_id or "/" in schedule_id:
        raise click.BadParameter(
            f"{value!r}: name a schedule as JOB/SCHEDULE (e.g. hello/every-3s) or by its "
            "full name namespaces/N/jobs/JOB/schedules/SCHEDULE"
        )
    return f"namespaces/{namespace}/jobs/{job_id}/schedules/{schedule_id}"


def run(value: str, namespace: str) -> str:
    value = _need(value, "run", "a run id")
    if _full(value):
        parts = value.split("/")
        if len(parts) == 6 and parts[2] == "queues" and parts[4] == "workOrders":
            return f"namespaces/{parts[1]}/runs/{parts[5]}"  # a run is named after its order
        return value
    return f"namespaces/{namespace}/runs/{value}"


def queue(value: str, namespace: str) -> str:
    value = _need(value, "queue", "emails")
    return value if _full(value) else f"namespaces/{namespace}/queues/{value}"


def topic(value: str, namespace: str) -> str:
    value = _need(value, "topic", "orders")
    return value if _full(value) else f"namespaces/{namespace}/topics/{value}"


def event(value: str, namespace: str) -> str:
    value = _need(value, "event", "orders/12")
    if _full(value):
        return value
    topic_id, slash, sequence = value.partition("/")
    if not slash or not topic_id or not sequence.isdigit():
        raise click.BadParameter(
            f"{value!r}: name an event as TOPIC/SEQUENCE (e.g. orders/12) or by its full "
            "name namespaces/N/topics/TOPIC/events/SEQUENCE"
        )
    return f"namespaces/{namespace}/topics/{topic_id}/events/{sequence}"


def workflow(value: str, namespace: str) -> str:
    value = _need(value, "workflow", "shop")
    return value if _full(value) else f"namespaces/{namespace}/workflows/{value}"


def workflow_id(value: str) -> str:
    """The id part of a workflow's name (what the list filters take)."""
    return value.rsplit("/", 1)[-1] if _full(value) else value


def session(value: str, namespace: str) -> str:
    value = _need(value, "session", "a session id")
    return value if _full(value) else f"namespaces/{namespace}/sessions/{value}"


def handler_run(value: str, namespace: str) -> str:
    value = _need(value, "handler run", "a handler run id")
    if _full(value):
        return value.removesuffix("/mutation")  # a mutation's name names its run
    return f"namespaces/{namespace}/handlerRuns/{value}"


def namespace_of(name: str) -> str:
    parts = name.split("/")
    return parts[1] if len(parts) > 1 and parts[0] == "namespaces" else ""
