"""Validation of scheduler requests: resource names, job definitions, schedule specs.

Every problem becomes a field violation with the proto field path; all the
violations of a request are reported together.
"""

from __future__ import annotations

import math
from datetime import timedelta
from urllib.parse import urlsplit

from google.protobuf import duration_pb2

from conveyor.common.v1 import job_pb2, types_pb2
from conveyor.scheduler.v1 import messages_pb2 as pb
from conveyor.scheduler.v1 import service_pb2 as rpc
from conveyor_core.errors import FieldViolation, InvalidArgument
from conveyor_core.validators import name_pattern
from conveyor_scheduler.domain import timing
from conveyor_scheduler.domain.model import JobRef, JobRunRequest, ScheduleRef
from conveyor_scheduler.settings import SchedulerSettings

ID = name_pattern(r"[a-z0-9][a-z0-9-]{0,62}")
NAMESPACE_ID = name_pattern(r"[a-z][a-z0-9-]{0,62}")
ENDPOINT_NAME = name_pattern(r"[a-z0-9][a-z0-9_-]{0,62}")
QUEUE_ID = name_pattern(r"[a-z][a-z0-9._-]{0,127}")
REQUEST_ID = name_pattern(r"[A-Za-z0-9._:/-]{1,128}")
HEADER_NAME = name_pattern(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,256}")
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"})
#: Header names whose values must be secret references, never literals.
SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "cookie"})


def bad(field: str, description: str) -> InvalidArgument:
    return InvalidArgument(FieldViolation(field, description))


def parse_namespace(value: str, field: str) -> str:
    parts = value.split("/")
    if len(parts) != 2 or parts[0] != "namespaces" or not NAMESPACE_ID.match(parts[1]):
        raise bad(field, f"must be namespaces/{{namespace}}, got {value!r}")
    return parts[1]


def parse_job(value: str, field: str, *, allow_any: bool = False) -> JobRef:
    parts = value.split("/")
    if len(parts) != 4 or parts[0] != "namespaces" or parts[2] != "jobs":
        raise bad(field, f"must be namespaces/{{namespace}}/jobs/{{job}}, got {value!r}")
    if not NAMESPACE_ID.match(parts[1]):
        raise bad(field, f"namespace {parts[1]!r} must match [a-z][a-z0-9-]{{0,62}}")
    if not (ID.match(parts[3]) or (allow_any and parts[3] == "-")):
        raise bad(field, f"job {parts[3]!r} must match [a-z0-9][a-z0-9-]{{0,62}}")
    return JobRef(parts[1], parts[3])


def parse_schedule(value: str, field: str) -> ScheduleRef:
    head, sep, schedule_id = value.rpartition("/schedules/")
    if not sep:
        raise bad(
            field, f"must be namespaces/{{ns}}/jobs/{{job}}/schedules/{{schedule}}, got {value!r}"
        )
    job = parse_job(head, field)
    check_id(schedule_id, field)
    return ScheduleRef(job.namespace, job.job_id, schedule_id)


def check_id(value: str, field: str) -> str:
    if not ID.match(value):
        raise bad(field, f"{value!r} must match [a-z0-9][a-z0-9-]{{0,62}}")
    return value


def check_run_job(request: rpc.RunJobRequest, settings: SchedulerSettings) -> JobRunRequest:
    """A RunJob request as the engine takes it, or every problem of it."""
    problems: list[FieldViolation] = []
    ref = JobRef("", "")
    try:
        ref = parse_job(request.name, "name")
    except InvalidArgument as exc:
        problems.extend(exc.violations)
    if request.version < 0:
        problems.append(FieldViolation("version", "must not be negative (0: the latest)"))
    for index, endpoint in enumerate(request.endpoints):
        if not ENDPOINT_NAME.match(endpoint):
            problems.append(
                FieldViolation(
                    f"endpoints[{index}]",
                    f"{endpoint[:80]!r} must match [a-z0-9][a-z0-9_-]{{0,62}}",
                )
            )
    if len(set(request.endpoints)) != len(request.endpoints):
        problems.append(FieldViolation("endpoints", "names an endpoint twice"))
    if request.request_id and not REQUEST_ID.match(request.request_id):
        problems.append(
            FieldViolation(
                "request_id",
                f"{request.request_id[:80]!r} must be 1-128 characters of [A-Za-z0-9._:/-]",
            )
        )
    size = request.input.ByteSize()
    if size > settings.max_job_definition_bytes:
        problems.append(
            FieldViolation(
                "input",
                f"{size} bytes; at most {settings.max_job_definition_bytes} "
                "(CONVEYOR_SCHEDULER_MAX_JOB_DEFINITION_BYTES)",
            )
        )
    if len(request.input.content_type) > 256:
        problems.append(FieldViolation("input.content_type", "longer than 256 characters"))
    if problems:
        raise InvalidArgument(problems)
    return JobRunRequest(
        ref,
        request.version,
        tuple(request.endpoints),
        request.input.SerializeToString() if request.HasField("input") else None,
        request.request_id,
    )


def check_job(job: pb.Job, settings: SchedulerSettings, field: str = "job") -> None:
    """Raise InvalidArgument listing every problem of a job definition."""
    problems: list[FieldViolation] = []
    size = job.ByteSize()
    if size > settings.max_job_definition_bytes:
        problems.append(
            FieldViolation(
                field, f"definition is {size} bytes; at most {settings.max_job_definition_bytes}"
            )
        )
    if job.queue and not QUEUE_ID.match(job.queue):
        problems.append(FieldViolation(f"{field}.queue", "must match [a-z][a-z0-9._-]{0,127}"))
    kind = job.target.WhichOneof("kind")
    target = f"{field}.target"
    if kind is None:
        problems.append(FieldViolation(target, "required: http, command or workflow"))
    elif kind == "http":
        problems += _http(job.target.http, settings, f"{target}.http")
    elif kind == "command":
        if not job.target.command.argv or not job.target.command.argv[0]:
            problems.append(FieldViolation(f"{target}.command.argv", "required: the program"))
    elif not job.target.workflow.workflow or not job.target.workflow.handler:
        problems.append(FieldViolation(f"{target}.workflow", "workflow and handler are required"))
    if job.HasField("retry_policy"):
        problems += _retry(job.retry_policy, f"{field}.retry_policy")
    if job.start_to_close_timeout.seconds < 0 or job.start_to_close_timeout.nanos < 0:
        problems.append(FieldViolation(f"{field}.start_to_close_timeout", "must not be negative"))
    policy = job.adaptive_policy
    if policy.multiplier and policy.multiplier <= 1:
        problems.append(FieldViolation(f"{field}.adaptive_policy.multiplier", "must be > 1"))
    if problems:
        raise InvalidArgument(problems)


def _retry(policy: types_pb2.RetryPolicy, field: str) -> list[FieldViolation]:
    problems = []
    coefficient = policy.backoff_coefficient
    if not math.isfinite(coefficient) or (coefficient and coefficient < 1):
        problems.append(
            FieldViolation(
                f"{field}.backoff_coefficient",
                f"must be a finite number >= 1 (0: the default), got {coefficient!r}",
            )
        )
    if not 0 <= policy.jitter <= 1:  # NaN fails both comparisons
        problems.append(
            FieldViolation(f"{field}.jitter", f"must be in [0, 1], got {policy.jitter!r}")
        )
    if policy.maximum_attempts < 0:
        problems.append(FieldViolation(f"{field}.maximum_attempts", "must not be negative"))
    for name in ("initial_interval", "maximum_interval"):
        value = getattr(policy, name)
        if value.seconds < 0 or value.nanos < 0:
            problems.append(FieldViolation(f"{field}.{name}", "must not be negative"))
    return problems


def _http(
    http: job_pb2.HttpTarget, settings: SchedulerSettings, field: str
) -> list[FieldViolation]:
    problems: list[FieldViolation] = []
    endpoints = http.endpoints
    if not endpoints:
        problems.append(FieldViolation(f"{field}.endpoints", "at least one endpoint"))
    if len(endpoints) > settings.max_endpoints_per_job:
        problems.append(
            FieldViolation(
                f"{field}.endpoints",
                f"{len(endpoints)} endpoints; at most {settings.max_endpoints_per_job} per job",
            )
        )
    names = [e.name for e in endpoints]
    for i, endpoint in enumerate(endpoints):
        problems += _endpoint(endpoint, set(names), f"{field}.endpoints[{i}]")
    if len(set(names)) != len(names):
        problems.append(FieldViolation(f"{field}.endpoints", "endpoint names must be unique"))
    elif _has_cycle({e.name: list(e.depends_on) for e in endpoints}):
        problems.append(FieldViolation(f"{field}.endpoints", "depends_on has a cycle"))
    return problems


def _endpoint(endpoint: job_pb2.HttpEndpoint, names: set[str], field: str) -> list[FieldViolation]:
    problems = []
    if not ENDPOINT_NAME.match(endpoint.name):
        problems.append(FieldViolation(f"{field}.name", "must match [a-z0-9][a-z0-9_-]{0,62}"))
    if endpoint.method not in METHODS:
        problems.append(FieldViolation(f"{field}.method", f"must be one of {sorted(METHODS)}"))
    url = urlsplit(endpoint.url)
    if url.scheme not in ("http", "https") or not url.netloc:
        problems.append(FieldViolation(f"{field}.url", "must be an absolute http(s) URL"))
    for header, value in endpoint.headers.items():
        where = f"{field}.headers[{header}]"
        if not HEADER_NAME.match(header):
            problems.append(FieldViolation(where, "not a valid header name"))
        if header.lower() in SENSITIVE_HEADERS and value.WhichOneof("source") != "secret":
            problems.append(FieldViolation(where, "must be a secret reference, not a value"))
        if value.WhichOneof("source") == "secret" and not value.secret.name:
            problems.append(FieldViolation(f"{where}.secret.name", "required"))
    if endpoint.timeout.seconds < 0 or endpoint.timeout.nanos < 0:
        problems.append(FieldViolation(f"{field}.timeout", "must not be negative"))
    for dep in endpoint.depends_on:
        if dep not in names or dep == endpoint.name:
            problems.append(FieldViolation(f"{field}.depends_on", f"unknown endpoint {dep!r}"))
    return problems


def _has_cycle(edges: dict[str, list[str]]) -> bool:
    state: dict[str, int] = {}

    def visit(node: str) -> bool:
        if state.get(node) == 1:
            return True
        if state.get(node) == 2 or node not in edges:
            return False
        state[node] = 1
        if any(visit(dep) for dep in edges[node]):
            return True
        state[node] = 2
        return False

    return any(visit(node) for node in edges)


def check_schedule(schedule: pb.Schedule, settings: SchedulerSettings, field: str) -> None:
    problems: list[FieldViolation] = []
    kind = schedule.WhichOneof("spec")
    if kind is None:
        problems.append(FieldViolation(field, "required: interval, cron, one_off or on_event"))
    elif kind == "interval":
        problems += _every(schedule.interval.every, settings, f"{field}.interval.every")
    elif kind == "cron":
        zone = schedule.cron.time_zone or "UTC"
        zone_problem = timing.check_time_zone(zone)
        if zone_problem:
            problems.append(FieldViolation(f"{field}.cron.time_zone", zone_problem))
        cron_problem = timing.check_cron(schedule.cron.expression, zone)
        if cron_problem:
            problems.append(FieldViolation(f"{field}.cron.expression", cron_problem))
    elif kind == "one_off" and not schedule.one_off.HasField("fire_time"):
        problems.append(FieldViolation(f"{field}.one_off.fire_time", "required"))
    elif kind == "on_event":
        problems += _event(schedule.on_event, settings, f"{field}.on_event")
    jitter = schedule.jitter.ToTimedelta()
    if not timedelta(0) <= jitter <= timedelta(seconds=settings.max_jitter_seconds):
        problems.append(
            FieldViolation(
                f"{field}.jitter", f"must be in [0, {settings.max_jitter_seconds}] seconds"
            )
        )
    if schedule.catch_up_window.ToTimedelta() < timedelta(0):
        problems.append(FieldViolation(f"{field}.catch_up_window", "must not be negative"))
    if problems:
        raise InvalidArgument(problems)


def _every(
    every: duration_pb2.Duration, settings: SchedulerSettings, field: str
) -> list[FieldViolation]:
    """An interval between the minimum and the maximum (CONVEYOR_SCHEDULER_MAX_INTERVAL_SECONDS)."""
    seconds = every.seconds + every.nanos / 1e9
    if seconds < settings.min_interval_seconds:
        return [
            FieldViolation(
                field,
                f"must be at least {settings.min_interval_seconds}s (the minimum interval), "
                f"got {seconds:g}s",
            )
        ]
    if seconds > settings.max_interval_seconds:
        return [
            FieldViolation(
                field,
                f"must be at most {settings.max_interval_seconds:g}s (max_interval_seconds, "
                f"CONVEYOR_SCHEDULER_MAX_INTERVAL_SECONDS), got {seconds:g}s",
            )
        ]
    return []


def _event(spec: pb.EventSpec, settings: SchedulerSettings, field: str) -> list[FieldViolation]:
    problems = []
    parts = spec.topic.split("/")
    if len(parts) != 4 or parts[0] != "namespaces" or parts[2] != "topics" or not parts[3]:
        problems.append(FieldViolation(f"{field}.topic", "must be namespaces/{ns}/topics/{topic}"))
    debounce = spec.debounce.ToTimedelta()
    if not timedelta(0) <= debounce <= timedelta(seconds=settings.max_debounce_seconds):
        problems.append(
            FieldViolation(
                f"{field}.debounce", f"must be in [0, {settings.max_debounce_seconds}] seconds"
            )
        )
    return problems
