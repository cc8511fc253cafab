"""Where secret references (conveyor.common.v1.SecretRef) get their values.

Two sources, first match wins: a directory of files (file name = secret
name, as a Kubernetes Secret volume mounts them) and environment variables
`<prefix><NAME>` (name upper-cased, `-` and `.` as `_`). Values are never logged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

from conveyor_core.logscrub import register_secret
from conveyor_core.validators import name_pattern

log = logging.getLogger(__name__)
_SECRET_NAME = name_pattern(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")


class SecretSource:
    def __init__(self, directory: Path | None, environ: Mapping[str, str], env_prefix: str) -> None:
        self._directory = directory
        self._environ = dict(environ) if env_prefix else {}
        self._prefix = env_prefix

    def get(self, name: str) -> str | None:
        """The secret's value, or None when no source has it (or the name is malformed).

        A value found is registered with conveyor_core.logscrub: no log line shows it."""
        value = self._lookup(name)
        if value:
            register_secret(value)
        return value

    def _lookup(self, name: str) -> str | None:
        if not _SECRET_NAME.match(name):
            return None
        if self._directory is not None:
            path = self._directory / name
            try:
                return path.read_text().rstrip("\n")
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("secret %r unreadable: %s", name, type(exc).__name__)
        if self._prefix:
            key = self._prefix + re.sub(r"[-.]", "_", name).upper()
            return self._environ.get(key)
        return None
