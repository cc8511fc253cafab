"""The one scrubbing step every log record passes (conveyor_core.logscrub via configure_logging):
bearer tokens, URL passwords, resolved secrets and configured patterns, exceptions included."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor_core import logscrub
from conveyor_core.settings import ConfigurationError, CoreSettings, load
from conveyor_core.telemetry import configure_logging
from conveyor_executor.secrets import SecretSource


@pytest.fixture
def stream(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    """configure_logging (JSON lines) writing to a buffer; undone afterwards."""
    patterns = getattr(request, "param", ())
    root = logging.getLogger()
    level = root.level
    handler = configure_logging(
        CoreSettings(log_format="json", log_level="DEBUG", log_scrub_patterns=patterns)
    )
    buffer = io.StringIO()
    handler.setStream(buffer)  # type: ignore[attr-defined]
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        logscrub.uninstall()


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    """The test's own records: the root handler also gets whatever other libraries log
    meanwhile (aiosqlite's worker thread closing a connection an earlier test left)."""
    records = [json.loads(line) for line in buffer.getvalue().splitlines()]
    return [r for r in records if str(r.get("logger", "")).startswith("scrub.")]


def test_built_in_patterns(stream: io.StringIO) -> None:
    log = logging.getLogger("scrub.test")
    log.info("calling with Authorization: Bearer abc.def-123_456")
    log.info("dsn %s", "postgresql://app:s3cr3t-pw@db:5432/x?sslmode=require")
    log.info("libpq host=db password=s3cr3t-pw2 user=app")
    messages = [line["message"] for line in lines(stream)]
    assert messages == [
        "calling with Authorization: Bearer ***",
        "dsn postgresql://app:***@db:5432/x?sslmode=require",
        "libpq host=db password=*** user=app",
    ]


def test_exceptions_and_extra_fields_are_scrubbed(stream: io.StringIO) -> None:
    log = logging.getLogger("scrub.test")
    try:
        raise RuntimeError("connect redis://:r3d1s-pass@cache:6379/0 failed")
    except RuntimeError:
        log.exception("boom", extra={"url": "https://u:hidden-pass@api.example.com/v1"})
    [line] = lines(stream)
    assert "r3d1s-pass" not in json.dumps(line) and "hidden-pass" not in json.dumps(line)
    assert "RuntimeError: connect redis://:***@cache:6379/0 failed" in str(line["exception"])
    assert line["url"] == "https://u:***@api.example.com/v1"


def test_secrets_the_executor_resolved_are_masked_everywhere(
    stream: io.StringIO, tmp_path: Path
) -> None:
    (tmp_path / "api-key").write_text("sk-live-0123456789\n")
    source = SecretSource(tmp_path, {}, "")
    assert source.get("api-key") == "sk-live-0123456789"
    logging.getLogger("scrub.test").warning("endpoint refused key %s", "sk-live-0123456789")
    assert lines(stream)[0]["message"] == "endpoint refused key ***"


@pytest.mark.parametrize("stream", [(r"card=(\d{12,19})", r"ssn-\d{3}-\d{2}-\d{4}")], indirect=True)
def test_configured_patterns_mask_their_group_or_the_whole_match(stream: io.StringIO) -> None:
    logging.getLogger("scrub.test").info("card=4111111111111111 ok; id ssn-123-45-6789")
    assert lines(stream)[0]["message"] == "card=*** ok; id ***"


def test_a_bad_pattern_names_the_setting() -> None:
    with pytest.raises(ConfigurationError) as raised:
        load(CoreSettings, log_scrub_patterns=("(unclosed",))
    assert "LOG_SCRUB_PATTERNS" in str(raised.value) and "not a regular expression" in str(
        raised.value
    )
