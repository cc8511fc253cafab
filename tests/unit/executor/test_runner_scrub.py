"""Scrubbing and truncation of what runners record (pure)."""

from __future__ import annotations

from conveyor_executor.runners.process import BoundedCapture
from conveyor_executor.runners.scrub import Scrubber, tail, truncate

HEADERS = ("authorization", "cookie")


def test_truncate_adds_a_marker_with_the_dropped_count() -> None:
    assert truncate(b"short", 10) == (b"short", False)
    cut, truncated = truncate(b"x" * 25, 10)
    assert truncated
    assert cut == b"x" * 10 + b"\n[... truncated 15 bytes ...]\n"


def test_secret_values_and_patterns_are_masked() -> None:
    scrubber = Scrubber([r"sk-[A-Za-z0-9]+", r"(?<=password=)\w+"], HEADERS, ["hunter2"])
    text = "token=hunter2 key=sk-ABC123 password=letmein"
    assert scrubber.text(text) == "token=*** key=*** password=***"
    assert scrubber.bytes_(b"\xff hunter2 \xfe") == b"\xff *** \xfe"  # binary survives


def test_headers_show_secret_names_and_mask_credentials() -> None:
    scrubber = Scrubber([], HEADERS, ["s3cr3t"])
    shown = scrubber.headers(
        {
            "Authorization": "Bearer literal",
            "X-Token": "s3cr3t",
            "X-Trace": "abc",
            "X-Echo": "has s3cr3t inside",
        },
        secret_refs={"x-token": "billing-token"},
    )
    assert shown == {
        "Authorization": "***",
        "X-Token": "[secret:billing-token]",
        "X-Trace": "abc",
        "X-Echo": "has *** inside",
    }


def test_body_is_scrubbed_before_it_is_cut() -> None:
    scrubber = Scrubber([], HEADERS, ["SECRETVALUE"])
    body = b"a" * 8 + b"SECRETVALUE" + b"b" * 100
    shown, truncated = scrubber.body(body, 12)
    assert truncated
    assert "SECRET" not in shown  # the straddling secret is not half shown
    assert shown.startswith("aaaaaaaa***")
    assert shown.endswith("[... truncated 107 bytes ...]\n")


def test_bounded_capture_keeps_head_and_tail_only() -> None:
    capture = BoundedCapture(10)
    for _ in range(1000):
        capture.feed(b"0123456789")
    capture.feed(b"THE-END")
    assert capture.total == 10_007
    assert capture.truncated
    assert capture.value() == b"01234\n[... truncated 9997 bytes ...]\nE-END"
    small = BoundedCapture(10)
    small.feed(b"abc")
    small.feed(b"def")
    assert (small.value(), small.truncated) == (b"abcdef", False)


def test_tail_of_zero_is_nothing() -> None:
    assert tail(b"abcdef", 2) == b"ef"
    assert tail(b"abc", 10) == b"abc"
    assert tail(b"abc", 0) == b""
