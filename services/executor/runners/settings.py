"""Limits and defaults of the runners, built by the executor service from its settings.

Every field has a sane default so tests and embedders can build
`RunnerSettings()` and override only what they exercise. A job definition's own
values (an endpoint's timeout or retry policy, a command's timeout, a breaker
policy) win over these defaults; `max_*` fields cap what a definition may ask.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RunnerSettings:
    """Defaults and limits of HTTP and command runners.

    Attributes:
        http_call_timeout_seconds: Per-call timeout when an endpoint sets none.
        http_max_call_timeout_seconds: Upper bound of any endpoint's timeout.
        http_connect_timeout_seconds: Bound of the TCP/TLS connect phase (within
            the call timeout).
        retry_initial_interval_seconds: Delay before the first retry of a
            transient failure when the endpoint has no retry policy.
        retry_backoff_coefficient: Growth of the delay between retries (>= 1).
        retry_maximum_interval_seconds: Upper bound of one computed delay.
        retry_jitter: Fraction (0..1) of the delay randomly added or removed.
        retry_maximum_attempts: Attempts of one call, including the first.
        retry_after_max_seconds: Cap of a server's Retry-After; a longer wait is
            cut to this (the queue-level retry covers long outages).
        max_parallel: Concurrent calls of PARALLEL and DAG plans when the job
            sets none; also the upper bound of what a job may set.
        breaker_failure_threshold: Consecutive unhealthy answers (network
            errors, timeouts, 408, 5xx) that open an endpoint's breaker.
        breaker_cool_down_seconds: How long an open breaker refuses calls before
            one trial call is let through (half-open).
        breaker_trial_timeout_seconds: How long a half-open trial may stay
            unanswered (its caller crashed) before another caller may try.
        breaker_key_prefix: Prefix of the breaker's coordination keys.
        max_recorded_body_bytes: Request/response bytes kept in an HTTP_CALL
            step; longer bodies are cut with a marker.
        max_response_bytes: Response bytes read from an endpoint at all; the
            rest is discarded (the call still succeeds).
        scrub_patterns: Regular expressions whose matches are replaced by
            "***" in recorded URLs, headers and bodies (on top of secret values,
            Authorization/Cookie-style headers, which are always scrubbed).
        scrub_headers: Header names (case-insensitive) whose values are never
            recorded.
        command_timeout_seconds: Per-iteration timeout when a command sets none.
        command_max_timeout_seconds: Upper bound of any command or check timeout.
        check_timeout_seconds: Per-check timeout when a check sets none.
        kill_grace_seconds: After SIGTERM to a process group, how long before SIGKILL.
        max_output_bytes: Bytes of stdout (and separately stderr) kept per process;
            the rest is counted and dropped while reading, with a marker.
        max_iterations: Upper bound of a loop's iterations, whatever the job says.
        default_max_iterations: Cap of UNTIL_VERIFIED/HYBRID loops when the job
            sets no max_iterations.
        command_path: PATH of the minimal environment of commands.
        feedback_max_bytes: Bytes of a failed check's output (and of the
            process's stderr) passed as feedback to the next iteration; 0: none.
    """

    http_call_timeout_seconds: float = 30.0
    http_max_call_timeout_seconds: float = 600.0
    http_connect_timeout_seconds: float = 10.0
    retry_initial_interval_seconds: float = 1.0
    retry_backoff_coefficient: float = 2.0
    retry_maximum_interval_seconds: float = 60.0
    retry_jitter: float = 0.2
    retry_maximum_attempts: int = 3
    retry_after_max_seconds: float = 60.0
    max_parallel: int = 8
    breaker_failure_threshold: int = 5
    breaker_cool_down_seconds: float = 30.0
    breaker_trial_timeout_seconds: float = 60.0
    breaker_key_prefix: str = "executor-breaker:"
    max_recorded_body_bytes: int = 4096
    max_response_bytes: int = 1024 * 1024
    scrub_patterns: tuple[str, ...] = ()
    scrub_headers: tuple[str, ...] = field(
        default=(
            "authorization",
            "proxy-authorization",
            "cookie",
            "set-cookie",
            "x-api-key",
            "api-key",
        )
    )
    command_timeout_seconds: float = 600.0
    command_max_timeout_seconds: float = 6 * 3600.0
    check_timeout_seconds: float = 300.0
    kill_grace_seconds: float = 5.0
    max_output_bytes: int = 1024 * 1024
    max_iterations: int = 50
    default_max_iterations: int = 5
    command_path: str = "/usr/local/bin:/usr/bin:/bin"
    feedback_max_bytes: int = 16 * 1024

    def __post_init__(self) -> None:
        positive = {
            "http_call_timeout_seconds": self.http_call_timeout_seconds,
            "http_max_call_timeout_seconds": self.http_max_call_timeout_seconds,
            "http_connect_timeout_seconds": self.http_connect_timeout_seconds,
            "retry_initial_interval_seconds": self.retry_initial_interval_seconds,
            "retry_maximum_interval_seconds": self.retry_maximum_interval_seconds,
            "breaker_cool_down_seconds": self.breaker_cool_down_seconds,
            "breaker_trial_timeout_seconds": self.breaker_trial_timeout_seconds,
            "command_timeout_seconds": self.command_timeout_seconds,
            "command_max_timeout_seconds": self.command_max_timeout_seconds,
            "check_timeout_seconds": self.check_timeout_seconds,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"RunnerSettings.{name} must be > 0, got {value!r}")
        at_least_one = {
            "retry_maximum_attempts": self.retry_maximum_attempts,
            "max_parallel": self.max_parallel,
            "breaker_failure_threshold": self.breaker_failure_threshold,
            "max_iterations": self.max_iterations,
            "default_max_iterations": self.default_max_iterations,
            "max_output_bytes": self.max_output_bytes,
            "max_recorded_body_bytes": self.max_recorded_body_bytes,
            "max_response_bytes": self.max_response_bytes,
        }
        for name, value in at_least_one.items():
            if value < 1:
                raise ValueError(f"RunnerSettings.{name} must be >= 1, got {value!r}")
        if self.retry_backoff_coefficient < 1:
            raise ValueError("RunnerSettings.retry_backoff_coefficient must be >= 1")
        if not 0 <= self.retry_jitter <= 1:
            raise ValueError("RunnerSettings.retry_jitter must be within [0, 1]")
        if min(self.kill_grace_seconds, self.retry_after_max_seconds, self.feedback_max_bytes) < 0:
            raise ValueError(
                "RunnerSettings kill grace, Retry-After cap and feedback bytes must be >= 0"
            )
