"""The journal's storage contract: a Protocol with Entity+Verb methods over frozen params.

Implementations return domain types only and never raise driver errors.
`SqlJournalStore` (store/journal_sql.py) serves PostgreSQL and SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from conveyor_events.domain.journal import JournalDraft, JournalFilter, JournalPage


@dataclass(frozen=True, slots=True)
class JournalAppendParams:
    """Validated drafts to append; `now` stamps drafts without a time."""

    drafts: Sequence[JournalDraft]
    now: datetime


@dataclass(frozen=True, slots=True)
class JournalReadParams:
    """Records with position > `after_position` matching `filter`, at most `limit`;
    `newest_first`: the latest of them below `before_position` (0: the head), descending."""

    after_position: int
    filter: JournalFilter
    limit: int
    newest_first: bool = False
    before_position: int = 0


class JournalStore(Protocol):
    async def journal_append(self, params: JournalAppendParams) -> list[int]:
        """Append the drafts; return their positions, parallel to `params.drafts`.

        A draft whose id is already stored (or repeated earlier in the same
        call) gets the position it was first given and changes nothing.
        Positions are allocated under the journal head's row lock, inside the
        append transaction, so they are gap-free in commit order.
        """
        ...

    async def journal_read(self, params: JournalReadParams) -> JournalPage:
        """Matching records in position order, and the last position examined.

        `next_position` is the last record's position when the page is full,
        otherwise the journal head at the time of the read: every record at or
        below it was committed, so a reader continuing from it misses nothing.
        Newest first, records come in descending order and `next_position` is the
        last record's position when the page is full, otherwise 0 (nothing older).
        `head_position` is the head at the time of the read, either way.
        """
        ...

    async def journal_head(self) -> int:
        """The highest position handed out (and committed)."""
        ...
