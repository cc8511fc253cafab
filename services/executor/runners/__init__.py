"""Runners: execute one attempt of an HTTP-endpoint job or a command job.

`run_http` and `run_command` take the job's target, a RunContext (the
executor's side: abort event, progress, step records, outputs, secrets) and
`RunnerSettings`, and return a RunnerOutcome; failures are classified errors,
never exceptions.
"""

from conveyor_executor.runners.command import run_command
from conveyor_executor.runners.http import SharedHttpClient, new_http_client, run_http
from conveyor_executor.runners.settings import RunnerSettings

__all__ = ["RunnerSettings", "SharedHttpClient", "new_http_client", "run_command", "run_http"]
