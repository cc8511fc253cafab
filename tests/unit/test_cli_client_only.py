"""The operator CLI is a client: in a fresh interpreter where SQLAlchemy, asyncpg, redis,
pydantic-settings and the service packages cannot be imported, `conveyor` still shows its
help, parses commands and reports an unreachable platform with exit code 5; only the
platform commands (serve, run, ...) need the server side, and say so."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.unit.test_sdk_client_only import BLOCKED

SCRIPT = textwrap.dedent(
    f"""
    import contextlib, importlib.abc, io, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {BLOCKED!r}:
                raise ImportError(f"{{name}} is a server dependency", name=name)
            return None

    sys.meta_path.insert(0, Block())
    from conveyor_cli.main import main

    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(["--help"]) == 0
    assert "Operator commands" in out.getvalue()
    with contextlib.redirect_stderr(io.StringIO()):
        assert main(["--address", "127.0.0.1:1", "--timeout", "5", "queues", "list"]) == 5
        assert main(["runs", "list", "--state", "bogus"]) == 2
        assert main(["serve"]) == 2
    print("ok", sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED!r}))
    """
)


def test_the_cli_runs_without_server_dependencies() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok []"
