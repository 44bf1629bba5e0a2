"""Who may see what: the scope rules every recall goes through."""

from __future__ import annotations

from core.ports import Scope

__all__ = ["recallable_scopes", "scope_of"]


def scope_of(private: bool) -> Scope:
    """A DM or the console is private; a channel or thread that others can read is shared."""
    return "private" if private else "shared"


def recallable_scopes(private: bool) -> tuple[Scope, ...]:
    """Scopes of a person's own memories that may reach a prompt for a reply in this kind of conversation.

    In a DM the person may hear back anything they told Rapport; in a shared channel only what they already
    said where others could read it.
    """
    return ("private", "shared") if private else ("shared",)
