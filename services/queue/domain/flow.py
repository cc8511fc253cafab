"""Flow control decisions: which candidates a lease may take. Pure functions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Candidate:
    """A QUEUED order eligible to lease, already in fair order."""

    seq: int
    concurrency_key: str


def pick(
    candidates: Iterable[Candidate],
    budget: int,
    key_room: Mapping[str, int] | None = None,
) -> list[Candidate]:
    """Take up to `budget` candidates in order, at most `key_room[key]` per key.

    `key_room` is how many more orders each key may have in flight (a key not
    listed has no limit). Candidates arrive in round-robin order (by rank
    within key, then by when the key was last served), so taking them in
    order is the fair choice.
    """
    room = dict(key_room or {})
    chosen: list[Candidate] = []
    for candidate in candidates:
        if len(chosen) >= budget:
            break
        left = room.get(candidate.concurrency_key)
        if left is not None:
            if left <= 0:
                continue
            room[candidate.concurrency_key] = left - 1
        chosen.append(candidate)
    return chosen


def trim_per_key(chosen: list[Candidate], granted: Mapping[str, int]) -> list[Candidate]:
    """Keep, per key, only as many of `chosen` as its rate limit granted."""
    left = dict(granted)
    out = []
    for candidate in chosen:
        if left.get(candidate.concurrency_key, 0) > 0:
            left[candidate.concurrency_key] -= 1
            out.append(candidate)
    return out
