"""/memory: what a person sees of their own model, one page at a time (pure: every surface renders the same view).

A view is always for the person alone (an ephemeral answer, their Home tab, their terminal), so it shows all of
their items wherever they were learned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.person import KINDS, Item

__all__ = ["KIND_TITLES", "PAGE_SIZE", "MemoryView", "memory_page"]

PAGE_SIZE = 8  # a Discord select menu takes 25, a Slack message 50 blocks: eight items read at a glance
KIND_TITLES = {"fact": "Facts", "preference": "Preferences", "interest": "Interests"}
PAST = ("superseded", "retired", "merged")


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryView:
    """One page: current items (or, with `history`, those no longer true) grouped by kind, newest first."""

    items: tuple[Item, ...]
    page: int
    pages: int
    total: int
    history: bool = False
    paused: bool = False

    @property
    def first(self) -> int:
        """The number shown beside this page's first item (numbers run on across pages)."""
        return self.page * PAGE_SIZE + 1


def memory_page(
    items: Sequence[Item], *, page: int = 0, history: bool = False, paused: bool = False, size: int = PAGE_SIZE
) -> MemoryView:
    """The page `page` (clamped to those there are) of the person's items."""
    chosen = [i for i in items if (i.ended in PAST if history else i.current)]
    rank = {kind: n for n, kind in enumerate(KINDS)}
    chosen.sort(key=lambda i: (rank.get(i.kind, len(rank)), -(i.seq or 0), -i.learned_at.timestamp()))
    pages = max((len(chosen) + size - 1) // size, 1)
    page = min(max(page, 0), pages - 1)
    shown = tuple(chosen[page * size : (page + 1) * size])
    return MemoryView(items=shown, page=page, pages=pages, total=len(chosen), history=history, paused=paused)
