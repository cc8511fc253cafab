"""The installed `conveyor` binary keeps the platform commands exactly as they were
(conveyor_core.cli behind the operator CLI's entry point) and lists both in --help."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.cli import conveyor


async def test_platform_commands_pass_through_unchanged(tmp_path: Path) -> None:
    token = await conveyor(
        "127.0.0.1:1", "token", "create", "--name", "ops", "--namespace", "sdk", "--role", "viewer"
    )
    assert token.code == 0, token
    entry = json.loads(token.stdout.strip().splitlines()[-1])
    assert entry["name"] == "ops" and entry["roles"] == ["viewer"]

    wrong = await conveyor("127.0.0.1:1", "worker", "no_such_module:app")
    assert wrong.code == 2 and "cannot import 'no_such_module'" in wrong.stderr

    serve_help = await conveyor("127.0.0.1:1", "serve", "--help")
    assert serve_help.code == 0 and "usage: conveyor serve" in serve_help.stdout

    help_text = await conveyor("127.0.0.1:1", "--help")
    assert help_text.code == 0
    for command in ("submit", "jobs", "runs", "dead-letters", "journal", "serve", "migrate"):
        assert f"  {command} " in help_text.stdout, command
    unknown = await conveyor("127.0.0.1:1", "frobnicate")
    assert unknown.code == 2 and "No such command" in unknown.stderr
