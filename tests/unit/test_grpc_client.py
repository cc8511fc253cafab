"""Client helpers that need no server: retry config and caller-context correlation ids."""

from __future__ import annotations

import contextvars
import json
from typing import Any

from conveyor_core.context import get_correlation_id
from conveyor_core.grpc.client import _UnaryUnary, client_interceptors, retry_service_config
from conveyor_core.grpc.interceptors import split_method


def test_no_idempotent_methods_means_no_retries() -> None:
    assert json.loads(retry_service_config([])) == {"methodConfig": []}


def test_retries_apply_to_named_services_and_methods_only() -> None:
    config = json.loads(
        retry_service_config(["conveyor.queue.v1.QueueService/GetWorkOrder", "pkg.ReadOnly"])
    )

    [method_config] = config["methodConfig"]
    assert method_config["name"] == [
        {"service": "conveyor.queue.v1.QueueService", "method": "GetWorkOrder"},
        {"service": "pkg.ReadOnly"},
    ]
    assert method_config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]


def test_one_interceptor_per_behavior_and_call_shape() -> None:
    # grpc.aio files each interceptor under a single call shape.
    assert len(client_interceptors()) == 2 * 4


def test_calling_sets_a_correlation_id_in_the_callers_context() -> None:
    seen: list[str | None] = []

    def inner(request: Any, **kwargs: Any) -> str:
        seen.append(get_correlation_id())
        return "call"

    def body() -> str | None:
        assert _UnaryUnary(inner)(b"request", timeout=1) == "call"
        return get_correlation_id()

    after = contextvars.Context().run(body)
    assert after is not None and seen == [after]


def test_split_method() -> None:
    assert split_method("/conveyor.queue.v1.QueueService/Lease") == (
        "conveyor.queue.v1.QueueService",
        "Lease",
    )
