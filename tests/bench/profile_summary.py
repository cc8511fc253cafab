"""Summarise a py-spy profile recorded with `--profile-format raw` (collapsed stacks).

    python -m tests.bench.profile_summary .bench/profile-drain.txt [--top 40] [--match queue/]

Prints, as a share of all samples: the functions with the most inclusive time
(the function and everything it called), optionally only those whose frame
matches --match, and the functions with the most self time (leaf frames).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_LINE = re.compile(r" \(([^()]*?)(?::\d+)?\)$")


def _function(frame: str) -> str:
    """`name (file)` without the line number, so lines of one function add up."""
    return _LINE.sub(lambda m: f" ({m.group(1)})", frame.strip())


def load(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append(([_function(f) for f in stack.split(";")], int(count)))
    return stacks


def summarise(stacks: list[tuple[list[str], int]], top: int, match: str) -> str:
    total = sum(n for _, n in stacks) or 1
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    for frames, n in stacks:
        for name in set(frames):
            inclusive[name] += n
        leaf[frames[-1]] += n
    lines = [f"{total} samples"]
    lines.append(f"\ninclusive (top {top}{f', matching {match!r}' if match else ''}):")
    shown = [(k, v) for k, v in inclusive.most_common() if match in k][:top]
    lines += [f"  {100 * v / total:5.1f}%  {k}" for k, v in shown]
    lines.append(f"\nself (top {top}):")
    lines += [f"  {100 * v / total:5.1f}%  {k}" for k, v in leaf.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--match", default="", help="only inclusive entries containing this")
    args = parser.parse_args(argv)
    print(summarise(load(args.profile), args.top, args.match))
    return 0


if __name__ == "__main__":
    sys.exit(main())
