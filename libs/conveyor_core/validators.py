"""Validators shared by every service's validation layer.

Names: `name_pattern(r"[a-z][a-z0-9-]{0,62}")` compiles a pattern anchored at
both ends of the whole string (`\\A...\\Z`, so `.match` and `.fullmatch` agree)
and ASCII-only. An unanchored `^...$` lets a trailing newline through
(`re.match(r"^[a-z]+$", "n\\n")` matches): `namespaces/N\\n/queues/q` would
create an order in namespace "N\\n".
"""

from __future__ import annotations

import re

#: The namespace id rule of every service's resource names.
NAMESPACE_RULE = r"[a-z][a-z0-9-]{0,62}"


def name_pattern(rule: str, flags: int = 0) -> re.Pattern[str]:
    """`rule` matching whole strings only (no trailing newline), ASCII classes."""
    return re.compile(rf"\A(?:{rule})\Z", flags | re.ASCII)


NAMESPACE_ID = name_pattern(NAMESPACE_RULE)
