"""The contracts: generated stubs are fresh, and buf lint (STANDARD) passes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / ".tools" / "node_modules" / ".bin" / "buf"


def test_generated_stubs_match_the_protos() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "protos" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_lint_is_clean() -> None:
    buf = str(BUF) if BUF.exists() else shutil.which("buf")
    if buf is None:
        if os.environ.get("CI"):
            pytest.fail("buf is not installed: `make test` installs it into .tools/")
        pytest.skip("buf not installed (make test installs it into .tools/)")
    result = subprocess.run(
        [buf, "lint"], cwd=ROOT / "protos", capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
