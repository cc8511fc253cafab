"""Validation of scheduler requests: resource names, job definitions, schedule specs.

Every problem becomes a field violation with the proto field path; all the
violations of a request are reported together.
"""

from __future__ import annotations

import math
from datetime import timedelta

from google.protobuf import duration_pb2

from conveyor.common.v1 import job_pb2, types_pb2
from conveyor.scheduler.v1 import messages_pb2 as pb
from conveyor.scheduler.v1 import service_pb2 as rpc
from conveyor_core.errors import FieldViolation, InvalidArgument
from conveyor_core.validators import (
    duration_problem,
    echo,
    finite_problem,
    header_value_problem,
    name_pattern,
    string_problem,
    url_problem,
)
from conveyor_scheduler.domain import timing
from conveyor_scheduler.domain.model import JobRef, JobRunRequest, ScheduleRef
from conveyor_scheduler.settings import SchedulerSettings

ID = name_pattern(r"[a-z0-9][a-z0-9-]{0,62}")
NAMESPACE_ID = name_pattern(r"[a-z][a-z0-9-]{0,62}")
ENDPOINT_NAME = name_pattern(r"[a-z0-9][a-z0-9_-]{0,62}")
QUEUE_ID = name_pattern(r"[a-z][a-z0-9._-]{0,127}")
#: Workflow and handler names: the SDK's rule, and the executor's columns (63 characters).
WORKFLOW_NAME_RULE = r"[a-z][a-z0-9_-]{0,62}"
WORKFLOW_NAME = name_pattern(WORKFLOW_NAME_RULE)
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
        raise bad(field, f"must be namespaces/{{namespace}}, got {echo(value)}")
    return parts[1]


def parse_job(value: str, field: str, *, allow_any: bool = False) -> JobRef:
    parts = value.split("/")
    if len(parts) != 4 or parts[0] != "namespaces" or parts[2] != "jobs":
        raise bad(field, f"must be namespaces/{{namespace}}/jobs/{{job}}, got {echo(value)}")
    if not NAMESPACE_ID.match(parts[1]):
        raise bad(field, f"namespace {echo(parts[1])} must match [a-z][a-z0-9-]{{0,62}}")
    if not (ID.match(parts[3]) or (allow_any and parts[3] == "-")):
        raise bad(field, f"job {echo(parts[3])} must match [a-z0-9][a-z0-9-]{{0,62}}")
    return JobRef(parts[1], parts[3])


def parse_schedule(value: str, field: str) -> ScheduleRef:
    head, sep, schedule_id = value.rpartition("/schedules/")
    if not sep:
        raise bad(
            field,
            f"must be namespaces/{{ns}}/jobs/{{job}}/schedules/{{schedule}}, got {echo(value)}",
        )
    job = parse_job(head, field)
    check_id(schedule_id, field)
    return ScheduleRef(job.namespace, job.job_id, schedule_id)


def check_id(value: str, field: str) -> str:
    if not ID.match(value):
        raise bad(field, f"{echo(value)} must match [a-z0-9][a-z0-9-]{{0,62}}")
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
    if not 0 <= job.priority <= settings.max_job_priority:
        problems.append(
            FieldViolation(
                f"{field}.priority",
                f"must be in [0, {settings.max_job_priority}] (max_job_priority, "
                f"CONVEYOR_SCHEDULER_MAX_JOB_PRIORITY), got {job.priority}",
            )
        )
    problems += _strings([(job.description, f"{field}.description", None, True)])
    kind = job.target.WhichOneof("kind")
    target = f"{field}.target"
    if kind is None:
        problems.append(FieldViolation(target, "required: http, command or workflow"))
    elif kind == "http":
        problems += _http(job.target.http, settings, f"{target}.http")
    elif kind == "command":
        problems += _command(job.target.command, f"{target}.command")
    elif not job.target.workflow.workflow or not job.target.workflow.handler:
        problems.append(FieldViolation(f"{target}.workflow", "workflow and handler are required"))
    else:
        for name in ("workflow", "handler"):
            value = getattr(job.target.workflow, name)
            if not WORKFLOW_NAME.match(value):
                problems.append(
                    FieldViolation(
                        f"{target}.workflow.{name}",
                        f"{echo(value)} must match {WORKFLOW_NAME_RULE} (the SDK's names)",
                    )
                )
    if job.HasField("retry_policy"):
        problems += _retry(job.retry_policy, f"{field}.retry_policy")
    problems += _durations([(job.start_to_close_timeout, f"{field}.start_to_close_timeout")])
    policy = job.adaptive_policy
    where = f"{field}.adaptive_policy"
    multiplier = finite_problem(policy.multiplier, f"{where}.multiplier")
    if multiplier is not None:
        problems.append(multiplier)
    elif policy.multiplier and policy.multiplier <= 1:
        problems.append(FieldViolation(f"{where}.multiplier", "must be > 1"))
    problems += _durations(
        [(policy.max_interval, f"{where}.max_interval")],
        maximum=timedelta(seconds=settings.max_interval_seconds),
        limit_name="max_interval_seconds, CONVEYOR_SCHEDULER_MAX_INTERVAL_SECONDS",
    )
    if problems:
        raise InvalidArgument(problems)


def _durations(
    durations: list[tuple[duration_pb2.Duration, str]],
    maximum: timedelta | None = None,
    limit_name: str = "",
) -> list[FieldViolation]:
    """Each Duration not negative (seconds or nanos) and, given one, at most `maximum`."""
    found = (
        duration_problem(value, where, maximum=maximum, limit_name=limit_name)
        for value, where in durations
    )
    return [problem for problem in found if problem is not None]


def _strings(strings: list[tuple[str, str, int | None, bool]]) -> list[FieldViolation]:
    """(value, field, max length, multiline): no NUL, no control characters unless multiline."""
    found = (
        string_problem(value, where, limit, multiline=multiline)
        for value, where, limit, multiline in strings
    )
    return [problem for problem in found if problem is not None]


def _not_negative(values: list[tuple[int, str]]) -> list[FieldViolation]:
    return [
        FieldViolation(where, f"must not be negative, got {value}")
        for value, where in values
        if value < 0
    ]


def _command(command: job_pb2.CommandTarget, field: str) -> list[FieldViolation]:
    problems: list[FieldViolation] = []
    if not command.argv or not command.argv[0]:
        problems.append(FieldViolation(f"{field}.argv", "required: the program"))
    problems += _strings(
        [(a, f"{field}.argv[{i}]", None, False) for i, a in enumerate(command.argv)]
    )
    for name, env in (("env", dict(command.env)), ("secret_env", dict(command.secret_env))):
        for key, value in env.items():
            if not key or "=" in key or string_problem(key, "") is not None:
                problems.append(
                    FieldViolation(
                        f"{field}.{name}",
                        f"variable name {echo(key)} must be non-empty, without '=', NUL or "
                        "control characters",
                    )
                )
            elif isinstance(value, str):
                problems += _strings([(value, f"{field}.{name}[{key}]", None, False)])
    problems += _durations([(command.timeout, f"{field}.timeout")])
    for i, check in enumerate(command.checks):
        where = f"{field}.checks[{i}]"
        problems += _strings(
            [(a, f"{where}.argv[{j}]", None, False) for j, a in enumerate(check.argv)]
        )
        problems += _durations([(check.timeout, f"{where}.timeout")])
        problems += _not_negative([(check.level, f"{where}.level")])
    problems += _not_negative(
        [(level, f"{field}.skip_levels[{i}]") for i, level in enumerate(command.skip_levels)]
    )
    problems += _not_negative(
        [
            (command.loop.iterations, f"{field}.loop.iterations"),
            (command.loop.max_iterations, f"{field}.loop.max_iterations"),
        ]
    )
    return problems


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
    problems += _durations(
        [
            (getattr(policy, name), f"{field}.{name}")
            for name in ("initial_interval", "maximum_interval")
        ]
    )
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
    problems += _not_negative([(http.max_parallel, f"{field}.max_parallel")])
    breaker = http.circuit_breaker
    problems += _not_negative(
        [(breaker.failure_threshold, f"{field}.circuit_breaker.failure_threshold")]
    )
    problems += _durations([(breaker.cool_down, f"{field}.circuit_breaker.cool_down")])
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
    url = url_problem(endpoint.url, f"{field}.url")
    if url is not None:
        problems.append(FieldViolation(f"{field}.url", url))
    for header, value in endpoint.headers.items():
        if not HEADER_NAME.match(header):
            problems.append(
                FieldViolation(f"{field}.headers", f"{echo(header, 40)} is not a valid header name")
            )
            continue
        where = f"{field}.headers[{header}]"
        literal = (
            header_value_problem(value.value) if value.WhichOneof("source") == "value" else None
        )
        if literal is not None:
            problems.append(FieldViolation(where, literal))
        if header.lower() in SENSITIVE_HEADERS and value.WhichOneof("source") != "secret":
            problems.append(FieldViolation(where, "must be a secret reference, not a value"))
        if value.WhichOneof("source") == "secret" and not value.secret.name:
            problems.append(FieldViolation(f"{where}.secret.name", "required"))
    problems += _durations([(endpoint.timeout, f"{field}.timeout")])
    if endpoint.HasField("retry_policy"):
        problems += _retry(endpoint.retry_policy, f"{field}.retry_policy")
    for dep in endpoint.depends_on:
        if dep not in names or dep == endpoint.name:
            problems.append(
                FieldViolation(f"{field}.depends_on", f"unknown endpoint {echo(dep, 40)}")
            )
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


def check_schedule(
    schedule: pb.Schedule, settings: SchedulerSettings, field: str, namespace: str | None = None
) -> None:
    """Raise InvalidArgument listing every problem of a schedule (of a job in `namespace`)."""
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
        problems += _event(schedule.on_event, settings, f"{field}.on_event", namespace)
    problems += _durations(
        [(schedule.jitter, f"{field}.jitter")],
        maximum=timedelta(seconds=settings.max_jitter_seconds),
        limit_name="max_jitter_seconds, CONVEYOR_SCHEDULER_MAX_JITTER_SECONDS",
    )
    problems += _durations([(schedule.catch_up_window, f"{field}.catch_up_window")])
    if problems:
        raise InvalidArgument(problems)


def _every(
    every: duration_pb2.Duration, settings: SchedulerSettings, field: str
) -> list[FieldViolation]:
    """An interval between the minimum and the maximum (CONVEYOR_SCHEDULER_MAX_INTERVAL_SECONDS)."""
    shape = duration_problem(every, field)
    if shape is not None:
        return [shape]
    nanos = every.seconds * 1_000_000_000 + every.nanos  # exact: 1 s - 1 ns is under 1 s
    seconds = nanos / 1e9
    if nanos < round(settings.min_interval_seconds * 1e9):
        return [
            FieldViolation(
                field,
                f"must be at least {settings.min_interval_seconds:g}s (the minimum interval, "
                f"CONVEYOR_SCHEDULER_MIN_INTERVAL_SECONDS), got {nanos}ns",
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


def _event(
    spec: pb.EventSpec, settings: SchedulerSettings, field: str, namespace: str | None
) -> list[FieldViolation]:
    problems = []
    parts = spec.topic.split("/")
    if len(parts) != 4 or parts[0] != "namespaces" or parts[2] != "topics" or not parts[3]:
        problems.append(FieldViolation(f"{field}.topic", "must be namespaces/{ns}/topics/{topic}"))
    elif namespace is not None and parts[1] != namespace:
        problems.append(
            FieldViolation(
                f"{field}.topic",
                f"must be a topic of the job's namespace {namespace!r}, got {echo(spec.topic)}",
            )
        )
    problems += _durations(
        [(spec.debounce, f"{field}.debounce")],
        maximum=timedelta(seconds=settings.max_debounce_seconds),
        limit_name="max_debounce_seconds, CONVEYOR_SCHEDULER_MAX_DEBOUNCE_SECONDS",
    )
    return problems
