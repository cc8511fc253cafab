"""Shared validators: names (whole-string, ASCII, no trailing newline), echoed values,
Durations, strings, URLs and enums; examples and Hypothesis properties."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from google.protobuf import duration_pb2
from hypothesis import given
from hypothesis import strategies as st

from conveyor.common.v1 import types_pb2
from conveyor.queue.v1 import messages_pb2 as qm
from conveyor.queue.v1 import service_pb2 as qrpc
from conveyor_core.protoconv import opt_dur
from conveyor_core.validators import (
    NAMESPACE_ID,
    duration_problem,
    echo,
    name_pattern,
    string_problem,
    unknown_enum_values,
    url_problem,
)


@pytest.mark.parametrize("value", ["n\n", "n\r", "\nn", "\uff4e", "N", "", "n" * 64, "n n"])
def test_a_name_that_is_not_exactly_the_rule_is_refused(value: str) -> None:
    assert NAMESPACE_ID.match(value) is None
    assert NAMESPACE_ID.fullmatch(value) is None


@pytest.mark.parametrize("value", ["n", "ns-1", "a" * 63])
def test_a_name_of_the_rule_passes(value: str) -> None:
    assert NAMESPACE_ID.match(value) is not None


def test_alternatives_are_anchored_as_a_whole() -> None:
    pattern = name_pattern(r"a|b")
    assert pattern.match("a") and pattern.match("b")
    assert pattern.match("ab") is None and pattern.match("b\n") is None


# -- property-based (Hypothesis) ---------------------------------------------------------------


@given(st.text())
def test_a_name_passes_only_when_it_is_exactly_the_rule(value: str) -> None:
    ascii_rule = re.fullmatch(r"[a-z][a-z0-9-]{0,62}", value, re.ASCII) is not None
    assert (NAMESPACE_ID.match(value) is not None) is ascii_rule


@given(st.text(max_size=500), st.integers(min_value=10, max_value=200))
def test_an_echo_is_short_and_says_how_long_the_value_was(value: str, limit: int) -> None:
    shown = echo(value, limit)
    assert len(shown) <= len(repr(value[:limit])) + len("... (999 characters)")
    assert (f"({len(value)} characters)" in shown) is (len(value) > limit)


@given(
    st.integers(min_value=-(2**40), max_value=2**40),
    st.integers(min_value=-(10**9) + 1, max_value=10**9 - 1),
)
def test_a_duration_is_refused_exactly_when_negative(seconds: int, nanos: int) -> None:
    duration = duration_pb2.Duration(seconds=seconds, nanos=nanos)
    problem = duration_problem(duration, "d")
    if seconds * nanos < 0:
        assert problem is not None and "sign" in problem.description
    else:
        assert (problem is not None) is (seconds * 10**9 + nanos < 0)


@given(st.integers(min_value=0, max_value=10**9 - 1), st.integers(min_value=-5, max_value=5))
def test_a_duration_keeps_its_sign_below_a_microsecond(nanos: int, seconds: int) -> None:
    message = types_pb2.RetryPolicy(
        initial_interval=duration_pb2.Duration(
            seconds=seconds, nanos=nanos if seconds >= 0 else -nanos
        )
    )
    delta = opt_dur(message, "initial_interval")
    total = seconds * 10**9 + (nanos if seconds >= 0 else -nanos)
    assert delta is not None
    assert (delta < timedelta(0)) is (total < 0) and (delta == timedelta(0)) is (total == 0)


@given(st.text())
def test_a_string_with_nul_or_a_line_break_is_refused(value: str) -> None:
    problem = string_problem(value, "s")
    has_control = any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value)
    assert (problem is not None) is has_control


@given(st.text(max_size=40))
def test_a_url_with_spaces_or_controls_is_refused(suffix: str) -> None:
    problem = url_problem(f"http://127.0.0.1:9/{suffix}", "u")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in suffix):
        assert problem is not None


@pytest.mark.parametrize(
    "url", ["http://[::1/", "http://127.0.0.1:99999/", "http://a b/", "ftp://x/", "http:///p", ""]
)
def test_urls_that_do_not_parse_strictly_are_refused(url: str) -> None:
    assert url_problem(url, "u") is not None


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/x", "https://[::1]:443/a?b=c", "http://h"])
def test_plain_urls_pass(url: str) -> None:
    assert url_problem(url, "u") is None


@given(st.sampled_from([0, 1, 2, 3, 4, 5, 99, -1, 2**31 - 1]))
def test_unknown_enum_values_are_named_with_their_path(number: int) -> None:
    request = qrpc.ListWorkOrdersRequest(order=number)  # type: ignore[arg-type]
    request.states.append(number)  # type: ignore[arg-type]
    problems = unknown_enum_values(request)
    known_order = number in qrpc.ListOrder.values()
    known_state = number in qm.WorkOrderState.values()
    fields = [p.field for p in problems]
    assert ("order" in fields) is not known_order
    assert ("states[0]" in fields) is not known_state
