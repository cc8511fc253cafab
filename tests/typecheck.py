"""`make typecheck`: mypy --strict over the first-party packages, import names resolved.

The import names are not the folder names (`conveyor_queue` is `services/queue`, see
[tool.setuptools.package-dir] in pyproject.toml), and the editable install maps them
with an import hook that mypy cannot follow. So this script lays a folder of links,
`.typecheck/<import name> -> <folder>`, which [tool.mypy] mypy_path points at, and runs
mypy on the packages by import name (the list is [tool.mypy] packages) and on
tests/sdk_types (assert_type checks of what a user's editor sees of the SDK). Arguments,
if any, are handed to mypy instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINKS = ROOT / ".typecheck"


def lay_links() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_dir: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    LINKS.mkdir(exist_ok=True)
    for name, folder in package_dir.items():
        link = LINKS / name
        target = os.path.relpath(ROOT / folder, LINKS)
        if link.is_symlink() and os.readlink(link) == target:
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target, target_is_directory=True)


#: Checked with the packages: what a user's type checker sees of the SDK (assert_type).
USAGE = "tests.sdk_types"


def main() -> int:
    lay_links()
    arguments = sys.argv[1:]
    if not arguments:  # the configured packages, and the SDK's usage checks beside them
        config = tomllib.loads((ROOT / "pyproject.toml").read_text())
        packages: list[str] = config["tool"]["mypy"]["packages"]
        arguments = [option for name in (*packages, USAGE) for option in ("-p", name)]
    command = [sys.executable, "-m", "mypy", *arguments]
    return subprocess.call(command, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main())
