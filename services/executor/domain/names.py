"""Resource names of the executor (AIP-122). Raises InvalidArgument with field paths.

* run: `namespaces/{namespace}/runs/{run}`
* output: `namespaces/{namespace}/runs/{run}/outputs/{output}`
* job (filter): `namespaces/{namespace}/jobs/{job}`
"""

from __future__ import annotations

from conveyor_core.errors import FieldViolation, InvalidArgument
from conveyor_core.validators import echo, name_pattern
from conveyor_executor.domain.model import OutputRef, RunRef

NAMESPACE_ID = name_pattern(r"[a-z][a-z0-9-]{0,62}")
RUN_ID = name_pattern(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
OUTPUT_ID = name_pattern(r"[a-f0-9]{32}")
JOB_ID = name_pattern(r"[a-z][a-z0-9._-]{0,127}")


def bad(field: str, description: str) -> InvalidArgument:
    return InvalidArgument(FieldViolation(field, description))


def _parts(value: str, field: str, shape: str, length: int, kinds: dict[int, str]) -> list[str]:
    if not value:
        raise bad(field, f"required: {shape}")
    parts = value.split("/")
    if len(parts) != length or any(parts[i] != kind for i, kind in kinds.items()):
        raise bad(field, f"must be {shape}, got {echo(value)}")
    if not NAMESPACE_ID.match(parts[1]):
        raise bad(field, f"namespace {echo(parts[1])} must match [a-z][a-z0-9-]{{0,62}}")
    return parts


def parse_namespace(value: str, field: str) -> str:
    return _parts(value, field, "namespaces/{namespace}", 2, {0: "namespaces"})[1]


def parse_run(value: str, field: str) -> RunRef:
    shape = "namespaces/{namespace}/runs/{run}"
    parts = _parts(value, field, shape, 4, {0: "namespaces", 2: "runs"})
    if not RUN_ID.match(parts[3]):
        raise bad(field, f"run id {echo(parts[3])} must be letters, digits, _ and - (at most 64)")
    return RunRef(parts[1], parts[3])


def parse_output(value: str, field: str) -> OutputRef:
    shape = "namespaces/{namespace}/runs/{run}/outputs/{output}"
    parts = _parts(value, field, shape, 6, {0: "namespaces", 2: "runs", 4: "outputs"})
    run = parse_run("/".join(parts[:4]), field)
    if not OUTPUT_ID.match(parts[5]):
        raise bad(field, f"output id {echo(parts[5])} is not an output id")
    return OutputRef(run, parts[5])


def parse_job(value: str, field: str) -> tuple[str, str]:
    """`namespaces/{namespace}/jobs/{job}` -> (namespace, job id)."""
    shape = "namespaces/{namespace}/jobs/{job}"
    parts = _parts(value, field, shape, 4, {0: "namespaces", 2: "jobs"})
    if not JOB_ID.match(parts[3]):
        raise bad(field, f"job id {echo(parts[3])} must match [a-z][a-z0-9._-]{{0,127}}")
    return parts[1], parts[3]
