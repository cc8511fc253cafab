"""Shared name validators: whole-string, ASCII, no trailing newline."""

from __future__ import annotations

import pytest

from conveyor_core.validators import NAMESPACE_ID, name_pattern


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
